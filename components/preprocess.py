"""preprocess: the paper's ROI step (RGB offsets, monochrome, threshold 98) on every image."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def preprocess(
    dataset: Input[Dataset],
    profile: str,
    overrides: str,
    roi: Output[Dataset],
    metrics: Output[Metrics],
    overlay: Output[HTML],
):
    """ROI masks and ROI-only images plus a manifest; IoU against ground-truth masks when present."""
    import json
    from pathlib import Path

    from leukemia_mtl.artifacts import log_metrics
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.preprocess import run_preprocess_stage

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        summary = run_preprocess_stage(Path(dataset.path), Path(roi.path), Path(overlay.path), settings)
        roi.metadata.update({"images": summary.images})
        log_metrics(metrics, summary.metrics())
