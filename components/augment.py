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
    import json
    from pathlib import Path

    from leukemia_mtl.artifacts import log_metrics
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.train.data import prepare_training_data

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        summary = prepare_training_data(Path(dataset.path), Path(cells.path), json.loads(Path(split.path).read_text()),
                                        fold, Path(training_data.path), settings)
        training_data.metadata.update({"fold": summary["fold_id"], "input_size": summary["input_size"], "stage1_source": summary["stage1_source"]})
        values = {}
        for stage, info in summary["stages"].items():
            values.update({f"{stage}_train": info["train"], f"{stage}_augmented": info["augmented"], f"{stage}_eval": info["eval"]})
        log_metrics(metrics, values)
