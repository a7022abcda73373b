"""Helpers for the objects KFP hands to components, kept free of KFP imports."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol

from leukemia_mtl.io_utils import atomic_write_json


class MetricsArtifact(Protocol):
    path: str

    def log_metric(self, metric: str, value: float) -> None: ...


def log_metrics(artifact: MetricsArtifact, values: Mapping[str, float]) -> None:
    """Log each metric for the KFP UI and also write them as JSON at the artifact's path.

    The file matters: kfp.local's cache treats an artifact whose file is missing as a miss, and
    downstream readers get the numbers without parsing executor output.
    """
    for name, value in values.items():
        artifact.log_metric(name, float(value))
    atomic_write_json(Path(artifact.path), {k: float(v) for k, v in values.items()})
