"""tune: the training settings searched on one fold's training part (Optuna's TPE), nested in the folds."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def tune(
    dataset: Input[Dataset],
    cells: Input[Dataset],
    split: Input[Artifact],
    fold: int,
    backbone: str,
    profile: str,
    overrides: str,
    study: Output[Artifact],
    figure: Output[HTML],
    metrics: Output[Metrics],
) -> str:
    """Search tune.trials settings on the fold's training part, each trial scored on its inner validation split
    (never the evaluation fold); returns the overrides the fold's augment and training tasks run with.

    Args:
        dataset: The ingested smears and single-cell images.
        cells: The white cells segment isolated and cropped from the smears.
        split: Every fold's training and evaluation groups (split's output).
        fold: The fold whose training part is searched.
        backbone: The ImageNet backbone the trials train.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.tune import run_tune_task

    with exit_on_user_error():
        return run_tune_task(dataset, cells, split, fold, backbone, profile, overrides, study, figure, metrics)
