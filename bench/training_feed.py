"""Training img/s through our input pipeline vs the same model fed from an in-memory tensor.

    python bench/training_feed.py [--size 96] [--images 128] [--epochs 4] [--backbones InceptionV3 Xception InceptionResNetV2]

Per backbone, two fits of a freshly built classifier (same seed): (a) `make_dataset`, the feed
the finetune stages use (uint8 arrays, per-epoch shuffle, per-batch cast, prefetch); (b) Keras
fed a float32 tensor already in memory. Steady epochs only: the first epoch of each fit also
builds the graph and is left out. The goal is (a)/(b) >= 0.95.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbones", nargs="+", default=["InceptionV3", "Xception", "InceptionResNetV2"])
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from leukemia_mtl.config import TrainConfig
    from leukemia_mtl.data.synth import _rng, render_crop
    from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier
    from leukemia_mtl.train.data import square
    from leukemia_mtl.train.finetune import EpochTimer, compile_classifier, make_dataset

    cells = ("lymphocyte", "L1", "L2", "L3")
    x = np.stack([square(render_crop(_rng(i, 95, 0), cells[i % 4], 128)[0], args.size) for i in range(args.images)])
    y = np.arange(args.images, dtype=np.int32) % 4
    cfg = TrainConfig(batch_size=args.batch_size)

    def steady_rate(feed) -> float:
        keras.utils.set_random_seed(0)
        model = build_classifier(name, args.size, 4, ResolvedWeights(None, "none", False), head="softmax")
        compile_classifier(model, cfg, "softmax")
        timer = EpochTimer()
        if feed == "pipeline":
            model.fit(make_dataset(x, y, args.batch_size, 0, shuffle=True), epochs=args.epochs, verbose=0, callbacks=[timer], shuffle=False)
        else:
            model.fit(tf.constant(x.astype(np.float32)), y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                      callbacks=[timer], shuffle=True)
        return args.images / float(np.median(timer.seconds[1:]))

    print(f"{args.images} images at {args.size} px, batch {args.batch_size}, {args.epochs - 1} steady epochs per fit")
    print(f"{'backbone':20s} {'our feed img/s':>15s} {'in-memory img/s':>16s} {'ratio':>6s}")
    for name in args.backbones:
        started = time.time()
        ours, memory = steady_rate("pipeline"), steady_rate("memory")
        print(f"{name:20s} {ours:15.1f} {memory:16.1f} {ours / memory:6.2f}   ({time.time() - started:.0f}s)")


if __name__ == "__main__":
    main()
