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
    """stage1/2/3 arrays of one fold: flips, rotation 0-180, shift, scale on training images; evaluation as is."""
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.train.data import run_augment_task

    with exit_on_user_error():
        run_augment_task(dataset, cells, split, fold, training_data, metrics, task_settings(profile, overrides))
