"""The split and the arrays each finetune stage trains on.

How the paper's three stages map onto the data (paper Sec. II-E, Fig. 7-8):
- stage 1 (Eq. 1, softmax): ImageNet features adapted to raw blood images: the single-cell
  images as they come (ALL-IDB2-style crops with red cells and plasma), normal vs blast;
- stage 2 (Eq. 2, sigmoid): individual lymphoblasts: the cells segment isolated on black (from
  training smears only) plus the isolated ALL-IDB2 cells, blast vs normal;
- stage 3 (softmax): multi-cell images, for detection (normal vs ALL) and for the dataset's
  classes (normal, L1, L2, L3). By default (`train.stage3_images="cells"`) a smear is seen
  through its isolated white cells, each labelled with the smear's class, and the smear's
  probabilities are the mean over its cells; "isolated" and "original" square the whole smear.
The classical baseline trains ImageNet -> stage 3 directly on the same stage-3 arrays.

One fold of the split, by source group and stratified by class, decides for every stage which images are
for evaluation: crops and augmented copies follow their smear. Inside the training part an inner,
grouped and stratified validation split is held out (`train.validation_fraction`): it drives early
stopping and the release's choice; the evaluation part is only scored. Augmentation sees the
inner training images only, and the no-leakage checks run in code before anything is written.
With `preprocess.stain` set, each stage's stain target is fitted on the same inner training images
and every image of the stage is mapped onto it before augmentation (leukemia_mtl.stain).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from leukemia_mtl.artifacts import log_metrics
from leukemia_mtl.augment import Item, LeakageError, assert_no_leakage, augment_to_balance
from leukemia_mtl.bundles import square  # the classifiers' input, as predict squares it
from leukemia_mtl.config import STAGE3_IMAGES, Profile
from leukemia_mtl.data.datasets import Dataset, load_datasets
from leukemia_mtl.data.images import read_image
from leukemia_mtl.data.layout import DATA_DIR, origin_of
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import atomic_write_json, atomic_writer, sha256_file
from leukemia_mtl.segment.stage import read_crops_manifest
from leukemia_mtl.stain import StainTarget, fit_target, normalise_batch

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


def fold_shortfall(labels: list[str], positives: list[bool], groups: list[str], n_folds: int) -> str | None:
    """Why images with these labels cannot be split into `n_folds` stratified, grouped folds (None
    when they can): the split's own rule, also run on the scanned data before the first task."""
    counts = Counter(labels)
    levels = counts if min(counts.values(), default=0) >= n_folds else Counter(positives)
    if min(levels.values(), default=0) >= n_folds and len(set(groups)) >= n_folds:
        return None
    return (
        f"{n_folds}-fold cross-validation needs at least {n_folds} images of each class "
        f"(and as many source groups); it has {dict(counts)} in {len(set(groups))} groups. Set split.folds lower."
    )


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
        raise TrainingDataError(
            f"split.folds must be at least 2 and split.repeats at least 1, got {n_folds} and {cfg.repeats}"
        )
    all_groups: set[str] = set()
    folds = []
    per_dataset: dict[str, dict] = {}
    eval_by_fold: list[set[str]] = [set() for _ in range(n_folds * cfg.repeats)]
    for dataset in datasets:
        groups = [alias.get(f"{dataset.name}/{r.group}", f"{dataset.name}/{r.group}") for r in dataset.records]
        all_groups.update(groups)
        unfit = fold_shortfall(
            [r.label for r in dataset.records], [r.positive for r in dataset.records], groups, n_folds
        )
        if unfit:
            raise TrainingDataError(f"{origin_of(dataset.root)}: {unfit}")
        labels = [r.label for r in dataset.records]
        stratified_by = "class"
        if min(Counter(labels).values()) < n_folds:  # too few of some class: stratify by normal vs ALL
            labels, stratified_by = [str(r.positive) for r in dataset.records], "normal vs ALL"
        per_dataset[dataset.name] = {"images": len(groups), "groups": len(set(groups)), "stratified_by": stratified_by}
        for repeat in range(cfg.repeats):
            splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=profile.seed + repeat)
            for k, (_, eval_index) in enumerate(splitter.split(np.zeros(len(groups)), labels, groups=groups)):
                eval_by_fold[repeat * n_folds + k].update(groups[i] for i in eval_index)
    for index, eval_groups in enumerate(eval_by_fold):
        train_groups = all_groups - eval_groups
        assert_no_leakage(train_groups, eval_groups)
        repeat, fold = divmod(index, n_folds)
        folds.append(
            {
                "index": index,
                "id": f"r{repeat}f{fold}",
                "repeat": repeat,
                "fold": fold,
                "train_groups": sorted(train_groups),
                "eval_groups": sorted(eval_groups),
            }
        )
    return {
        "seed": profile.seed,
        "folds_per_repeat": n_folds,
        "repeats": cfg.repeats,
        "per_dataset": per_dataset,
        "group_alias": alias,
        "folds": folds,
    }


