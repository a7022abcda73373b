"""crossval: every fold's held-out predictions -> the paper's metrics, per fold and over folds."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def crossval(
    stage3_detection: Input[List[Artifact]],
    stage3_fab: Input[List[Artifact]],
    classical_detection: Input[List[Artifact]],
    classical_fab: Input[List[Artifact]],
    baselines: Input[Artifact],
    profile: str,
    overrides: str,
    results: Output[Artifact],
    metrics: Output[Metrics],
    detection_mtl: Output[ClassificationMetrics],
    detection_ctl: Output[ClassificationMetrics],
    fab_mtl: Output[ClassificationMetrics],
    fab_ctl: Output[ClassificationMetrics],
):
    """Accuracy, balanced accuracy, precision, recall, F1, confusion matrices, ROC/AUC and the
    operating point, beside the baselines; the KFP UI draws the pooled confusion matrix and ROC curve
    of the best backbone (by inner validation) per task and arm."""
    import json

    from leukemia_mtl.artifacts import log_classification, log_metrics
    from leukemia_mtl.baselines import evaluation_dirs
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.evaluate import run_crossval

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        inputs = (stage3_detection, stage3_fab, classical_detection, classical_fab)
        result = run_crossval([a.path for group in inputs for a in group], results.path, evaluation_dirs(baselines.path),
                              metric=settings.evaluate.release_metric, confidence=settings.evaluate.confidence,
                              seed=settings.seed, degenerate_spread=settings.evaluate.degenerate_spread,
                              target_sensitivity=settings.evaluate.target_sensitivity)
        log_metrics(metrics, result.kfp_metrics())
        results.metadata.update({"folds": len(result.folds), "best": dict(result.best)})
        for task, arm, view in (("detection", "mtl", detection_mtl), ("detection", "ctl", detection_ctl),
                                ("fab", "mtl", fab_mtl), ("fab", "ctl", fab_ctl)):
            best = result.best_arm(task, arm)
            categories, matrix, curve = best.kfp_classification_view()
            log_classification(view, categories, matrix, curve, backbone=best.backbone, task=task, arm=arm)
