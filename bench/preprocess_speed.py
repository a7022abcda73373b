"""Seconds per smear of the paper's preprocess (read, offsets, monochrome, threshold, clean-up,
mask written) over the time of copying the same bytes (input read + mask-sized write).

    python bench/preprocess_speed.py [--smears 4]

The copy is the floor any preprocess pays on this disk; the ratio says how much the image work
adds on top. Run at two image sizes and 1x, 2x, 4x the smears: time per smear should stay flat
(cost linear in images) and grow with pixels.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2


def _write_smears(folder: Path, count: int, width: int, height: int) -> list[Path]:
    from leukemia_mtl.data.synth import _rng, render_smear
    from leukemia_mtl.io_utils import write_image

    paths = []
    for index in range(count):
        rgb, _, _ = render_smear(_rng(index, 11, 0), ("normal", "L1", "L2", "L3")[index % 4], width, height)
        paths.append(write_image(folder / f"Im{index:03d}_1.jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 92]))
    return paths


def _preprocess(paths: list[Path], out: Path) -> tuple[float, list[int]]:
    from leukemia_mtl.config import PreprocessConfig
    from leukemia_mtl.data.images import read_image
    from leukemia_mtl.io_utils import write_image
    from leukemia_mtl.preprocess import compute_roi, width_guess

    cfg, sizes = PreprocessConfig(), []
    started = time.perf_counter()
    for path in paths:
        rgb = read_image(path, max_pixels=10**9).rgb
        roi = compute_roi(rgb, cfg, width_guess(rgb.shape[1], single_cell=False))  # the generator's ALL-IDB1 field
        sizes.append(write_image(out / f"{path.stem}.png", roi.roi_mask).stat().st_size)
    return time.perf_counter() - started, sizes


def _copy(paths: list[Path], sizes: list[int], out: Path) -> float:
    started = time.perf_counter()
    for path, size in zip(paths, sizes):
        data = path.read_bytes()
        (out / f"{path.stem}.bin").write_bytes(data[:size] if size <= len(data) else data + bytes(size - len(data)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smears", type=int, default=4, help="smears at 1x (2x and 4x follow)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'size':>10s} {'smears':>6s} {'s/smear':>8s} {'copy s/smear':>12s} {'ratio':>7s}")
    for width, height in ((1296, 972), (2592, 1944)):
        for factor in (1, 2, 4):
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                (root / "in").mkdir(), (root / "out").mkdir(), (root / "copy").mkdir()
                paths = _write_smears(root / "in", args.smears * factor, width, height)
                runs = []
                for _ in range(args.repeats):
                    seconds, sizes = _preprocess(paths, root / "out")
                    runs.append((seconds, _copy(paths, sizes, root / "copy")))
                work = statistics.median(r[0] for r in runs) / len(paths)
                copy = statistics.median(r[1] for r in runs) / len(paths)
                print(f"{width}x{height:<5d} {len(paths):6d} {work:8.3f} {copy:12.4f} {work / copy:7.1f}")


if __name__ == "__main__":
    main()
