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
    from leukemia_mtl.evaluate import kfp_classification_view, run_crossval

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        inputs = (stage3_detection, stage3_fab, classical_detection, classical_fab)
        result = run_crossval([a.path for group in inputs for a in group], results.path, evaluation_dirs(baselines.path),
                              metric=settings.evaluate.release_metric, confidence=settings.evaluate.confidence,
                              seed=settings.seed, degenerate_spread=settings.evaluate.degenerate_spread,
                              target_sensitivity=settings.evaluate.target_sensitivity)
        values = {}
        scored_arms = [(task, backbone, arm, scored) for task, by_backbone in result["tasks"].items()
                       for backbone, by_arm in by_backbone.items() for arm, scored in by_arm.items()]
        scored_arms += [(task, "baseline", arm, scored) for task, by_arm in result["baselines"].items() for arm, scored in by_arm.items()]
        for task, backbone, arm, scored in scored_arms:
            for metric in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro"):
                mean = scored["summary"][metric]["mean"]
                if mean is not None:
                    values[f"{task}_{backbone}_{arm}_{metric}"] = round(mean, 4)
            values[f"{task}_{backbone}_{arm}_degenerate"] = float(bool(scored["degenerate"]))
        log_metrics(metrics, values)
        results.metadata.update({"folds": len(result["folds"]), "best": result["best"]})
        for task, arm, view in (("detection", "mtl", detection_mtl), ("detection", "ctl", detection_ctl),
                                ("fab", "mtl", fab_mtl), ("fab", "ctl", fab_ctl)):
            backbone = result["best"][task]
            categories, matrix, curve = kfp_classification_view(result["tasks"][task][backbone][arm])
            log_classification(view, categories, matrix, curve, backbone=backbone, task=task, arm=arm)
