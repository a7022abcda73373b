"""The ROI step's threshold: the paper's fixed 98 against the adaptive level, on generated smears
stained lighter or darker and photographed at two magnifications.

    python bench/roi_threshold.py [--shifts -30 0 40 70] [--widths 640 1280]

Per method, stain shift (added to every RGB channel) and width: the ROI's recall and IoU against
the generator's white-cell masks, and the share of white cells the ROI covers by more than half,
over one smear per class. A measurement on generated data: the real test is other labs' smears.
"""

from __future__ import annotations

import argparse
import dataclasses

import cv2
import numpy as np

from leukemia_mtl.config import REFERENCE_WIDTH, THRESHOLD_METHODS, PreprocessConfig
from leukemia_mtl.data.synth import _rng, render_smear
from leukemia_mtl.masks import mask_agreement
from leukemia_mtl.preprocess import compute_roi


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shifts", type=int, nargs="+", default=[-30, 0, 40, 70])
    parser.add_argument("--widths", type=int, nargs="+", default=[640, 1280])
    args = parser.parse_args()
    print("| threshold | stain shift | width | ROI recall | ROI IoU | white cells found |")
    print("| --- | --- | --- | --- | --- | --- |")
    for method in THRESHOLD_METHODS:
        cfg = dataclasses.replace(PreprocessConfig(), threshold_method=method)
        for shift in args.shifts:
            for width in args.widths:
                recall, iou, found = [], [], []
                for index, cls in enumerate(("normal", "L1", "L2", "L3")):
                    rgb, truth, _ = render_smear(_rng(21, 1, index), cls, width, width * 3 // 4)
                    stained = (
                        cv2.add(rgb, (shift,) * 3 + (0,)) if shift >= 0 else cv2.subtract(rgb, (-shift,) * 3 + (0,))
                    )
                    roi = compute_roi(stained, cfg, scale=width / REFERENCE_WIDTH).roi_mask
                    agreement = mask_agreement(roi, truth)
                    recall.append(agreement["recall"])
                    iou.append(agreement["iou"])
                    count, labels = cv2.connectedComponents(truth)
                    found += [(roi[labels == cell] > 0).mean() > 0.5 for cell in range(1, count)]
                print(
                    f"| {method} | {shift:+d} | {width} | {np.mean(recall):.2f} | {np.mean(iou):.2f} | {np.mean(found):.2f} |"
                )


if __name__ == "__main__":
    main()
