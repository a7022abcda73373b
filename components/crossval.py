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
    of the best backbone (by inner validation) per task and arm.

    Args:
        stage3_detection: Every (fold, backbone)'s held-out predictions of stage 3's detection model.
        stage3_fab: Every (fold, backbone)'s held-out predictions of stage 3's FAB model.
        classical_detection: The same of the classical arm's detection model (ImageNet straight to smears).
        classical_fab: The same of the classical arm's FAB model.
        baselines: The majority-class and colour-histogram predictions on the same folds.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.evaluate import run_crossval_task

    with exit_on_user_error():
        views = {("detection", "mtl"): detection_mtl, ("detection", "ctl"): detection_ctl, ("fab", "mtl"): fab_mtl,
                 ("fab", "ctl"): fab_ctl}
        run_crossval_task([*stage3_detection, *stage3_fab, *classical_detection, *classical_fab], baselines, results, metrics,
                          views, task_settings(profile, overrides))
