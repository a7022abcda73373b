"""Helpers for the objects KFP hands to components, kept free of KFP imports."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

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


class ClassificationArtifact(Protocol):
    path: str
    metadata: dict

    def log_confusion_matrix(self, categories: list[str], matrix: list[list[int]]) -> None: ...

    def log_roc_curve(self, fpr: list[float], tpr: list[float], threshold: list[float]) -> None: ...


def log_classification(
    artifact: ClassificationArtifact,
    categories: list[str],
    matrix: list[list[int]],
    curve: Mapping[str, list[float]],
    **metadata: object,
) -> None:
    """Confusion matrix and ROC curve for the KFP UI, also written as JSON (see `log_metrics`)."""
    artifact.log_confusion_matrix(list(categories), [[int(v) for v in row] for row in matrix])
    if curve.get("fpr"):
        artifact.log_roc_curve(list(curve["fpr"]), list(curve["tpr"]), list(curve["thresholds"]))
    artifact.metadata.update(metadata)
    atomic_write_json(
        Path(artifact.path), {"categories": list(categories), "matrix": matrix, "roc": dict(curve), **metadata}
    )