def fold_runs(split: dict, backbones: list[str]) -> list[dict]:
    """The (fold, backbone) pairs the pipeline trains, one loop iteration each."""
    return [{"fold": f["index"], "backbone": b} for f in split["folds"] for b in backbones]


@dataclass
class StageArrays:
    """What one stage trains, validates and is scored on; copies keep their source and group.

    Items (x_*) are what the network sees; units are what is scored: the images themselves, or for
    stage 3 on cells the smears, whose probabilities are the mean over their cells (an item's
    source is its unit). A unit with no item (a smear where segment found no cell) is still scored.
    """

    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray  # class names
    groups_train: np.ndarray
    sources_train: np.ndarray
    augmented_train: np.ndarray
    x_val: np.ndarray  # the inner validation split of the training part, never augmented
    y_val: np.ndarray
    groups_val: np.ndarray
    sources_val: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    groups_eval: np.ndarray
    sources_eval: np.ndarray
    units_val: np.ndarray
    unit_labels_val: np.ndarray
    unit_groups_val: np.ndarray
    units_eval: np.ndarray
    unit_labels_eval: np.ndarray
    unit_groups_eval: np.ndarray

    def save(self, path: Path) -> Path:
        """np.savez (no pickling) straight into the atomic writer: no second copy of the arrays in memory."""
        with atomic_writer(path) as handle:
            np.savez(
                handle, classes=np.array(self.classes), **{k: v for k, v in self.__dict__.items() if k != "classes"}
            )
        return path

    @classmethod
    def load(cls, path: Path) -> StageArrays:
        with np.load(path, allow_pickle=False) as data:
            fields = {k: data[k] for k in data.files}
        fields["classes"] = tuple(str(c) for c in fields["classes"])
        return cls(**fields)


@dataclass(frozen=True)
class Unit:
    """What a stage scores: one image, or one smear seen through its cells."""

    id: str
    label: str
    group: str


