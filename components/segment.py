"""segment: Residual U-Net white-cell segmentation and the paper's lymphoblast isolation."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def segment(
    dataset: Input[Dataset],
    roi: Input[Dataset],
    profile: str,
    overrides: str,
    model: Output[Model],
    cells: Output[Dataset],
    metrics: Output[Metrics],
    figure: Output[HTML],
):
    """Train the U-Net, score it against the ROI on held-out smears, isolate and crop every cell."""
    import json
    from pathlib import Path

    from leukemia_mtl.artifacts import log_metrics
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.segment.stage import run_segment_stage

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        summary = run_segment_stage(Path(dataset.path), Path(roi.path), Path(model.path), Path(cells.path), Path(figure.path), settings)
        model.metadata.update({"framework": "keras", "mask_source": summary.mask_source, "patch_size": settings.segment.patch_size,
                               "isolation": summary.isolation, "isolation_reason": summary.isolation_reason})
        cells.metadata.update({"crops": summary.crops})
        log_metrics(metrics, summary.metrics())
