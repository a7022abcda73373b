"""What `predict --explain` costs per image: the same smears and single cells answered with and without
Grad-CAM heat maps, by one loaded Predictor, after one warm-up image of each kind.

    python bench/explain_cost.py [--release runs/.../release/model] [--images 12]

Without --release, the tests' tiny DAG runs first (its time is in BENCHMARKS.md) to make one. The images are the
demo profile's synthetic smears (640x480) and single-cell crops; reported: seconds per image without
and with --explain, and their ratio (one run, one machine: the ratio is what carries over).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def main() -> None:
    from predict_stream import make_release

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.synth import generate
    from leukemia_mtl.predict import Predictor

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, help="a release folder (default: make one with the tests' tiny DAG)")
    parser.add_argument("--images", type=int, default=12, help="images of each kind to time")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-explain")
    args = parser.parse_args()
    release = args.release or make_release(args.work)
    source = args.work / "source"
    if not source.exists():
        generate(source, get_profile("demo").synth, seed=3, progress=False)
    predictor = Predictor(release)
    out = Path(tempfile.mkdtemp(prefix="explain-", dir=args.work))
    for kind, pattern in (("smear", "ALL_IDB1/*.jpg"), ("cell", "ALL_IDB2/*.tif")):
        images = sorted(source.glob(pattern))[: args.images + 1]
        predictor.predict(images[0], kind, out / "w.png", out / "w_gradcam.png")  # warm-up: graphs of both paths
        seconds = {}
        for explain in (False, True):
            times = []
            for i, image in enumerate(images[1:]):
                started = time.perf_counter()
                predictor.predict(image, kind, out / f"{i}.png", out / f"{i}_gradcam.png" if explain else None)
                times.append(time.perf_counter() - started)
            seconds[explain] = statistics.median(times)
        print(
            f"{kind}: {len(images) - 1} images, median {seconds[False]:.3f} s per image without --explain, "
            f"{seconds[True]:.3f} s with (x{seconds[True] / seconds[False]:.2f}, +{seconds[True] - seconds[False]:.3f} s)"
        )


if __name__ == "__main__":
    main()
