"""The split and the arrays each finetune stage trains on.

How the paper's three stages map onto the data (paper Sec. II-E, Fig. 7-8):
- stage 1 (Eq. 1, softmax): ImageNet features adapted to raw blood images: the single-cell
  images as they come (ALL-IDB2-style crops with red cells and plasma), normal vs blast;
- stage 2 (Eq. 2, sigmoid): individual lymphoblasts: the cells segment isolated on black (from
  training smears only) plus the isolated ALL-IDB2 cells, blast vs normal;
- stage 3 (softmax): multi-cell images: the smears (segment's isolated smears by default, or the
  originals), for detection (normal vs ALL) and for the dataset's classes (normal, L1, L2, L3).
The classical baseline trains ImageNet -> stage 3 directly on the same stage-3 arrays.

One fold of the split, by source group and stratified by class, decides for every stage which images are
for evaluation: crops and augmented copies follow their smear. Augmentation sees training
images only, and the no-leakage check runs in code before anything is written.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from leukemia_mtl.augment import Item, assert_no_leakage, augment_to_balance
from leukemia_mtl.config import Profile
from leukemia_mtl.data.datasets import Dataset, load_datasets
from leukemia_mtl.data.images import read_image
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import atomic_write_json, sha256_file

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
BLAST_CLASSES = ("normal", "blast")


class TrainingDataError(LeukemiaMtlError):
    """The data cannot feed a stage: a class missing from training, nothing to evaluate on."""


def duplicate_groups(datasets: list[Dataset]) -> dict[str, str]:
    """{group: canonical group} for groups holding byte-identical image files, so two copies of
    one image (renamed, or in two datasets) always land on the same side of every split."""
    first_group_of: dict[str, str] = {}
    alias: dict[str, str] = {}
    for dataset in datasets:
        for record in dataset.records:
            digest = sha256_file(record.path)
            group = f"{dataset.name}/{record.group}"
            canonical = first_group_of.setdefault(digest, group)
            if canonical != group:
                alias[group] = alias.get(canonical, canonical)
    # chains (a~b, b~c) resolve to one canonical name
    for group in list(alias):
        while alias[group] in alias:
            alias[group] = alias[alias[group]]
    return alias


def make_folds(datasets: list[Dataset], profile: Profile) -> dict:
    """Every fold of `split.repeats` x stratified, grouped `split.folds`-fold cross-validation.

    Folds are made per dataset over source groups (a smear, or a patient where a dataset names
    one; duplicate files merged) and fold k of the run joins fold k of every dataset.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    cfg = profile.split
    alias = duplicate_groups(datasets)
    n_folds = cfg.folds
    if n_folds < 2 or cfg.repeats < 1:
        raise TrainingDataError(f"split.folds must be at least 2 and split.repeats at least 1, got {n_folds} and {cfg.repeats}")
    all_groups: set[str] = set()
    folds = []
    per_dataset: dict[str, dict] = {}
    eval_by_fold: list[set[str]] = [set() for _ in range(n_folds * cfg.repeats)]
    for dataset in datasets:
        groups = [alias.get(f"{dataset.name}/{r.group}", f"{dataset.name}/{r.group}") for r in dataset.records]
        all_groups.update(groups)
        labels = [r.label for r in dataset.records]
        stratified_by = "class"
        if min(Counter(labels).values()) < n_folds:  # too few of some class: stratify by normal vs ALL
            labels, stratified_by = [str(r.positive) for r in dataset.records], "normal vs ALL"
        if min(Counter(labels).values()) < n_folds or len(set(groups)) < n_folds:
            raise TrainingDataError(
                f"{dataset.root}: {n_folds}-fold cross-validation needs at least {n_folds} images of each class "
                f"(and as many source groups); it has {dict(Counter(r.label for r in dataset.records))} in "
                f"{len(set(groups))} groups. Set split.folds lower."
            )
        per_dataset[dataset.name] = {"images": len(groups), "groups": len(set(groups)), "stratified_by": stratified_by}
        for repeat in range(cfg.repeats):
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=profile.seed + repeat)
            for k, (_, eval_index) in enumerate(splitter.split(np.zeros(len(groups)), labels, groups=groups)):
                eval_by_fold[repeat * n_folds + k].update(groups[i] for i in eval_index)
    for index, eval_groups in enumerate(eval_by_fold):
        train_groups = all_groups - eval_groups
        assert_no_leakage(train_groups, eval_groups)
        repeat, fold = divmod(index, n_folds)
        folds.append({"index": index, "id": f"r{repeat}f{fold}", "repeat": repeat, "fold": fold,
                      "train_groups": sorted(train_groups), "eval_groups": sorted(eval_groups)})
    return {"seed": profile.seed, "folds_per_repeat": n_folds, "repeats": cfg.repeats, "per_dataset": per_dataset,
            "group_alias": alias, "folds": folds}


