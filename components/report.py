"""report: one self-contained HTML report of the run, and summary.json with its numbers."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def report(
    data_summary: Input[Artifact],
    split: Input[Artifact],
    roi_metrics: Input[Metrics],
    roi_overlay: Input[HTML],
    segment_metrics: Input[Metrics],
    segmentation: Input[HTML],
    stage1: Input[List[Artifact]],
    stage2: Input[List[Artifact]],
    stage3_detection: Input[List[Artifact]],
    stage3_fab: Input[List[Artifact]],
    classical_detection: Input[List[Artifact]],
    classical_fab: Input[List[Artifact]],
    crossval: Input[Artifact],
    ttest: Input[Artifact],
    release_manifest: Input[Artifact],
    profile: str,
    overrides: str,
    html: Output[HTML],
    summary: Output[Artifact],
    tuning: Input[List[Artifact]] = None,
):
    """Data, preprocessing and segmentation figures, training curves, Tables II-V, ROC and the release.

    Args:
        data_summary: What ingest read.
        split: The folds.
        roi_metrics: The ROI step's numbers.
        roi_overlay: The ROI step's figure.
        segment_metrics: The U-Net's held-out scores.
        segmentation: The segmentation figure.
        stage1: Every (fold, backbone)'s evaluation of stage 1.
        stage2: The same of stage 2.
        stage3_detection: The same of stage 3 detection.
        stage3_fab: The same of stage 3 FAB.
        classical_detection: The same of the classical arm's detection.
        classical_fab: The same of the classical arm's FAB.
        crossval: The cross-validated results.
        ttest: The significance tests.
        release_manifest: What release bundled and where it published it.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
        tuning: Every (fold, backbone)'s hyperparameter search, where the run searched (tune.trials above 0).
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.run_report import run_report_task

    with exit_on_user_error():
        evaluations = dict(stage1=stage1, stage2=stage2, stage3_detection=stage3_detection, stage3_fab=stage3_fab,
                           classical_detection=classical_detection, classical_fab=classical_fab)
        run_report_task(data_summary=data_summary, split=split, roi_metrics=roi_metrics, roi_overlay=roi_overlay,
                        segment_metrics=segment_metrics, segmentation=segmentation, evaluations=evaluations, crossval=crossval,
                        ttest=ttest, release_manifest=release_manifest, html=html, summary=summary,
                        profile=task_settings(profile, overrides), tuning=tuning)
