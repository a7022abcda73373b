"""Does the method learn on real white cells? Stratified k-fold CV on 600 real single-cell images, 8 classes.

    python bench/pbc_cells.py [--folds 5] [--size 96] [--epochs N] [--backbones MobileNetV2 DenseNet121]
                              [--rows colour features random imagenet permuted] [--finetune-backbone MobileNetV2]
                              [--crop 0.7] [--augment-copies 0] [--seed 0]

Data: the pbc-sample copy beside the clone (../shared/data/pbc-sample, or $LEUKEMIA_MTL_SHARED_DATA), 75 images
per class of basophil, eosinophil, erythroblast, ig, lymphocyte, monocyte, neutrophil, platelet, from the PBC
dataset: Acevedo A., Merino A., Alférez S., Molina Á., Boldú L., Rodellar J., "A dataset of microscopic
peripheral blood cell images for development of automatic recognition systems", Data in Brief 30 (2020) 105474,
doi:10.1016/j.dib.2020.105474; data on Mendeley Data, doi:10.17632/snkd93bnjr.1, licence CC BY 4.0 (attribution
in the sample's README.md). Loaded with the project's loader (load_datasets, read_image); every row sees each
image's centred square of --crop (0.7) of its side, the cell's neighbourhood, resized with cv2.INTER_AREA.

Rows, each scored on the same seeded StratifiedKFold folds (the evaluation fold only scores):
- colour: the project's colour baseline (6x6x6 RGB histogram, StandardScaler + balanced LogisticRegression);
- features: frozen ImageNet features (build_feature_extractor: global average pooling) of each --backbones at
  --size and at 224 px, into the same logistic regression;
- random: fit_stage fine-tuning of --finetune-backbone from random initialisation (weights "none"), same budget;
- imagenet: the same fine-tuning from ImageNet weights;
- permuted: the imagenet row with the training part's labels permuted (a negative control: expect ~1/8).
The fine-tuning rows hold out a stratified 20 % of each training part as the inner validation split that drives
early stopping and the kept epoch (fit_stage); the fine-tuning settings below were chosen from one look at an inner
split of fold 0's training part (BENCHMARKS.md, "Real single cells: pbc-sample"), never from an evaluation fold; the
epochs were raised once, from 10 to 14, because the first full run's inner validation loss was still falling.

Prints per row mean +- SD over the folds of accuracy and balanced accuracy and the row's seconds, then a table,
and the out-of-fold recall per class of the colour and imagenet rows (which classes colour alone can tell).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leukemia_mtl.baselines import colour_histogram  # noqa: E402
from leukemia_mtl.config import TrainConfig, get_profile  # noqa: E402
from leukemia_mtl.data.annotated import shared_data  # noqa: E402
from leukemia_mtl.data.datasets import load_datasets  # noqa: E402
from leukemia_mtl.data.images import read_image  # noqa: E402

ROWS = ("colour", "features", "random", "imagenet", "permuted")
FEATURES_SIZE = 224  # the backbones' ImageNet size, beside --size
COLOUR_BINS = 6  # the project's colour baseline (evaluate.colour_bins)
HEAD = "softmax"
# Fine-tuning settings (see the module docstring for how they were chosen)
FINETUNE = dict(
    warmup_epochs=2,  # head-only epochs on the frozen backbone first: the ImageNet features are not disturbed by a random head
    # fine-tuning epochs after the warm-up, early stopping (patience 3) on the inner validation split. 10 in the first
    # run: 3 of its 5 folds kept epoch 10-12 of 12 (the inner validation loss still falling), so 14
    epochs=14,
    batch_size=16,
    learning_rate=1e-3,
    decay_steps=50,
    decay_rate=0.8,
    early_stopping_patience=3,
    frozen_fraction=0.5,  # MobileNetV2's first half (low-level filters) stays frozen: faster steps, fewer weights to overfit
    batchnorm_calibration_images=256,
    inference_batch_size=64,
)
DENSE_UNITS, DROPOUT = 0, 0.2
# every row sees the centred 70 % of the image's side (252 of 360 px: the largest cells, monocytes, fit): at 96 px a
# cell spans ~1.4x more pixels than in the whole image squared (inner look: 0.917 against 0.865)
CROP = 0.7
VALIDATION_FRACTION = 0.2


def load_cells(root: Path) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    """Every image as RGB uint8 (full size), its label, and the classes (folder per class)."""
    # every PBC class is a normal cell; the loader needs one class named negative (it only sets records' .positive)
    profile = get_profile("workstation", {"data.negative_class": "neutrophil"})
    datasets = load_datasets(root, profile.data, check=False, progress=False)
    records = sorted((r for d in datasets for r in d.records), key=lambda r: str(r.path))
    images = [read_image(r.path, max_pixels=profile.data.max_pixels).rgb for r in records]
    labels = np.array([r.label for r in records])
    return images, labels, tuple(sorted(set(labels.tolist())))


def central(rgb: np.ndarray, crop: float) -> np.ndarray:
    """The centred square whose side is `crop` of the image's shorter side (the cell is centred in every PBC image)."""
    height, width = rgb.shape[:2]
    side = max(1, round(min(height, width) * crop))
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top : top + side, left : left + side]


