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
    """ROI masks and ROI-only images plus a manifest; IoU against ground-truth masks when present.

    Args:
        dataset: The ingested smears and single-cell images.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.preprocess import run_preprocess_task

    with exit_on_user_error():
        run_preprocess_task(dataset, roi, metrics, overlay, task_settings(profile, overrides))
