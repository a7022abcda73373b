"""baseline: the majority class, a colour histogram and ImageNet features (each with logistic regression), on the
same folds."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def baseline(dataset: Input[Dataset], split: Input[Artifact], profile: str, overrides: str, predictions: Output[Artifact]):
    """What a model gets that has learnt nothing about white cells, and what frozen ImageNet features get without
    the method's stages (not without ImageNet weights): every run shows them beside the method.

    Args:
        dataset: The ingested smears.
        split: The folds the method is scored on; the baselines are scored on the same ones.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.baselines import run_baseline_task
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error

    with exit_on_user_error():
        run_baseline_task(dataset, split, predictions, task_settings(profile, overrides))
