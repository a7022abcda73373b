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
class SegmentRequest:
    """One image for `Segmenter.segment_many`: its pixels, pixel scale, and what `segment` takes besides."""

    rgb: np.ndarray
    scale: float
    central_only: bool = False
    blast_centres: tuple[tuple[int, int], ...] | None = None
    roi_mask: np.ndarray | None = None


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

    def _working_image(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        """`rgb` resized to the working scale, where the network was trained."""
        height, width = rgb.shape[:2]
        factor = self.resize_factor(scale)
        if abs(factor - 1) < 1e-6:
            return rgb
        return cv2.resize(
            rgb,
            (max(1, round(width * factor)), max(1, round(height * factor))),
            interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR,
        )

    def predict_probability(self, rgb: np.ndarray, scale: float, cfg: SegmentConfig) -> np.ndarray:
        """WBC probability per pixel of `rgb` (pixel scale `scale`), at the image's own size."""
        return self.predict_probabilities([(rgb, scale)], cfg)[0]

    def predict_probabilities(
        self,
        images: list[tuple[np.ndarray, float]],
        cfg: SegmentConfig,
        forward=None,
        windows_per_call: int | None = None,
    ) -> list[np.ndarray]:
        """`predict_probability` of several (rgb, scale) images, their windows pooled into calls of at most
        `windows_per_call` (default `cfg.predict_batch_size`) windows, so a batch of small images costs full calls
        rather than one partial call each (issue 35). `forward`: a numpy-in, numpy-out call of the network
        (`bundles.compiled_forward`); by default its `predict_on_batch`, as the pipeline's stages call it."""
        call = forward or (lambda tiles: np.asarray(self.model.predict_on_batch(tiles)))
        windows = [
            SlidingWindows(self._working_image(rgb, scale), self.info.patch_size, cfg.window_overlap)
            for rgb, scale in images
        ]
        predicted: list[list[np.ndarray]] = [[] for _ in windows]
        # the windows of all images in order, cut a call's worth at a time: memory holds one call's tiles
        every = [(k, corner) for k, window in enumerate(windows) for corner in window.corners]
        size = windows_per_call or cfg.predict_batch_size
        for start in range(0, len(every), size):
            chunk = every[start : start + size]
            outputs = call(np.stack([windows[k].tile(corner) for k, corner in chunk]).astype(np.float32))[..., 0]
            for (k, _), output in zip(chunk, outputs):
                predicted[k].append(output)
        probabilities = []
        for (rgb, _), window, outputs in zip(images, windows, predicted):
            probability = window.blend(outputs)
            height, width = rgb.shape[:2]
            if probability.shape != (height, width):
                probability = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
            probabilities.append(probability)
        return probabilities

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
        request = SegmentRequest(rgb, scale, central_only=central_only, blast_centres=blast_centres, roi_mask=roi_mask)
        return self.segment_many([request], cfg)[0]

    def segment_many(
        self, requests: list[SegmentRequest], cfg: SegmentConfig, forward=None, windows_per_call: int | None = None
    ) -> list[Segmentation]:
        """`segment` of several images, the U-Net's windows of all of them pooled (`predict_probabilities`)."""
        if self.info.isolation == "roi":
            if any(r.roi_mask is None for r in requests):
                raise SegmentError(
                    "this segmenter isolates cells from the ROI step's mask (its stage found the U-Net "
                    "worse); give the image's ROI mask"
                )
            probabilities = [(r.roi_mask > 0).astype(np.float32) for r in requests]
            masks = [clean_mask(r.roi_mask, r.scale, cfg) for r in requests]
        else:
            probabilities = self.predict_probabilities(
                [(r.rgb, r.scale) for r in requests], cfg, forward, windows_per_call
            )
            masks = [
                clean_mask(np.where(p >= cfg.mask_threshold, 255, 0).astype(np.uint8), r.scale, cfg)
                for r, p in zip(requests, probabilities)
            ]
        results = []
        for r, probability, mask in zip(requests, probabilities, masks):
            blue, refined = blue_channel_isolation(r.rgb, mask, r.scale, cfg)
            cells = extract_cells(
                r.rgb, refined, cfg, central_only=r.central_only, blast_centres=r.blast_centres, scale=r.scale
            )
            results.append(Segmentation(probability, mask, blue, refined, isolate(r.rgb, refined), cells))
        return results


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


class SlidingWindows:
    """Overlapping patch-sized windows over an image (reflect-padded to whole strides), and their outputs blended
    back with a smooth weight (no seams). Cutting and blending are apart so windows of many images can share the
    network's calls."""

    def __init__(self, image: np.ndarray, patch: int, overlap: float) -> None:
        self.height, self.width = image.shape[:2]
        self.patch = patch
        stride = max(1, int(round(patch * (1 - overlap))))
        padded_h = patch + max(0, int(np.ceil((self.height - patch) / stride))) * stride
        padded_w = patch + max(0, int(np.ceil((self.width - patch) / stride))) * stride
        pad_h, pad_w = padded_h - self.height, padded_w - self.width
        # reflecting needs a border smaller than the image; tiny images are padded with black
        border = cv2.BORDER_REFLECT_101 if pad_h < self.height and pad_w < self.width else cv2.BORDER_CONSTANT
        self.padded = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, border)
        self.corners = [
            (y, x) for y in range(0, padded_h - patch + 1, stride) for x in range(0, padded_w - patch + 1, stride)
        ]

    def tile(self, corner: tuple[int, int]) -> np.ndarray:
        """The window at `corner` (one of `corners`), a view of the padded image."""
        y, x = corner
        return self.padded[y : y + self.patch, x : x + self.patch]

    def blend(self, predicted) -> np.ndarray:
        """The windows' outputs ((patch, patch) each, in `corners`' order) as one map of the image's size."""
        p = self.patch
        ramp = np.hanning(p + 2)[1:-1].astype(np.float32)
        weight = np.outer(ramp, ramp) + 1e-3
        total = np.zeros(self.padded.shape[:2], np.float32)
        weights = np.zeros(self.padded.shape[:2], np.float32)
        for (y, x), probability in zip(self.corners, predicted):
            total[y : y + p, x : x + p] += probability * weight
            weights[y : y + p, x : x + p] += weight
        return (total / weights)[: self.height, : self.width]
