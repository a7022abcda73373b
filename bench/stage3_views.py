"""How stage 3 should look at a multi-cell smear (train.stage3_images): each isolated white cell at one
magnification with the smear's probabilities their mean ("cells"), the whole isolated smear squared to
the input ("isolated", the paper's), or the smear as it is ("original").

    python bench/stage3_views.py [--per-class 4] [--epochs 3] [--backbone MobileNetV2] [--weights imagenet]
                                 [--views cells:71 isolated:71 original:71 original:224]

Generated 640x480 smears (the demo's size), isolated with their ground-truth masks (so the
segmenter's errors stay out of the comparison), 3 folds grouped by smear; per fold and view the
profile's backbone (ImageNet weights by default, as the profiles start) trained with the stages' own
recipe (`fit_stage`: balanced class weights, the demo's settings) on the training smears, scored on the
held-out ones. Prints smear-level balanced accuracy (detection) and macro F1 (FAB) with the seconds
each view took.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import cv2
import numpy as np

from leukemia_mtl.augment import Item, augment_to_balance
from leukemia_mtl.bundles import square
from leukemia_mtl.config import REFERENCE_WIDTH, get_profile
from leukemia_mtl.data.synth import _rng, render_smear
from leukemia_mtl.segment.isolate import extract_cells

CLASSES = ("normal", "L1", "L2", "L3")


def smears(per_class: int, width: int = 640, height: int = 480) -> list[dict]:
    out = []
    for index in range(per_class * len(CLASSES)):
        label = CLASSES[index % len(CLASSES)]
        rgb, mask, _ = render_smear(_rng(3, 1, index), label, width, height)
        out.append({"id": f"s{index}", "label": label, "rgb": rgb, "mask": mask})
    return out


def views(smear: dict, view: str, size: int, profile) -> list[np.ndarray]:
    """What the network sees of one smear."""
    if view == "original":
        return [square(smear["rgb"], size)]
    if view == "isolated":
        return [square(cv2.bitwise_and(smear["rgb"], smear["rgb"], mask=smear["mask"]), size)]
    scale = smear["rgb"].shape[1] / REFERENCE_WIDTH
    return [square(c.image, size) for c in extract_cells(smear["rgb"], smear["mask"], profile.segment, scale=scale)]


def score(
    data: list[dict], view: str, size: int, task: str, epochs: int, profile, backbone: str, weights_source: str
) -> tuple[float, float]:
    import keras
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.model_selection import StratifiedGroupKFold

    from leukemia_mtl.devices import devices_for_training
    from leukemia_mtl.models.backbones import build_classifier, get_backbone, resolve_weights
    from leukemia_mtl.train.finetune import balanced_sample_weights, fit_stage

    classes = ("normal", "ALL") if task == "detection" else CLASSES
    name = {c: c if task == "fab" or c == "normal" else "ALL" for c in CLASSES}
    labels = np.array([classes.index(name[s["label"]]) for s in data])
    seen = [views(s, view, size, profile) for s in data]
    truth, predicted = [], []
    cfg = dataclasses.replace(profile.train, epochs=epochs)
    weights = resolve_weights(weights_source, get_backbone(backbone))
    splitter = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
    for fold, (train, held) in enumerate(
        splitter.split(np.zeros(len(data)), [s["label"] for s in data], [s["id"] for s in data])
    ):
        items = [Item(image, classes[labels[i]], data[i]["id"], data[i]["id"]) for i in train for image in seen[i]]
        items = augment_to_balance(items, [data[i]["id"] for i in held], profile.augment, fold)
        x = np.stack([i.image for i in items])
        y = np.array([classes.index(i.label) for i in items])
        sample_weights, _ = balanced_sample_weights(y, len(classes))
        strategy, _ = devices_for_training("off")
        with strategy.scope():
            keras.utils.set_random_seed(fold)
            model = build_classifier(
                backbone,
                size,
                len(classes),
                weights,
                head="softmax",
                dense_units=profile.model.dense_units,
                dropout=profile.model.dropout,
            )
            fit_stage(
                model,
                x_train=x,
                y_train=y,
                x_val=None,
                y_val=None,
                cfg=cfg,
                head="softmax",
                seed=fold,
                sample_weight=sample_weights,
                random_backbone=weights.keras_argument is None,
                verbose=0,
            )
        for i in held:
            if seen[i]:
                mean = np.asarray(model(np.stack(seen[i]).astype(np.float32), training=False)).mean(axis=0)
            else:
                mean = np.full(len(classes), 1 / len(classes))
            truth.append(labels[i])
            predicted.append(int(mean.argmax()))
        keras.backend.clear_session()
    return float(balanced_accuracy_score(truth, predicted)), float(f1_score(truth, predicted, average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--views", nargs="+", default=["cells:71", "isolated:71", "original:71", "original:224"])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--backbone", help="default: the profile's first")
    parser.add_argument("--weights", help="default: the profile's (model.weights)")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    backbone, weights = args.backbone or profile.model.backbones[0], args.weights or profile.model.weights
    data = smears(args.per_class)
    print(
        f"{len(data)} smears 640x480, 3 folds grouped by smear, {backbone} from weights {weights!r}, {args.epochs} epochs, "
        f"profile {args.profile}"
    )
    for spec in args.views:
        view, size = spec.split(":")
        started = time.perf_counter()
        detection, fab = (
            score(
                data,
                view=view,
                size=int(size),
                task=task,
                epochs=args.epochs,
                profile=profile,
                backbone=backbone,
                weights_source=weights,
            )
            for task in ("detection", "fab")
        )
        print(
            json.dumps(
                {
                    "view": view,
                    "input": int(size),
                    "detection_balanced_accuracy": round(detection[0], 3),
                    "fab_macro_f1": round(fab[1], 3),
                    "seconds": round(time.perf_counter() - started),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
