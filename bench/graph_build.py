"""What a training task pays before its first real step: building the training graph.

    python bench/graph_build.py [--images 96] [--batch-size 16]

Each row is a fresh process: build a classifier (random weights), compile it as the stages do,
then time a one-step `fit` (builds the training graph, runs one batch) and the mean step of a
second `fit` that reuses the graph. Rows: Keras' default strategy (the
optimizer's and metrics' variables are created inside the first trace, so TensorFlow traces the
step twice) against the explicit strategy the stages use, then the backbones, then how much of
the backbone is frozen (`train.frozen_fraction`). The ratio that matters is first call over
steady step: how many steps one graph build is worth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

ROWS = [
    ("InceptionV3", 96, 0.0, "default"),
    ("InceptionV3", 96, 0.0, "explicit"),
    ("Xception", 71, 0.0, "explicit"),
    ("InceptionResNetV2", 75, 0.0, "explicit"),
    ("Xception", 71, 0.75, "explicit"),
    ("Xception", 71, 0.85, "explicit"),
    ("Xception", 71, 0.9, "explicit"),
    ("DenseNet121", 71, 0.9, "explicit"),
    ("DenseNet121", 71, 0.0, "explicit"),
    ("MobileNetV2", 71, 0.9, "explicit"),
    ("MobileNetV2", 71, 0.0, "explicit"),
    ("MobileNetV2", 96, 0.0, "explicit"),
]

CHILD = r"""
import json, sys, time
import numpy as np
import tensorflow as tf
from leukemia_mtl.config import TrainConfig
from leukemia_mtl.devices import devices_for_training
from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier
from leukemia_mtl.train.finetune import compile_classifier, make_dataset, set_backbone_trainable
name, size, frozen, strategy_kind, images, batch = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
x = np.random.default_rng(0).integers(0, 256, (images, size, size, 3), dtype=np.uint8)
y = (np.arange(images) % 4).astype(np.int32)
strategy = devices_for_training("off")[0] if strategy_kind == "explicit" else tf.distribute.get_strategy()
with strategy.scope():
    model = build_classifier(name, size, 4, ResolvedWeights(None, "none", False), head="softmax", dense_units=256, dropout=0.3)
    set_backbone_trainable(model, True, frozen)
    compile_classifier(model, TrainConfig(batch_size=batch), "softmax")
    data = make_dataset(x, y, batch, 0, shuffle=True).repeat()
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)  # builds the graph, then one step
    first = time.perf_counter() - started
    steps = max(3, images // batch)
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)  # the same graph, reused
    step = (time.perf_counter() - started) / steps
print(json.dumps({"first": first, "step": step, "trainable": len(model.trainable_variables)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbones", nargs="*", help="only the rows of these backbones")
    args = parser.parse_args()
    print(
        f"{'backbone':18s} {'px':>4s} {'frozen':>6s} {'strategy':>9s} {'trainable vars':>14s} {'first call s':>12s} "
        f"{'steady step s':>13s} {'first/step':>10s}"
    )
    for name, size, frozen, strategy in ROWS:
        if args.backbones and name not in args.backbones:
            continue
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                name,
                str(size),
                str(frozen),
                strategy,
                str(args.images),
                str(args.batch_size),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            sys.exit(out.stderr[-2000:])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{name:18s} {size:4d} {frozen:6.2f} {strategy:>9s} {r['trainable']:14d} {r['first']:12.1f} {r['step']:13.2f} "
            f"{r['first'] / r['step']:10.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
