"""Trivial baselines on the same folds: what a model gets that has learnt nothing about white cells.

Public ALL smear sets carry colour shortcuts (each class photographed with its own stain batch or
camera): a 6x6x6 RGB histogram with logistic regression reaches 92-98 % on them. A run that does not
show such a baseline beside the method cannot say whether the method looked at cells. And frozen
ImageNet features of the whole smear with a linear model were measured at 95-100 % on public ALL sets:
a method that does not beat them gains nothing from its stages. So every run scores these baselines on
exactly the units the transfer-learning arms are scored on (the smears of each evaluation fold),
fitted on the fold's training smears as they are (no augmentation, no tuning):

- colour: the smear's colour histogram (6 bins per channel, OpenCV), standardised, into a logistic
  regression with balanced class weights (scikit-learn);
- majority: scikit-learn's DummyClassifier: the training classes' frequencies, whatever the image;
- features: the first backbone's globally pooled ImageNet features of the whole smear (resized to
  evaluate.features_size px a side), standardised, into the same logistic regression. Not scored
  without ImageNet weights (model.weights="none"): random features say nothing, and the summary says why.

They are written in the finetune tasks' evaluation layout (classifier.json, summary.json,
predictions.npz), so cross-validation, the t-tests and the report read them as more arms.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from leukemia_mtl.bundles import META_FILE, PREDICTIONS_FILE
from leukemia_mtl.config import Profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.images import read_image
from leukemia_mtl.data.layout import DATA_DIR
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import atomic_write_bytes, atomic_write_json
from leukemia_mtl.stages import COLOUR, FEATURES, MAJORITY, SCORED_TASKS, task_classes, task_names

BASELINE_BACKBONES = {COLOUR: "colour histogram", MAJORITY: "majority class"}  # the features arm: named by its backbone
FEATURES_BATCH = 32  # smears per forward pass of the feature extractor
FEATURES_PROGRESS_MIN = 300  # smears from which the extraction shows a progress bar


class BaselineError(LeukemiaMtlError):
    """A baseline that cannot be fitted: no smear to learn from or to score."""


def colour_histogram(rgb: np.ndarray, bins: int) -> np.ndarray:
    """The share of the image's pixels in each of bins**3 RGB cells."""
    histogram = cv2.calcHist([rgb], [0, 1, 2], None, [bins] * 3, [0, 256] * 3).ravel()
    return histogram / max(float(histogram.sum()), 1.0)


def features_extractor(profile: Profile) -> tuple[object | None, str, str]:
    """(the first backbone's ImageNet feature extractor, its classifier.json "backbone" text, why it is None).

    TensorFlow is imported only here, and only when there are ImageNet weights to extract features with."""
    from leukemia_mtl.models.backbones import build_feature_extractor, get_backbone, resolve_weights

    name, size = profile.model.backbones[0], profile.evaluate.features_size
    backbone = get_backbone(name)
    weights = resolve_weights(profile.model.weights, backbone, profile.storage)
    if not weights.imagenet:
        return None, "", f"model.weights={profile.model.weights!r}: no ImageNet features"
    if size < backbone.min_size:
        raise BaselineError(
            f"setting 'evaluate.features_size' is {size} px; {name}, the first of model.backbones, "
            f"needs at least {backbone.min_size}"
        )
    return (
        build_feature_extractor(name, size, weights),
        f"{name} ImageNet features ({size} px) + logistic regression",
        "",
    )