def fold_runs(split: dict, backbones: list[str]) -> list[dict]:
    """The (fold, backbone) pairs the pipeline trains, one loop iteration each."""
    return [{"fold": f["index"], "backbone": b} for f in split["folds"] for b in backbones]


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square with black (segment's backdrop) and resize: no distortion of cell shapes."""
    height, width = image.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    padded = cv2.copyMakeBorder(image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(padded, (size, size), interpolation=interpolation)


@dataclass
class StageArrays:
    """What one stage trains and validates on; copies keep their source and group."""

    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray  # class names
    groups_train: np.ndarray
    sources_train: np.ndarray
    augmented_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    groups_eval: np.ndarray
    sources_eval: np.ndarray

    def save(self, path: Path) -> Path:
        """np.savez (no pickling) to a temporary sibling, then rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, classes=np.array(self.classes), **{k: v for k, v in self.__dict__.items() if k != "classes"})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: Path) -> "StageArrays":
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
        fields["classes"] = tuple(str(c) for c in fields["classes"])
        return cls(**fields)


def _arrays(items: list[Item], eval_groups: set[str], classes: tuple[str, ...], profile: Profile, salt: int, stage: str) -> StageArrays:
    train = [i for i in items if i.group not in eval_groups]
    evaluation = [i for i in items if i.group in eval_groups]
    missing = [c for c in classes if c not in {i.label for i in train}]
    if missing:
        raise TrainingDataError(f"{stage}: class(es) {missing} have no training image after the split")
    if not evaluation:
        raise TrainingDataError(f"{stage}: no image left for evaluation after the split")
    assert_no_leakage((i.group for i in train), (i.group for i in evaluation))
    augmented = augment_to_balance(train, eval_groups, profile.augment, profile.seed + salt)

    def stack(part: list[Item], attribute: str) -> np.ndarray:
        return np.array([getattr(i, attribute) for i in part])

    return StageArrays(
        classes=classes,
        x_train=np.stack([i.image for i in augmented]), y_train=stack(augmented, "label"),
        groups_train=stack(augmented, "group"), sources_train=stack(augmented, "source_id"),
        augmented_train=stack(augmented, "augmented"),
        x_eval=np.stack([i.image for i in evaluation]), y_eval=stack(evaluation, "label"),
        groups_eval=stack(evaluation, "group"), sources_eval=stack(evaluation, "source_id"),
    )


def prepare_training_data(ingested: Path, cells_dir: Path, split: dict, fold_index: int, out_dir: Path, profile: Profile) -> dict:
    """Write stage1.npz, stage2.npz, stage3.npz of one fold (training part augmented, evaluation part as is)."""
    from leukemia_mtl.data.ingest import DATA_DIR
    from leukemia_mtl.segment.stage import read_crops_manifest

    size = profile.model.input_size
    datasets = load_datasets(Path(ingested) / DATA_DIR, profile.data, check=False)
    if not 0 <= fold_index < len(split["folds"]):
        raise TrainingDataError(f"fold {fold_index} does not exist; the split has {len(split['folds'])} folds")
    fold = split["folds"][fold_index]
    eval_groups = set(fold["eval_groups"])
    alias = split["group_alias"]

    def group_of(name: str) -> str:
        return alias.get(name, name)

    max_pixels = profile.data.max_pixels

    raw_cells = [
        Item(square(read_image(r.path, max_pixels=max_pixels).rgb, size), BLAST_CLASSES[int(r.positive)],
             source_id=f"{d.name}/{r.image_id}", group=group_of(f"{d.name}/{r.group}"))
        for d in datasets if d.single_cell for r in d.records
    ]
    isolated_cells = [
        Item(square(cv2.cvtColor(cv2.imread(str(Path(cells_dir) / row["crop"])), cv2.COLOR_BGR2RGB), size),
             BLAST_CLASSES[int(row["blast"])], source_id=row["crop"], group=group_of(row["group"]))
        for row in read_crops_manifest(cells_dir) if row["blast"] != ""
    ]
    smears = [d for d in datasets if not d.single_cell]
    if not smears:
        raise TrainingDataError("stage 3 needs multi-cell smear images; the data holds single-cell images only")
    fab_classes = smears[0].classes
    smear_items = []
    for dataset in smears:
        for record in dataset.records:
            if profile.train.stage3_images == "isolated":
                image = cv2.cvtColor(cv2.imread(str(Path(cells_dir) / "isolated" / dataset.name / f"{record.image_id}.png")), cv2.COLOR_BGR2RGB)
            else:
                image = read_image(record.path, max_pixels=max_pixels).rgb
            smear_items.append(Item(square(image, size), record.label, source_id=f"{dataset.name}/{record.image_id}",
                                    group=group_of(f"{dataset.name}/{record.group}")))

    stage1_items = raw_cells or isolated_cells  # without ALL-IDB2-style data, stage 1 adapts on isolated cells
    summary = {"fold": fold["fold"], "repeat": fold["repeat"], "fold_id": fold["id"], "fold_index": fold_index, "input_size": size, "stage1_source": "raw single-cell images" if raw_cells else "isolated cells",
               "stage3_images": profile.train.stage3_images, "stages": {}}
    for salt, (stage, items, classes) in enumerate(
        (("stage1", stage1_items, BLAST_CLASSES), ("stage2", isolated_cells, BLAST_CLASSES), ("stage3", smear_items, fab_classes)), start=1
    ):
        arrays = _arrays(items, eval_groups, classes, profile, salt, stage)
        arrays.save(Path(out_dir) / f"{stage}.npz")
        summary["stages"][stage] = {
            "classes": list(classes), "train": int(len(arrays.x_train)), "augmented": int(arrays.augmented_train.sum()),
            "train_source_images": int(len(set(arrays.sources_train.tolist()))),
            "eval": int(len(arrays.x_eval)), "train_counts": dict(Counter(arrays.y_train.tolist())),
        }
    atomic_write_json(Path(out_dir) / "summary.json", summary)
    return summary
