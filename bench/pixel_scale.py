"""How well a dataset's pixel scale is estimated (preprocess.measure_scale), on generated data
whose scale is known: smears at several widths (the generator draws ALL-IDB1's field at any width) and
ALL-IDB2-style crops, per threshold method and stain shift.

    python bench/pixel_scale.py [--images 16] [--shifts 0 40]

Per row: the estimated scale over `--images` images (one class mix, as a dataset's), the true scale, and their
ratio. A measurement on generated data: real smears are the test, and a measured pixel size beats any estimate.
"""

from __future__ import annotations

import argparse
import dataclasses

import cv2

from leukemia_mtl.config import REFERENCE_WIDTH, THRESHOLD_METHODS, PreprocessConfig
from leukemia_mtl.data.synth import _rng, render_crop, render_smear
from leukemia_mtl.preprocess import measure_scale


def _stain(rgb, shift: int):
    return cv2.add(rgb, (shift,) * 3 + (0,)) if shift >= 0 else cv2.subtract(rgb, (-shift,) * 3 + (0,))


def _row(method: str, shift: int, images: str, truth: float, estimate) -> None:
    if estimate is None:  # neither ruler found enough: preprocess falls back to the width, with a warning
        print(f"| {method} | {shift:+d} | {images} | {truth:.4f} | no nucleus found | - |")
    else:
        print(
            f"| {method} | {shift:+d} | {images} | {truth:.4f} | {estimate.scale:.4f} | {estimate.scale / truth:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--shifts", type=int, nargs="+", default=[0, 40])
    args = parser.parse_args()
    classes, cell_types = ("normal", "L1", "L2", "L3"), ("lymphocyte", "L1", "L2", "L3")
    print("| threshold | stain shift | images | true scale | estimated | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in THRESHOLD_METHODS:
        cfg = dataclasses.replace(PreprocessConfig(), threshold_method=method)
        for shift in args.shifts:
            for width in (640, 1280):
                images = [
                    _stain(render_smear(_rng(41, 1, i), classes[i % 4], width, width * 3 // 4)[0], shift)
                    for i in range(args.images)
                ]
                _row(
                    method,
                    shift,
                    f"smears {width} px",
                    width / REFERENCE_WIDTH,
                    measure_scale(images, cfg, single_cell=False),
                )
            for size in (257, 128):
                images = [
                    _stain(
                        cv2.resize(
                            render_crop(_rng(41, 2, i), cell_types[i % 4], 257)[0],
                            (size, size),
                            interpolation=cv2.INTER_AREA,
                        ),
                        shift,
                    )
                    for i in range(args.images)
                ]
                _row(method, shift, f"crops {size} px", size / 257, measure_scale(images, cfg, single_cell=True))


if __name__ == "__main__":
    main()