def smear_features(paths: list[Path], profile: Profile, extractor=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each smear read once: its colour histogram and, given an extractor, its pooled ImageNet features
    (the whole smear resized to evaluate.features_size px a side with INTER_AREA; raw 0-255 RGB in)."""
    bins, size = profile.evaluate.colour_bins, profile.evaluate.features_size
    histograms, pooled, batch = [], [], []

    def flush() -> None:  # a short last batch is padded: one batch shape, one traced graph
        images = np.zeros((FEATURES_BATCH, size, size, 3), np.float32)
        images[: len(batch)] = np.stack(batch)
        pooled.append(np.asarray(extractor.predict_on_batch(images), dtype=np.float64)[: len(batch)])
        batch.clear()

    quiet = extractor is None or len(paths) < FEATURES_PROGRESS_MIN
    for path in tqdm(paths, desc="baseline features", unit="smear", disable=quiet or None):
        rgb = read_image(path, max_pixels=profile.data.max_pixels).rgb
        histograms.append(colour_histogram(rgb, bins))
        if extractor is not None:
            batch.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
            if len(batch) == FEATURES_BATCH:
                flush()
    if extractor is not None and batch:
        flush()
    return np.stack(histograms), (np.concatenate(pooled) if extractor is not None else None)


def _model(arm: str, seed: int):
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if arm == MAJORITY:
        return DummyClassifier(strategy="prior")
    return make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced", random_state=seed)
    )


def _probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(images, n_classes) even when a class had no training image (its column stays 0)."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_.astype(int)] = model.predict_proba(x)
    return out


def run_baselines(ingested: Path | str, split: dict, out_dir: Path | str, profile: Profile) -> dict:
    """Fit and score every baseline for both tasks on every fold; returns a summary (with the arms
    not scored, and why, under "skipped")."""
    datasets = [d for d in load_datasets(Path(ingested) / DATA_DIR, profile.data, check=False) if not d.single_cell]
    if not datasets:
        raise BaselineError("the baselines score smears; the data holds single-cell images only")
    alias = split["group_alias"]
    bins = profile.evaluate.colour_bins
    records = [(d, r) for d in datasets for r in d.records]
    extractor, features_backbone, skipped_because = features_extractor(profile)
    histograms, pooled = smear_features([r.path for _, r in records], profile, extractor)
    described = f"{bins}x{bins}x{bins} RGB histogram"
    arms = {arm: (backbone, described, histograms) for arm, backbone in BASELINE_BACKBONES.items()}
    skipped = {}
    if pooled is None:
        skipped[FEATURES] = skipped_because
    else:
        arms[FEATURES] = (
            features_backbone,
            f"{profile.model.backbones[0]} ImageNet features, global average pooling "
            f"({pooled.shape[1]} values) of the whole smear at {profile.evaluate.features_size} px",
            pooled,
        )
    units = np.array([f"{d.name}/{r.image_id}" for d, r in records])
    groups = np.array([alias.get(f"{d.name}/{r.group}", f"{d.name}/{r.group}") for d, r in records])
    labels = np.array([r.label for _, r in records])
    negative = profile.data.negative_class
    out_dir = Path(out_dir)
    written = []
    for fold in split["folds"]:
        evaluated = np.isin(groups, list(fold["eval_groups"]))
        if evaluated.all() or not evaluated.any():
            raise BaselineError(
                f"fold {fold['id']}: {int(evaluated.sum())} of {len(units)} smears are for evaluation; "
                "the baselines need some of each"
            )
        for task in SCORED_TASKS:
            classes = task_classes(datasets[0].classes, task, negative)
            index = {c: i for i, c in enumerate(classes)}
            y = np.array([index[name] for name in task_names(labels, task, negative).tolist()])
            for arm, (backbone, described, features) in arms.items():
                model = _model(arm, profile.seed).fit(features[~evaluated], y[~evaluated])
                folder = out_dir / f"{task}_{arm}_{fold['id']}"
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_json(
                    folder / META_FILE,
                    {
                        "backbone": backbone,
                        "stage": "baseline",
                        "arm": arm,
                        "task": task,
                        "classes": list(classes),
                        "features": described,
                    },
                )
                atomic_write_json(
                    folder / "summary.json",
                    {
                        "fold_id": fold["id"],
                        "repeat": fold["repeat"],
                        "fold": fold["fold"],
                        "train_source_images": int((~evaluated).sum()),
                    },
                )
                _save(
                    folder / PREDICTIONS_FILE,
                    _probabilities(model, features[evaluated], len(classes)),
                    y[evaluated],
                    units[evaluated],
                    groups[evaluated],
                    atomic_write_bytes,
                )
                written.append(folder.name)
    summary = {
        "arms": list(arms),
        "skipped": skipped,
        "tasks": list(SCORED_TASKS),
        "smears": len(units),
        "colour_bins": bins,
        "features_backbone": features_backbone or None,
        "features_size": profile.evaluate.features_size if pooled is not None else None,
        "folds": [f["id"] for f in split["folds"]],
        "evaluations": written,
    }
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _save(path: Path, probabilities, labels, sources, groups, write) -> None:
    buffer = io.BytesIO()
    empty = np.zeros((0, probabilities.shape[1]))
    np.savez(
        buffer,
        probabilities=probabilities,
        labels=labels,
        sources=sources,
        groups=groups,
        val_probabilities=empty,
        val_labels=np.zeros(0, int),
        val_sources=np.zeros(0, str),
    )
    write(path, buffer.getvalue())


def evaluation_dirs(out_dir: Path | str) -> list[Path]:
    """The evaluation folders run_baselines wrote, in its order."""
    out_dir = Path(out_dir)
    try:
        names = json.loads((out_dir / "summary.json").read_text())["evaluations"]
    except (OSError, ValueError, KeyError) as exc:
        raise BaselineError(f"{out_dir}: not a baselines folder ({type(exc).__name__}: {exc})") from None
    return [out_dir / name for name in names]


def run_baseline_task(dataset, split, predictions, profile: Profile) -> dict:
    """The baseline component's one call: the baselines on the split's folds into KFP's artifact."""
    summary = run_baselines(
        Path(dataset.path), json.loads(Path(split.path).read_text()), Path(predictions.path), profile
    )
    predictions.metadata.update({"arms": summary["arms"], "folds": len(summary["folds"])})
    return summary
