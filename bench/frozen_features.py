"""What computing the frozen layers' features once saves: `fit_stage` with and without it.

    python bench/frozen_features.py [--images 256] [--epochs 5] [--sizes 80 224]

Each row is a fresh process: the profile's backbone with its ImageNet weights (MobileNetV2, from its
package), 90 % of it frozen (`train.frozen_fraction`, the demo's and workstation's), `--images`
generated white-cell crops and a quarter as many for the inner validation, `fit_stage` for `--epochs`
epochs without early stopping; once with `train.frozen_features_mb=0` (the whole backbone runs every
epoch, as before issue 31) and once with the cache. The ratio that matters is the whole fit's seconds
(the cache's one feature pass included); the last column says both runs learned the same (the
final training loss, which differs by float rounding only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
from leukemia_mtl.bundles import square
from leukemia_mtl.config import TrainConfig, get_profile
from leukemia_mtl.data.synth import _rng, render_crop
from leukemia_mtl.devices import devices_for_training
from leukemia_mtl.models.backbones import build_classifier, get_backbone, resolve_weights
from leukemia_mtl.train.finetune import fit_stage
size, images, epochs, limit, frozen = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
profile = get_profile("workstation")
backbone = profile.model.backbones[0]
classes = ("lymphocyte", "L1", "L2", "L3")
x, y = [], []
for index in range(images + images // 4):
    rgb, _ = render_crop(_rng(index, 7, 0), classes[index % 4], 128)
    x.append(square(rgb, size))
    y.append(index % 4)
x, y = np.stack(x), np.array(y, np.int32)
import keras
keras.utils.set_random_seed(0)
with devices_for_training("off")[0].scope():
    model = build_classifier(backbone, size, 4, resolve_weights("imagenet", get_backbone(backbone), profile.storage),
                             head="softmax", dense_units=profile.model.dense_units, dropout=profile.model.dropout)
    cfg = TrainConfig(epochs=epochs, warmup_epochs=0, batch_size=32, early_stopping_patience=0, frozen_fraction=frozen,
                      frozen_features_mb=limit)
    started = time.perf_counter()
    fit = fit_stage(model, x[:images], y[:images], x[images:], y[images:], cfg, "softmax", 0, verbose=0)
    seconds = time.perf_counter() - started
print(json.dumps({"backbone": backbone, "seconds": seconds, "features": fit.frozen_features_seconds,
                  "first": fit.first_epochs_seconds, "loss": fit.history["loss"][-1], "reuse": fit.frozen_features}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[80, 224])
    parser.add_argument("--frozen-fraction", type=float, default=0.9)
    args = parser.parse_args()
    print(
        f"{args.images} training + {args.images // 4} validation images, {args.epochs} epochs, "
        f"frozen_fraction {args.frozen_fraction}, each row a fresh process"
    )
    print(
        "| backbone | size | whole backbone every epoch (s) | features once (s) | of which the feature pass | ratio | final loss (whole / once) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        rows = {}
        for limit in (0, 3072):
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(size),
                    str(args.images),
                    str(args.epochs),
                    str(limit),
                    str(args.frozen_fraction),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                sys.exit(out.stderr[-3000:])
            rows[limit] = json.loads(out.stdout.strip().splitlines()[-1])
        whole, once = rows[0], rows[3072]
        print(
            f"| {whole['backbone']} | {size} | {whole['seconds']:.1f} | {once['seconds']:.1f} | {once['features']:.1f} | "
            f"**{whole['seconds'] / once['seconds']:.2f}x** | {whole['loss']:.4f} / {once['loss']:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
