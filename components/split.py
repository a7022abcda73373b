"""split: one stratified, grouped fold that decides, for every later stage, what is evaluation."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split(dataset: Input[Dataset], profile: str, overrides: str, split: Output[Artifact]):
    """Source groups for training and evaluation (crops and copies follow their smear)."""
    import json
    from pathlib import Path

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.datasets import load_datasets
    from leukemia_mtl.data.ingest import DATA_DIR
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.io_utils import atomic_write_json
    from leukemia_mtl.train.data import make_split

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        result = make_split(load_datasets(Path(dataset.path) / DATA_DIR, settings.data, check=False), settings)
        atomic_write_json(Path(split.path), result)
        split.metadata.update({"fold": result["fold"], "eval_groups": len(result["eval_groups"]),
                               "train_groups": len(result["train_groups"])})
