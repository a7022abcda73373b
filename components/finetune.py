"""finetune: one transfer-learning stage. `finetune_from_imagenet` runs stage 1 and the classical
baseline; `finetune_from_previous` runs stages 2 and 3 from the stage before."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finetune_from_imagenet(
    training_data: Input[Dataset],
    backbone: str,
    stage: str,
    task: str,
    profile: str,
    overrides: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[HTML],
    evaluation: Output[Artifact],
):
    """Stage 1 (blood-cell adaptation) or the classical baseline, from the configured weights.

    Args:
        training_data: The fold's augmented arrays of every stage (augment's output).
        backbone: The ImageNet backbone: InceptionV3, Xception or InceptionResNetV2.
        stage: The stage it trains: stage1 or classical.
        task: What it learns: blast (single cells), detection or fab (smears).
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.train.stage import run_finetune_task

    with exit_on_user_error():
        run_finetune_task(stage, task, backbone, training_data.path, None, model, metrics, curves, evaluation,
                          task_settings(profile, overrides))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def finetune_from_previous(
    training_data: Input[Dataset],
    previous: Input[Model],
    backbone: str,
    stage: str,
    task: str,
    profile: str,
    overrides: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[HTML],
    evaluation: Output[Artifact],
):
    """Stage 2 or 3: the previous stage's backbone (and dense layer) carried over, a new head.

    Args:
        training_data: The fold's augmented arrays of every stage (augment's output).
        previous: The model of the stage it continues (stage 1 for stage 2, stage 2 for stage 3).
        backbone: The ImageNet backbone: InceptionV3, Xception or InceptionResNetV2.
        stage: The stage it trains: stage2 or stage3.
        task: What it learns: blast (single cells), detection or fab (smears).
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.train.stage import run_finetune_task

    with exit_on_user_error():
        run_finetune_task(stage, task, backbone, training_data.path, previous.path, model, metrics, curves, evaluation,
                          task_settings(profile, overrides))
