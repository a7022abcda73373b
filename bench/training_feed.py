"""Training img/s through our input pipeline vs the same model fed from an in-memory tensor.

    python bench/training_feed.py [--size 71] [--images 96] [--epochs 4] [--repeats 1] [--scaling] [--backbones ...]

Per backbone, two fits of a freshly built classifier (same seed), both under the strategy the
stages use: (a) `make_dataset`, the feed the finetune stages use (uint8 arrays, per-epoch
shuffle, per-batch cast, prefetch); (b) Keras fed a float32 tensor already in memory. Steady
epochs only: the first epoch of each fit also builds the graph and is left out, and is reported
apart (graph building, by backbone). The goal is (a)/(b) >= 0.95.

On a GPU machine (`nvidia-smi` on the PATH) the table adds the GPU's mean utilisation during each
fit, sampled every 200 ms; the paper-scale check is
`python bench/training_feed.py --size 299 --images 192 --batch-size 48 --backbones InceptionResNetV2`.

Then scaling (`--scaling`, Xception through our feed): 1x, 2x, 4x the images at two input sizes;
seconds per image of a steady epoch should stay flat in the count and grow with pixels.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=71)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument(
        "--repeats", type=int, default=1, help="interleaved pairs of fits per backbone (medians reported)"
    )
    parser.add_argument("--scaling", action="store_true", help="also the 1x/2x/4x, two-size runs")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backbones", nargs="+", default=["InceptionV3", "Xception", "InceptionResNetV2"])
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from leukemia_mtl.bundles import square
    from leukemia_mtl.config import TrainConfig
    from leukemia_mtl.data.synth import _rng, render_crop
    from leukemia_mtl.devices import devices_for_training
    from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier, get_backbone
    from leukemia_mtl.train.finetune import EpochTimer, compile_classifier, make_dataset

    cells = ("lymphocyte", "L1", "L2", "L3")
    cfg = TrainConfig(batch_size=args.batch_size)
    strategy, _ = devices_for_training("auto")

    def images(count: int, size: int):
        x = np.stack([square(render_crop(_rng(i, 95, 0), cells[i % 4], 128)[0], size) for i in range(count)])
        return x, np.arange(count, dtype=np.int32) % 4

    def gpu_utilisation():
        """A running `nvidia-smi` sampler (None without a GPU); its mean is read after the fit."""
        if not shutil.which("nvidia-smi") or not tf.config.list_physical_devices("GPU"):
            return None
        return subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"],
            stdout=subprocess.PIPE,
            text=True,
        )

    def mean_utilisation(sampler) -> str:
        if sampler is None:
            return "-"
        sampler.terminate()
        values = [float(v) for v in sampler.communicate()[0].split() if v.replace(".", "", 1).isdigit()]
        return f"{np.mean(values):.0f} %" if values else "-"

    def fit(name: str, x, y, feed: str) -> tuple[float, float, str]:
        """(first epoch seconds, median steady epoch seconds, GPU utilisation)"""
        keras.utils.set_random_seed(0)
        sampler = gpu_utilisation()
        with strategy.scope():
            model = build_classifier(name, x.shape[1], 4, ResolvedWeights(None, "none", False), head="softmax")
            compile_classifier(model, cfg, "softmax")
            timer = EpochTimer()
            if feed == "pipeline":
                model.fit(
                    make_dataset(x, y, args.batch_size, 0, shuffle=True),
                    epochs=args.epochs,
                    verbose=0,
                    callbacks=[timer],
                    shuffle=False,
                )
            else:
                model.fit(
                    tf.constant(x.astype(np.float32)),
                    y,
                    batch_size=args.batch_size,
                    epochs=args.epochs,
                    verbose=0,
                    callbacks=[timer],
                    shuffle=True,
                )
        keras.backend.clear_session()
        return timer.seconds[0], float(np.median(timer.seconds[1:])), mean_utilisation(sampler)

    print(
        f"{args.images} images at {args.size} px (or the backbone's smallest input), batch {args.batch_size}, "
        f"{args.epochs - 1} steady epochs per fit, all layers trained"
    )
    print(
        f"{'backbone':20s} {'our feed img/s':>15s} {'in-memory img/s':>16s} {'ratio':>6s} {'first epoch s':>14s} {'GPU busy (ours / in-memory)':>28s}"
    )
    for name in args.backbones:
        x, y = images(args.images, max(args.size, get_backbone(name).min_size))
        runs = [(fit(name, x, y, "pipeline"), fit(name, x, y, "memory")) for _ in range(args.repeats)]  # interleaved
        first, busy, busy_memory = runs[0][0][0], runs[0][0][2], runs[0][1][2]
        ours, memory = (float(np.median([r[side][1] for r in runs])) for side in (0, 1))
        print(
            f"{name:20s} {args.images / ours:15.1f} {args.images / memory:16.1f} {memory / ours:6.2f} {first:14.1f} "
            f"{busy + ' / ' + busy_memory:>28s}",
            flush=True,
        )
    if args.scaling:
        print(f"\n{'Xception, size':14s} {'images':>6s} {'steady s/epoch':>15s} {'ms/image':>9s}")
        for size in (args.size, 2 * args.size):
            for factor in (1, 2, 4):
                x, y = images(args.images // 2 * factor, size)
                _, steady, _ = fit("Xception", x, y, "pipeline")
                print(f"{size:14d} {len(x):6d} {steady:15.2f} {1000 * steady / len(x):9.1f}", flush=True)


if __name__ == "__main__":
    main()
