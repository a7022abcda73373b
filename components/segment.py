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
    """Train the U-Net, score it against the ROI on held-out smears, isolate and crop every cell.

    Args:
        dataset: The ingested smears and single-cell images.
        roi: The ROI masks it learns from (preprocess's output).
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.segment.stage import run_segment_task

    with exit_on_user_error():
        run_segment_task(dataset, roi, model, cells, metrics, figure, task_settings(profile, overrides))