def resized(images: list[np.ndarray], size: int, crop: float = 1.0) -> np.ndarray:
    """Each image's centred square (`crop` of its shorter side) resized to size x size with cv2.INTER_AREA."""
    return np.stack([cv2.resize(central(rgb, crop), (size, size), interpolation=cv2.INTER_AREA) for rgb in images])


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    return float(accuracy_score(y_true, y_pred)), float(balanced_accuracy_score(y_true, y_pred))


def linear_predictions(
    features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int
) -> np.ndarray:
    """The project's baseline model (baselines._model's "colour"/"features" arm) fitted on `train`, predicting `test`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced", random_state=seed)
    )
    return model.fit(features[train], y[train]).predict(features[test])


def image_features(x: np.ndarray, backbone: str, size: int) -> np.ndarray:
    import keras

    from leukemia_mtl.bundles import model_outputs
    from leukemia_mtl.models.backbones import build_feature_extractor, get_backbone, resolve_weights

    extractor = build_feature_extractor(backbone, size, resolve_weights("imagenet", get_backbone(backbone)))
    features = np.asarray(model_outputs(extractor, x, 32), np.float64)
    del extractor
    keras.backend.clear_session()
    return features


def train_config(**overrides) -> TrainConfig:
    return dataclasses.replace(TrainConfig(), **{**FINETUNE, **overrides})


def augmented(
    images: list[np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    evaluation: np.ndarray,
    copies: int,
    size: int,
    crop: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The training images `train` and `copies` random copies of each (the project's augment_to_balance: flips,
    rotation, shift, scale, on the full image, so the crop holds no border), cropped and resized; each image is its
    own group, and the evaluation images' groups are checked against the training ones."""
    from leukemia_mtl.augment import Item, augment_to_balance
    from leukemia_mtl.config import AugmentConfig

    items = [Item(images[i], str(y[i]), str(i), str(i)) for i in train]
    target = (copies + 1) * int(np.bincount(y[train]).max())
    out = augment_to_balance(items, [str(i) for i in evaluation], AugmentConfig(target_per_class=target), seed)
    return resized([item.image for item in out], size, crop), np.array([int(item.label) for item in out], np.int32)


