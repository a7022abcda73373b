"""Seconds and peak memory to segment one 2592x1944 smear, per segmenter configuration.

    python bench/segment_full_smear.py [--smears 2]

Each configuration runs in its own process so that its peak RSS is its own. The network is
untrained (random weights): time and memory do not depend on the weights. Ratios within one
run are what to compare; absolute figures depend on the machine. Then scaling: the demo's
segmenter over 1x, 2x and 4x `--smears` smears at two sizes (1296x972, 2592x1944): seconds per
smear should stay flat in the count and grow with pixels; peak memory should not grow with either.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CONFIGS = {
    "demo (scale 0.25, 64 px patches, depth 3, 8 filters)": {},
    "paper (scale 0.5, 256 px, depth 4, 32 filters)": {
        "working_scale": 0.5,
        "patch_size": 256,
        "depth": 4,
        "base_filters": 32,
    },
    "worst case: full resolution, paper network": {
        "working_scale": 1.0,
        "patch_size": 256,
        "depth": 4,
        "base_filters": 32,
    },
}

CHILD = r"""
import json, resource, sys, time, dataclasses
from leukemia_mtl.config import SegmentConfig
from leukemia_mtl.data.synth import _rng, render_smear
rgb, truth, _ = render_smear(_rng(0, 1, 0), "L2", 2592, 1944)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from leukemia_mtl.segment.infer import Segmenter, SegmenterInfo
from leukemia_mtl.segment.unet import build_residual_unet
cfg = dataclasses.replace(SegmentConfig(), **json.loads(sys.argv[1]))
model = build_residual_unet(cfg.patch_size, cfg.depth, cfg.base_filters)
seg = Segmenter(model, SegmenterInfo(cfg.patch_size, cfg.working_scale, cfg.depth, cfg.base_filters, "bench"))
seg.segment(rgb[:512, :512], 1.0, cfg)  # warm-up: graph building is not per-smear cost
started = time.perf_counter()
seg.segment(rgb, 1.0, cfg)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "before_mb": before / 1024}))
"""

SCALING_CHILD = r"""
import json, resource, sys, time
from leukemia_mtl.config import SegmentConfig
from leukemia_mtl.data.synth import _rng, render_smear
from leukemia_mtl.segment.infer import Segmenter, SegmenterInfo
from leukemia_mtl.segment.unet import build_residual_unet
count, width, height = (int(v) for v in sys.argv[1:4])
cfg = SegmentConfig()
model = build_residual_unet(cfg.patch_size, cfg.depth, cfg.base_filters)
seg = Segmenter(model, SegmenterInfo(cfg.patch_size, cfg.working_scale, cfg.depth, cfg.base_filters, "bench"))
smears = [render_smear(_rng(i, 1, 0), ("normal", "L1", "L2", "L3")[i % 4], width, height)[0] for i in range(count)]
seg.segment(smears[0][:512, :512], 1.0, cfg)  # graph building is not per-smear cost
started = time.perf_counter()
for rgb in smears:
    seg.segment(rgb, 1.0, cfg)  # same magnification, a larger field: cost should follow pixels
seconds = time.perf_counter() - started
print(json.dumps({"per_smear": seconds / count, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def scaling(smears: int) -> None:
    print(f"\n{'demo segmenter, size':22s} {'smears':>6s} {'s/smear':>8s} {'peak RSS MB':>12s}")
    for width, height in ((1296, 972), (2592, 1944)):
        for factor in (1, 2, 4):
            out = subprocess.run(
                [sys.executable, "-c", SCALING_CHILD, str(smears * factor), str(width), str(height)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{f'{width}x{height}':22s} {smears * factor:6d} {r['per_smear']:8.2f} {r['peak_mb']:12.0f}", flush=True
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smears", type=int, default=2, help="smears at 1x in the scaling runs (2x and 4x follow)")
    args = parser.parse_args()
    rows = []
    for name, overrides in CONFIGS.items():
        out = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(overrides)], capture_output=True, text=True, check=True
        )
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    base = rows[0][1]["seconds"]
    print(f"{'configuration':50s} {'s/smear':>8s} {'x demo':>7s} {'peak RSS MB':>12s}")
    for name, r in rows:
        print(f"{name:50s} {r['seconds']:8.2f} {r['seconds'] / base:7.1f} {r['peak_mb']:12.0f}")
    print(
        f"(the smear itself and Python+TF imports account for ~{rows[0][1]['before_mb']:.0f} MB before the model is built)"
    )
    scaling(args.smears)


if __name__ == "__main__":
    main()
