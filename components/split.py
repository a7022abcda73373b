"""split: every fold of a stratified, grouped K-fold; decides, per fold, what is evaluation."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def split(dataset: Input[Dataset], backbones: list, profile: str, overrides: str, split: Output[Artifact]) -> List[dict]:
    """Source groups per fold (crops and copies follow their smear); returns the (fold, backbone)
    pairs the training loop fans out over."""
    import json
    from pathlib import Path

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.datasets import load_datasets
    from leukemia_mtl.data.layout import DATA_DIR
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.io_utils import atomic_write_json
    from leukemia_mtl.train.data import fold_runs, make_folds

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        result = make_folds(load_datasets(Path(dataset.path) / DATA_DIR, settings.data, check=False), settings)
        atomic_write_json(Path(split.path), result)
        split.metadata.update({"folds": len(result["folds"]), "repeats": result["repeats"],
                               "merged_duplicate_groups": len(result["group_alias"])})
        return fold_runs(result, list(backbones))