def finetune_predictions(
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    n_classes: int,
    *,
    backbone: str,
    weights: str,
    cfg: TrainConfig,
    seed: int,
    permute: bool = False,
    images: list[np.ndarray] | None = None,
    copies: int = 0,
    crop: float = CROP,
):
    """fit_stage on `train` (a stratified inner validation split of it drives early stopping), predictions on `test`.
    permute: the training part's labels are shuffled first (train and inner validation alike). copies: with `images`
    (full size), that many augmented copies of each inner-training image are added (never of the inner validation)."""
    import keras
    from sklearn.model_selection import train_test_split

    from leukemia_mtl.bundles import class_probabilities, model_outputs
    from leukemia_mtl.models.backbones import build_classifier, get_backbone, resolve_weights
    from leukemia_mtl.train.finetune import balanced_sample_weights, fit_stage

    y_train = y[train]
    if permute:
        y_train = np.random.default_rng(seed).permutation(y_train)
    inner_train, inner_val = train_test_split(
        np.arange(len(train)), test_size=VALIDATION_FRACTION, stratify=y_train, random_state=seed
    )
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    resolved = resolve_weights(weights, get_backbone(backbone))
    model = build_classifier(
        backbone, x.shape[1], n_classes, resolved, dense_units=DENSE_UNITS, dropout=DROPOUT, head=HEAD
    )
    x_fit, y_fit = x[train][inner_train], y_train[inner_train]
    if copies:
        labels = np.zeros_like(y)
        labels[train] = y_train  # the (possibly permuted) training labels travel with their images
        x_fit, y_fit = augmented(
            images,
            labels,
            train=train[inner_train],
            evaluation=np.concatenate([train[inner_val], test]),
            copies=copies,
            size=x.shape[1],
            crop=crop,
            seed=seed,
        )
    weights_train, _ = balanced_sample_weights(y_fit, n_classes)
    weights_val, _ = balanced_sample_weights(y_train[inner_val], n_classes)
    fit = fit_stage(
        model,
        x_train=x_fit,
        y_train=y_fit,
        x_val=x[train][inner_val],
        y_val=y_train[inner_val],
        cfg=cfg,
        head=HEAD,
        seed=seed,
        sample_weight=weights_train,
        val_sample_weight=weights_val,
        random_backbone=not resolved.imagenet,
        verbose=0,
    )
    probabilities = class_probabilities(model_outputs(model, x[test], cfg.inference_batch_size), HEAD)
    del model
    keras.backend.clear_session()
    return probabilities.argmax(axis=1), fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--size", type=int, default=96, help="input size of the fine-tuning rows and the first features rows"
    )
    parser.add_argument(
        "--crop",
        type=float,
        default=CROP,
        help="every row sees the centred square of this share of the image's side (1: the whole image)",
    )
    parser.add_argument(
        "--augment-copies",
        type=int,
        default=0,
        help="augmented copies (augment_to_balance) of each inner-training image in the fine-tuning rows",
    )
    parser.add_argument("--epochs", type=int, default=FINETUNE["epochs"], help="fine-tuning epochs after the warm-up")
    parser.add_argument("--warmup-epochs", type=int, default=FINETUNE["warmup_epochs"])
    parser.add_argument("--frozen-fraction", type=float, default=FINETUNE["frozen_fraction"])
    parser.add_argument("--learning-rate", type=float, default=FINETUNE["learning_rate"])
    parser.add_argument("--backbones", nargs="+", default=["MobileNetV2", "DenseNet121"], help="of the features rows")
    parser.add_argument("--finetune-backbone", default="MobileNetV2", help="of the random, imagenet, permuted rows")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/pbc-sample beside the clone")
    args = parser.parse_args(argv)

    from sklearn.model_selection import StratifiedKFold

    root = args.data or shared_data("pbc-sample")
    if not root.is_dir():
        parser.error(f"{root}: no pbc-sample folder (set LEUKEMIA_MTL_SHARED_DATA or --data)")
    started = time.time()
    images, labels, classes = load_cells(root)
    y = np.array([classes.index(label) for label in labels.tolist()], np.int32)
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed).split(np.zeros(len(y)), y))
    print(
        f"{len(y)} images, {len(classes)} classes ({', '.join(classes)}), {args.folds} folds, "
        f"read in {time.time() - started:.1f} s",
        flush=True,
    )
    cfg = train_config(
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        frozen_fraction=args.frozen_fraction,
        learning_rate=args.learning_rate,
    )
    results: list[tuple[str, list[tuple[float, float]], float, str]] = []
    out_of_fold: dict[str, np.ndarray] = {}

    def report(name: str, per_fold: list[tuple[float, float]], seconds: float, note: str = "") -> None:
        a = np.array(per_fold)
        results.append((name, per_fold, seconds, note))
        print(
            f"{name}: accuracy {a[:, 0].mean():.3f} +- {a[:, 0].std(ddof=1):.3f}, balanced accuracy "
            f"{a[:, 1].mean():.3f} +- {a[:, 1].std(ddof=1):.3f}, {seconds:.0f} s {note}".rstrip(),
            flush=True,
        )

    def linear_row(name: str, features: np.ndarray, extract_seconds: float) -> None:
        t = time.time()
        predicted = np.zeros_like(y)
        per_fold = []
        for train, test in folds:
            predicted[test] = linear_predictions(features, y, train, test, args.seed)
            per_fold.append(scores(y[test], predicted[test]))
        out_of_fold[name] = predicted
        report(name, per_fold, extract_seconds + time.time() - t)

    if "colour" in args.rows:
        t = time.time()
        histograms = np.stack(
            [colour_histogram(np.ascontiguousarray(central(rgb, args.crop)), COLOUR_BINS) for rgb in images]
        )
        linear_row("colour histogram + logistic regression", histograms, time.time() - t)
    cache: dict[int, np.ndarray] = {}

    def at(size: int) -> np.ndarray:
        if size not in cache:
            cache[size] = resized(images, size, args.crop)
        return cache[size]

    if "features" in args.rows:
        for backbone in args.backbones:
            for size in dict.fromkeys((args.size, FEATURES_SIZE)):
                t = time.time()
                features = image_features(at(size), backbone, size)
                linear_row(f"{backbone} ImageNet features {size} px + logistic regression", features, time.time() - t)
    finetune_rows = [("random", "none", False), ("imagenet", "imagenet", False), ("permuted", "imagenet", True)]
    for row, weights, permute in finetune_rows:
        if row not in args.rows:
            continue
        t = time.time()
        x = at(args.size)
        predicted = np.zeros_like(y)
        per_fold, epochs = [], []
        for k, (train, test) in enumerate(folds):
            predicted[test], fit = finetune_predictions(
                x,
                y,
                train,
                test,
                len(classes),
                backbone=args.finetune_backbone,
                weights=weights,
                cfg=cfg,
                seed=args.seed + k,
                permute=permute,
                images=images,
                copies=args.augment_copies,
                crop=args.crop,
            )
            per_fold.append(scores(y[test], predicted[test]))
            epochs.append(f"{fit.best_epoch}/{len(fit.history.get('loss', []))}")
            print(
                f"  {row} fold {k}: accuracy {per_fold[-1][0]:.3f}, balanced {per_fold[-1][1]:.3f}, "
                f"kept epoch {epochs[-1]}, {fit.seconds:.0f} s",
                flush=True,
            )
        out_of_fold[row] = predicted
        label = {
            "random": "from random initialisation",
            "imagenet": "from ImageNet",
            "permuted": "from ImageNet, training labels permuted (control)",
        }[row]
        report(
            f"{args.finetune_backbone} {args.size} px fine-tuned {label}",
            per_fold,
            time.time() - t,
            f"(kept epoch / epochs run: {', '.join(epochs)})",
        )

    print(
        f"\nfine-tuning: {args.finetune_backbone} at {args.size} px, {cfg.warmup_epochs} warm-up + up to {cfg.epochs} "
        f"epochs, batch {cfg.batch_size}, lr {cfg.learning_rate:g} (x{cfg.decay_rate:g} every {cfg.decay_steps} "
        f"steps), frozen_fraction {cfg.frozen_fraction:g}, patience {cfg.early_stopping_patience}, inner validation "
        f"{VALIDATION_FRACTION:.0%}, dropout {DROPOUT:g}, augmented copies {args.augment_copies}; every row: centred "
        f"crop {args.crop:g} of the side; seed {args.seed}; total {time.time() - started:.0f} s\n"
    )
    print("| row | accuracy | balanced accuracy | seconds |")
    print("| --- | --- | --- | --- |")
    for name, per_fold, seconds, _ in results:
        a = np.array(per_fold)
        print(
            f"| {name} | {a[:, 0].mean():.3f} ± {a[:, 0].std(ddof=1):.3f} | "
            f"{a[:, 1].mean():.3f} ± {a[:, 1].std(ddof=1):.3f} | {seconds:.0f} |"
        )
    shown = {
        name: predicted
        for name, predicted in out_of_fold.items()
        if name.startswith("colour") or name in ("imagenet", "random")
    }
    if shown:
        print("\nout-of-fold recall per class")
        print("| row | " + " | ".join(classes) + " |")
        print("| --- |" + " --- |" * len(classes))
        for name, predicted in shown.items():
            recall = [float(np.mean(predicted[y == c] == c)) for c in range(len(classes))]
            print(f"| {name.split(' + ')[0]} | " + " | ".join(f"{r:.2f}" for r in recall) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