def inner_validation_groups(units: list[Unit], fraction: float, seed: int) -> set[str]:
    """Groups of a fold's training part held out for validation: one fold of a stratified, grouped
    K-fold (K = 1 / fraction) over the training units. A class never loses its last training
    group to validation (its groups stay in training), so tiny data gets a smaller split or none."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = [u.group for u in units]
    labels = [u.label for u in units]
    largest_class = max(Counter(labels).values(), default=0)
    n_splits = min(max(2, round(1 / fraction)), len(set(groups)), largest_class) if fraction > 0 else 0
    if n_splits < 2:
        return set()
    with warnings.catch_warnings():  # "the least populated class has only N members": handled below
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, held_index = next(splitter.split(np.zeros(len(units)), labels, groups=groups))
    held = {groups[i] for i in held_index}
    for label in sorted(set(labels)):
        if not {u.group for u in units if u.label == label} - held:
            held -= {u.group for u in units if u.label == label}
    return held


def _stack_images(part: list[Item], size: int) -> np.ndarray:
    return np.stack([i.image for i in part]) if part else np.zeros((0, size, size, 3), np.uint8)


def _column(values: list[str]) -> np.ndarray:
    return np.array(values, dtype=str)


def _arrays(
    items: list[Item],
    units: list[Unit],
    eval_groups: set[str],
    val_groups: set[str],
    classes: tuple[str, ...],
    profile: Profile,
    seed: int,
    stage: str,
    fold_id: str = "",
    with_evaluation: bool = True,
) -> tuple[StageArrays, dict]:
    if not with_evaluation and any(i.group in eval_groups for i in items):
        raise LeakageError(f"{stage}: an evaluation image was read for a search, which must see the training part only")
    train = [i for i in items if i.group not in eval_groups]
    evaluation = [i for i in items if i.group in eval_groups]
    train_units = [u for u in units if u.group not in eval_groups]
    eval_units = [u for u in units if u.group in eval_groups]
    missing = [c for c in classes if c not in {i.label for i in train}]
    if missing:
        raise TrainingDataError(f"{stage}: class(es) {missing} have no training image after the split")
    if with_evaluation and not eval_units:
        raise TrainingDataError(f"{stage}: no image left for evaluation after the split")
    if not with_evaluation:
        eval_units = []  # a search's trial: nothing of the evaluation part, not even its names, is scored
    assert_no_leakage((i.group for i in train), (i.group for i in evaluation))
    fit = [i for i in train if i.group not in val_groups]
    validation = [i for i in train if i.group in val_groups]
    val_units = [u for u in train_units if u.group in val_groups]
    if [c for c in classes if c not in {i.label for i in fit}]:  # every image of a class is in held-out groups
        log.warning(
            "%s: a class would have no training image without the inner validation groups; this stage "
            "trains on them and validates on nothing",
            stage,
        )
        fit, validation, val_units, val_groups = train, [], [], set()
    assert_no_leakage((i.group for i in fit), val_groups | eval_groups)
    # the stain target is learnt from the images the model is fitted on, as augmentation: the inner validation
    # split stands in for unseen smears (early stopping, the release's choice) and the evaluation part only scores
    target = fit_target([i.image for i in fit], profile.preprocess.stain, seed, where=f"{stage}, fold {fold_id}")
    fit, validation, evaluation, unchanged = _normalised((fit, validation, evaluation), target, stage)
    augmented = augment_to_balance(fit, eval_groups | val_groups, profile.augment, seed)
    size = profile.model.input_size

    def column(part: list, attribute: str) -> np.ndarray:
        return _column([getattr(i, attribute) for i in part])

    arrays = StageArrays(
        classes=classes,
        x_train=_stack_images(augmented, size),
        y_train=column(augmented, "label"),
        groups_train=column(augmented, "group"),
        sources_train=column(augmented, "source_id"),
        augmented_train=np.array([i.augmented for i in augmented], dtype=bool),
        x_val=_stack_images(validation, size),
        y_val=column(validation, "label"),
        groups_val=column(validation, "group"),
        sources_val=column(validation, "source_id"),
        x_eval=_stack_images(evaluation, size),
        y_eval=column(evaluation, "label"),
        groups_eval=column(evaluation, "group"),
        sources_eval=column(evaluation, "source_id"),
        units_val=column(val_units, "id"),
        unit_labels_val=column(val_units, "label"),
        unit_groups_val=column(val_units, "group"),
        units_eval=column(eval_units, "id"),
        unit_labels_eval=column(eval_units, "label"),
        unit_groups_eval=column(eval_units, "group"),
    )
    scored = {i.source_id for i in evaluation}
    summary = {
        "classes": list(classes),
        "train": int(len(arrays.x_train)),
        "augmented": int(arrays.augmented_train.sum()),
        "train_source_images": int(len(set(arrays.sources_train.tolist()))),
        "validation": len(validation),
        "validation_units": len(val_units),
        "validation_groups": len(val_groups),
        "eval": len(evaluation),
        "eval_units": len(eval_units),
        "eval_units_without_items": sorted(u.id for u in eval_units if u.id not in scored),
        "train_counts": dict(Counter(arrays.y_train.tolist())),
        # what this stage's images were normalised onto (None: as they are), and the images too pale or dark to map
        "stain": target.to_dict() if target else None,
        "stain_unchanged": unchanged,
    }
    return arrays, summary


def _normalised(parts: tuple[list[Item], ...], target: StainTarget | None, stage: str) -> tuple:
    """Each part's items mapped onto `target` (before augmentation, so copies inherit it), and per part how many
    were left as they are; those are logged, never skipped silently."""
    if target is None:
        return (*parts, {"fit": 0, "validation": 0, "eval": 0})
    mapped, unchanged = [], {}
    for name, part in zip(("fit", "validation", "eval"), parts):
        images, unchanged[name] = normalise_batch(_stack_images(part, 1), target)
        mapped.append([dataclasses.replace(item, image=image) for item, image in zip(part, images)])
    if any(unchanged.values()):
        log.warning(
            "%s: %s image(s) have too little stain to normalise (%s) and stay as they are",
            stage,
            sum(unchanged.values()),
            ", ".join(f"{k} {v}" for k, v in unchanged.items() if v),
        )
    return (*mapped, unchanged)


def _units_of(items: list[Item]) -> list[Unit]:
    """Each image its own unit."""
    return [Unit(i.source_id, i.label, i.group) for i in items]


def prepare_training_data(
    ingested: Path,
    cells_dir: Path,
    split: dict,
    fold_index: int,
    out_dir: Path,
    profile: Profile,
    *,
    evaluation: bool = True,
) -> dict:
    """Write stage1.npz, stage2.npz, stage3.npz of one fold (training part augmented, evaluation part as is).

    `evaluation=False` (a hyperparameter search's trial): the fold's training part only. No image, crop or isolated
    smear of an evaluation group is opened, and the arrays' evaluation part is empty; the inner validation split
    is the same as with it, so a trial is scored where the fold's training stops early."""
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

    def wanted(group: str) -> bool:
        """Whether an image of this group is read at all: without the evaluation part, only training groups."""
        return evaluation or group not in eval_groups

    raw_cells = [
        Item(
            square(read_image(r.path, max_pixels=max_pixels).rgb, size),
            BLAST_CLASSES[int(r.positive)],
            source_id=f"{d.name}/{r.image_id}",
            group=group_of(f"{d.name}/{r.group}"),
        )
        for d in datasets
        if d.single_cell
        for r in d.records
        if wanted(group_of(f"{d.name}/{r.group}"))
    ]
    crops = [row for row in read_crops_manifest(cells_dir) if wanted(group_of(row["group"]))]
    isolated_cells = [
        Item(
            square(cv2.cvtColor(cv2.imread(str(Path(cells_dir) / row["crop"])), cv2.COLOR_BGR2RGB), size),
            BLAST_CLASSES[int(row["blast"])],
            source_id=row["crop"],
            group=group_of(row["group"]),
        )
        for row in crops
        if row["blast"] != ""
    ]
    smears = [d for d in datasets if not d.single_cell]
    if not smears:
        raise TrainingDataError("stage 3 needs multi-cell smear images; the data holds single-cell images only")
    mode = profile.train.stage3_images
    if mode not in STAGE3_IMAGES:
        raise TrainingDataError(f"train.stage3_images must be one of {', '.join(STAGE3_IMAGES)}, got {mode!r}")
    fab_classes = smears[0].classes
    smear_units = [
        Unit(f"{d.name}/{r.image_id}", r.label, group_of(f"{d.name}/{r.group}")) for d in smears for r in d.records
    ]
    if mode == "cells":  # every isolated white cell of a smear, labelled with the smear's class
        names = {d.name for d in smears}
        smear_items = [
            Item(
                square(cv2.cvtColor(cv2.imread(str(Path(cells_dir) / row["crop"])), cv2.COLOR_BGR2RGB), size),
                row["label"],
                source_id=f"{row['dataset']}/{row['source_image']}",
                group=group_of(row["group"]),
            )
            for row in crops
            if row["dataset"] in names
        ]
    else:
        smear_items = []
        with_cells = {(row["dataset"], row["source_image"]) for row in crops}  # as predict: a smear needs a cell
        for dataset in smears:
            for record in dataset.records:
                if not wanted(group_of(f"{dataset.name}/{record.group}")):
                    continue
                if mode == "isolated":
                    if (dataset.name, record.image_id) not in with_cells:  # segment found no cell: its isolated image
                        continue  # would be black, carrying the class, not the cells; no item (scored as an error)
                    image = cv2.cvtColor(
                        cv2.imread(str(Path(cells_dir) / "isolated" / dataset.name / f"{record.image_id}.png")),
                        cv2.COLOR_BGR2RGB,
                    )
                else:
                    image = read_image(record.path, max_pixels=max_pixels).rgb
                smear_items.append(
                    Item(
                        square(image, size),
                        record.label,
                        source_id=f"{dataset.name}/{record.image_id}",
                        group=group_of(f"{dataset.name}/{record.group}"),
                    )
                )

    stage1_items = raw_cells or isolated_cells  # without ALL-IDB2-style data, stage 1 adapts on isolated cells
    summary = {
        "fold": fold["fold"],
        "repeat": fold["repeat"],
        "fold_id": fold["id"],
        "fold_index": fold_index,
        "input_size": size,
        "stage1_source": "raw single-cell images" if raw_cells else "isolated cells",
        "stage3_images": mode,
        "validation_fraction": profile.train.validation_fraction,
        "stages": {},
        "evaluation_part": evaluation,
    }
    # One inner validation split per fold, over the source groups (smears; single-cell images), that
    # every stage holds out: stage 2 must not train on the cells of the smears stage 3 validates on.
    seed = profile.seed * 1000 + fold_index * 10
    fraction = profile.train.validation_fraction
    val_groups = inner_validation_groups([u for u in smear_units if u.group not in eval_groups], fraction, seed)
    val_groups |= inner_validation_groups(
        [u for u in _units_of(raw_cells) if u.group not in eval_groups], fraction, seed + 1
    )
    summary["validation_groups"] = sorted(val_groups)
    plan = (
        ("stage1", stage1_items, _units_of(stage1_items), BLAST_CLASSES),
        ("stage2", isolated_cells, _units_of(isolated_cells), BLAST_CLASSES),
        ("stage3", smear_items, smear_units, fab_classes),
    )
    for salt, (stage, items, units, classes) in enumerate(plan, start=1):
        arrays, summary["stages"][stage] = _arrays(
            items,
            units=units,
            eval_groups=eval_groups,
            val_groups=val_groups,
            classes=classes,
            profile=profile,
            seed=seed + salt + 1,
            stage=stage,
            fold_id=fold["id"],
            with_evaluation=evaluation,
        )
        arrays.save(Path(out_dir) / f"{stage}.npz")
    atomic_write_json(Path(out_dir) / "summary.json", summary)
    return summary


def run_split_task(dataset, split, backbones: list[str], profile: Profile) -> list[dict]:
    """The split component's one call: every fold into KFP's split artifact; returns the (fold, backbone)
    pairs the training loop fans out over."""
    result = make_folds(load_datasets(Path(dataset.path) / DATA_DIR, profile.data, check=False), profile)
    atomic_write_json(Path(split.path), result)
    split.metadata.update(
        {
            "folds": len(result["folds"]),
            "repeats": result["repeats"],
            "merged_duplicate_groups": len(result["group_alias"]),
        }
    )
    return fold_runs(result, list(backbones))


def run_augment_task(dataset, cells, split, fold: int, training_data, metrics, profile: Profile) -> dict:
    """The augment component's one call: one fold's stage 1/2/3 arrays into KFP's artifact, with their counts."""
    summary = prepare_training_data(
        Path(dataset.path),
        Path(cells.path),
        json.loads(Path(split.path).read_text()),
        fold,
        Path(training_data.path),
        profile,
    )
    training_data.metadata.update(
        {"fold": summary["fold_id"], "input_size": summary["input_size"], "stage1_source": summary["stage1_source"]}
    )
    values = {}
    for stage, info in summary["stages"].items():
        values.update(
            {f"{stage}_train": info["train"], f"{stage}_augmented": info["augmented"], f"{stage}_eval": info["eval"]}
        )
    log_metrics(metrics, values)
    return summary
