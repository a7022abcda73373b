"""Does fine-tuning from ImageNet learn real white cells: far beyond a random start, not from noise, as well as colour?

Real images: 40 of each of 4 classes (CLASSES) of the pbc-sample copy of the PBC dataset, Acevedo A., Merino A.,
Alférez S., Molina Á., Boldú L., Rodellar J., "A dataset of microscopic peripheral blood cell images for
development of automatic recognition systems", Data in Brief 30 (2020) 105474, doi:10.1016/j.dib.2020.105474;
data on Mendeley Data, doi:10.17632/snkd93bnjr.1, licence CC BY 4.0 (attribution in the sample's README.md).
It lies beside the clone in ../shared/data/pbc-sample (or under $LEUKEMIA_MTL_SHARED_DATA); without it this test
fails, it never skips.

One stratified split (half for training, half for evaluation); on the training part MobileNetV2 is fine-tuned
with the project's fit_stage at 96 px (ImageNet weights, the top half of the backbone trainable, 12 epochs, no
inner validation split: the last weights are kept; the evaluation half only scores). On the same evaluation half:
(ii) the same fine-tuning from random initialisation must stay far below it; (iii) the same fine-tuning on
permuted training labels must stay near chance (1/4); and the fine-tuning from ImageNet must reach an absolute
floor that a random start never came near. (i) The project's colour baseline (6x6x6 RGB histogram of the same
crop, StandardScaler + balanced logistic regression) is scored too, but at this scale it is not beaten: over seeds
0-4 the colour histogram scored 0.80-0.86 and the fine-tuning 0.75-0.84 (the 8-class bench tells the same: colour
0.897, fine-tuning 0.890), so the test asserts only that fine-tuning is not far below it (non-inferiority), not
that it clearly beats it.
The classes are those the colour histogram recalls worst (ig, neutrophil, basophil) and lymphocyte, which
fine-tuning recalls better than colour (bench/pbc_cells.py's out-of-fold recall per class). Measured values over
seeds and the margins are in BENCHMARKS.md, "Real single cells: pbc-sample". If the ImageNet weights were silently
replaced by random ones (a random start scored 0.29-0.39), the labels decoupled from the images, or fine-tuning broke,
this file fails.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukemia_mtl.baselines import colour_histogram
from leukemia_mtl.config import TrainConfig, get_profile
from leukemia_mtl.data.annotated import shared_data
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.images import read_image

pytestmark = pytest.mark.slow  # fine-tunes on real cells: minutes
CLASSES = ("basophil", "ig", "lymphocyte", "neutrophil")
PER_CLASS = 40
EVAL_FRACTION = 0.5
SIZE = 96
CROP = 0.7  # the centred 70 % of the side, as bench/pbc_cells.py: the cell and its neighbourhood
SEED = 0
BACKBONE = "MobileNetV2"
CFG = dataclasses.replace(
    TrainConfig(),
    warmup_epochs=0,
    epochs=12,
    batch_size=16,
    learning_rate=1e-3,
    decay_steps=50,
    decay_rate=0.8,
    frozen_fraction=0.5,
    early_stopping_patience=0,
    batchnorm_calibration_images=256,
    inference_batch_size=64,
)
# thresholds, with margin from seeds 0-4 (split and training seed together; 2 cores, shared):
# imagenet 0.750-0.838, random 0.287-0.388, permuted 0.138-0.263, colour 0.800-0.863,
# imagenet - random 0.388-0.513, imagenet - colour -0.088..+0.013
MIN_IMAGENET = 0.65
MIN_OVER_RANDOM = 0.25
MAX_PERMUTED = 0.45
MAX_BELOW_COLOUR = 0.20


def pbc_sample() -> Path:
    return shared_data("pbc-sample")


def load_cells(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images at SIZE px, colour histograms of the same crops, labels 0..3): PER_CLASS images of each of CLASSES,
    the first in file-name order."""
    if not root.is_dir():
        pytest.fail(
            f"real-cell data not found at {root}: this test needs the pbc-sample copy of the PBC dataset "
            "(../shared/data/pbc-sample beside the clone, or set LEUKEMIA_MTL_SHARED_DATA to the folder "
            "holding pbc-sample)",
            pytrace=False,
        )
    profile = get_profile("workstation", {"data.negative_class": "neutrophil"})  # every PBC class is a normal cell
    records = sorted(
        (r for d in load_datasets(root, profile.data, check=False, progress=False) for r in d.records),
        key=lambda r: str(r.path),
    )
    chosen = [r for c in CLASSES for r in [r for r in records if r.label == c][:PER_CLASS]]
    counts = {c: sum(r.label == c for r in chosen) for c in CLASSES}
    assert all(n == PER_CLASS for n in counts.values()), f"{root}: expected {PER_CLASS} images per class, got {counts}"
    images, histograms = [], []
    for record in chosen:
        rgb = read_image(record.path, max_pixels=profile.data.max_pixels).rgb
        h, w = rgb.shape[:2]
        side = round(min(h, w) * CROP)
        crop = np.ascontiguousarray(
            rgb[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        )
        histograms.append(colour_histogram(crop, 6))
        images.append(cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    y = np.array([CLASSES.index(r.label) for r in chosen], np.int32)
    return np.stack(images), np.stack(histograms), y


def colour_accuracy(histograms, y, train, test, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced", random_state=seed)
    )
    return float(accuracy_score(y[test], model.fit(histograms[train], y[train]).predict(histograms[test])))


def finetuned_accuracy(x, y, train, test, weights: str, seed: int, permute: bool = False) -> float:
    import keras
    from sklearn.metrics import accuracy_score

    from leukemia_mtl.bundles import class_probabilities, model_outputs
    from leukemia_mtl.models.backbones import build_classifier, get_backbone, resolve_weights
    from leukemia_mtl.train.finetune import balanced_sample_weights, fit_stage

    y_train = np.random.default_rng(seed).permutation(y[train]) if permute else y[train]
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    resolved = resolve_weights(weights, get_backbone(BACKBONE))
    assert resolved.imagenet == (weights == "imagenet")
    model = build_classifier(BACKBONE, SIZE, len(CLASSES), resolved, dropout=0.2, head="softmax")
    fit_stage(
        model,
        x_train=x[train],
        y_train=y_train,
        x_val=None,
        y_val=None,
        cfg=CFG,
        head="softmax",
        seed=seed,
        sample_weight=balanced_sample_weights(y_train, len(CLASSES))[0],
        random_backbone=not resolved.imagenet,
        verbose=0,
    )
    predicted = class_probabilities(model_outputs(model, x[test], CFG.inference_batch_size), "softmax").argmax(axis=1)
    keras.backend.clear_session()
    return float(accuracy_score(y[test], predicted))


def measure(seed: int = SEED) -> dict[str, float]:
    """Accuracy on the evaluation part of one seeded stratified split, for each arm."""
    from sklearn.model_selection import train_test_split

    x, histograms, y = load_cells(pbc_sample())
    train, test = train_test_split(np.arange(len(y)), test_size=EVAL_FRACTION, stratify=y, random_state=seed)
    return {
        "colour": colour_accuracy(histograms, y, train, test, seed),
        "imagenet": finetuned_accuracy(x, y, train, test, "imagenet", seed),
        "random": finetuned_accuracy(x, y, train, test, "none", seed),
        "permuted": finetuned_accuracy(x, y, train, test, "imagenet", seed, permute=True),
    }


def test_imagenet_finetuning_on_real_cells_beats_a_random_start_and_permuted_labels_and_keeps_up_with_colour():
    scores = measure(SEED)
    shown = ", ".join(f"{arm} {value:.3f}" for arm, value in scores.items())
    assert scores["imagenet"] >= MIN_IMAGENET, f"fine-tuning from ImageNet learnt too little: {shown}"
    assert scores["imagenet"] >= scores["random"] + MIN_OVER_RANDOM, f"ImageNet weights add too little: {shown}"
    assert scores["permuted"] <= MAX_PERMUTED, f"permuted training labels, yet above chance (1/4): {shown}"
    assert scores["imagenet"] >= scores["colour"] - MAX_BELOW_COLOUR, f"far below the colour histogram: {shown}"
