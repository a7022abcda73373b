"""Acute lymphoblastic leukemia screening by multistage transfer learning (the science).

Importable and testable without Kubeflow: `components/` adapts these functions to KFP.
"""

__version__ = "0.1.0"
