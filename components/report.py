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
):
    """Data, preprocessing and segmentation figures, training curves, Tables II-V, ROC and the release."""
    import json
    from pathlib import Path

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.run_report import build_report, load_evaluations
    from leukemia_mtl.stages import TRAINING_STAGES

    def read(artifact) -> dict:
        return json.loads(Path(artifact.path).read_text())

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        inputs = dict(stage1=stage1, stage2=stage2, stage3_detection=stage3_detection, stage3_fab=stage3_fab,
                      classical_detection=classical_detection, classical_fab=classical_fab)
        evaluations = load_evaluations({stage.display: [a.path for a in inputs[stage.key]] for stage in TRAINING_STAGES})
        result = build_report(
            profile=settings, data_summary=read(data_summary), split=read(split), roi_metrics=read(roi_metrics),
            roi_html=Path(roi_overlay.path).read_text(), segment_metrics=read(segment_metrics),
            segment_html=Path(segmentation.path).read_text(), evaluations=evaluations, crossval=read(crossval),
            ttest=read(ttest), release=read(release_manifest), html_path=Path(html.path), summary_path=Path(summary.path),
        )
        summary.metadata.update({"schema": result["schema"], "imagenet": result["imagenet"]})
