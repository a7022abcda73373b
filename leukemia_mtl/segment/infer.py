"""A trained segmenter as a file bundle, and what it does to any new smear.

The bundle is `segmenter.keras` (the network) plus `segmenter.json` (working scale, patch size,
what masks it learned from); leukemia_mtl.bundles writes, reads and checks it. Prediction resizes
the image to the working scale, slides the network over it with overlap (so a 2592x1944 smear
costs a bounded amount of memory: one batch of patches and two float maps), blends the windows,
and resizes the probabilities back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from leukemia_mtl.bundles import SegmenterInfo, load_segmenter, save_segmenter
from leukemia_mtl.config import REFERENCE_WIDTH, PreprocessConfig, SegmentConfig
from leukemia_mtl.errors import SegmentError
from leukemia_mtl.preprocess import compute_roi
from leukemia_mtl.segment.isolate import CellCrop, blue_channel_isolation, clean_mask, extract_cells, isolate

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    probability: np.ndarray  # float32 HxW, original resolution
    mask: np.ndarray  # cleaned U-Net mask, 0/255
    blue: np.ndarray  # blue channel on black inside the refined mask
    refined_mask: np.ndarray  # after the blue-channel step
    isolated: np.ndarray  # RGB on black
    cells: list[CellCrop]


class Segmenter:
    def __init__(self, model, info: SegmenterInfo) -> None:
        self.model = model
        self.info = info

    def save(self, directory: Path | str) -> Path:
        return save_segmenter(self.model, self.info, directory)

    @classmethod
    def load(cls, directory: Path | str) -> Segmenter:
        """Load a bundle; any mismatch between file and metadata is one clear SegmentError."""
        return cls(*load_segmenter(directory))

    # -- prediction -----------------------------------------------------------------------

    def resize_factor(self, scale: float) -> float:
        return self.info.working_scale / scale

    def predict_probability(self, rgb: np.ndarray, scale: float, cfg: SegmentConfig) -> np.ndarray:
        """WBC probability per pixel of `rgb` (pixel scale `scale`), at the image's own size."""
        height, width = rgb.shape[:2]
        factor = self.resize_factor(scale)
        small = (
            rgb
            if abs(factor - 1) < 1e-6
            else cv2.resize(
                rgb,
                (max(1, round(width * factor)), max(1, round(height * factor))),
                interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR,
            )
        )
        probability = sliding_window(
            self.model, small, self.info.patch_size, cfg.window_overlap, cfg.predict_batch_size
        )
        if probability.shape != (height, width):
            probability = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
        return probability

    def segment(
        self,
        rgb: np.ndarray,
        scale: float,
        cfg: SegmentConfig,
        *,
        central_only: bool = False,
        blast_centres: tuple[tuple[int, int], ...] | None = None,
        roi_mask: np.ndarray | None = None,
    ) -> Segmentation:
        """Mask, blue-channel isolation and one crop per white cell, for any new smear or crop.

        A segmenter whose stage chose the ROI (`info.isolation == "roi"`) isolates from `roi_mask`, the ROI step's
        region of this image, which the caller gives."""
        if self.info.isolation == "roi":
            if roi_mask is None:
                raise SegmentError(
                    "this segmenter isolates cells from the ROI step's mask (its stage found the U-Net "
                    "worse); give the image's ROI mask"
                )
            probability = (roi_mask > 0).astype(np.float32)
            mask = clean_mask(roi_mask, scale, cfg)
        else:
            probability = self.predict_probability(rgb, scale, cfg)
            mask = clean_mask(np.where(probability >= cfg.mask_threshold, 255, 0).astype(np.uint8), scale, cfg)
        blue, refined = blue_channel_isolation(rgb, mask, scale, cfg)
        cells = extract_cells(rgb, refined, cfg, central_only=central_only, blast_centres=blast_centres, scale=scale)
        return Segmentation(probability, mask, blue, refined, isolate(rgb, refined), cells)


def segment_smear(
    segmenter: Segmenter, rgb: np.ndarray, cfg: SegmentConfig, *, scale: float | None = None, preprocess_cfg=None
) -> list[CellCrop]:
    """Cell crops of a new smear. `scale`: its pixel scale; by default the training smears' (the bundle's), else
    from its width. A segmenter that isolates from the ROI computes it with `preprocess_cfg` (the paper's default)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SegmentError(f"a smear must be 8-bit RGB (HxWx3 uint8), got {rgb.dtype} {rgb.shape}")
    if scale is None:
        trained = (segmenter.info.pixel_scales or {}).get("smear", {}).get("scale")
        scale = trained if trained is not None else rgb.shape[1] / REFERENCE_WIDTH
    roi = (
        compute_roi(rgb, preprocess_cfg or PreprocessConfig(), scale).roi_mask
        if segmenter.info.isolation == "roi"
        else None
    )
    result = segmenter.segment(rgb, scale, cfg, roi_mask=roi)
    if not result.cells:
        raise SegmentError("no white cell found in the smear")
    return result.cells


def sliding_window(model, image: np.ndarray, patch: int, overlap: float, batch_size: int) -> np.ndarray:
    """Blend the network's outputs over overlapping windows with a smooth weight (no seams)."""
    height, width = image.shape[:2]
    stride = max(1, int(round(patch * (1 - overlap))))
    padded_h = patch + max(0, int(np.ceil((height - patch) / stride))) * stride
    padded_w = patch + max(0, int(np.ceil((width - patch) / stride))) * stride
    pad_h, pad_w = padded_h - height, padded_w - width
    # reflecting needs a border smaller than the image; tiny images are padded with black
    border = cv2.BORDER_REFLECT_101 if pad_h < height and pad_w < width else cv2.BORDER_CONSTANT
    padded = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, border)
    ramp = np.hanning(patch + 2)[1:-1].astype(np.float32)
    weight = np.outer(ramp, ramp) + 1e-3
    total = np.zeros((padded_h, padded_w), np.float32)
    weights = np.zeros((padded_h, padded_w), np.float32)
    corners = [(y, x) for y in range(0, padded_h - patch + 1, stride) for x in range(0, padded_w - patch + 1, stride)]
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        tiles = np.stack([padded[y : y + patch, x : x + patch] for y, x in chunk]).astype(np.float32)
        predicted = np.asarray(model.predict_on_batch(tiles))[..., 0]
        for (y, x), probability in zip(chunk, predicted):
            total[y : y + patch, x : x + patch] += probability * weight
            weights[y : y + patch, x : x + patch] += weight
    return (total / weights)[:height, :width]
