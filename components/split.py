"""split: every fold of a stratified, grouped K-fold; decides, per fold, what is evaluation."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split(dataset: Input[Dataset], backbones: list, profile: str, overrides: str, split: Output[Artifact]) -> List[dict]:
    """Source groups per fold (crops and copies follow their smear); returns the (fold, backbone)
    pairs the training loop fans out over.

    Args:
        dataset: The ingested smears and single-cell images.
        backbones: The backbones every fold trains.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.train.data import run_split_task

    with exit_on_user_error():
        return run_split_task(dataset, split, list(backbones), task_settings(profile, overrides))
