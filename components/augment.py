"""augment: per-stage training arrays, augmented to balanced classes from training groups only."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def augment(
    dataset: Input[Dataset],
    cells: Input[Dataset],
    split: Input[Artifact],
    fold: int,
    profile: str,
    overrides: str,
    training_data: Output[Dataset],
    metrics: Output[Metrics],
):
    """stage1/2/3 arrays of one fold: flips, rotation 0-180, shift, scale on training images; evaluation as is.

    Args:
        dataset: The ingested smears and single-cell images.
        cells: The white cells segment isolated and cropped from the smears (stage 3's images).
        split: Every fold's training and evaluation groups (split's output).
        fold: The fold whose arrays this task builds.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.train.data import run_augment_task

    with exit_on_user_error():
        run_augment_task(dataset, cells, split, fold, training_data, metrics, task_settings(profile, overrides))
