"""From a white-cell mask to isolated lymphoblasts (paper Fig. 6), with OpenCV only.

The paper transforms the segmented white cells through the blue channel and isolates each on a
black backdrop. In May-Grunwald-Giemsa stains a white cell's nucleus and cytoplasm are
blue-dominant while red cells and plasma are red-dominant, so inside the predicted mask we keep
the pixels whose blue is at least red minus a margin: red cells overlapping a white cell's edge
drop out, and what stays is put on black. Each remaining cell becomes one fixed-size crop that
remembers its smear and position.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from leukemia_mtl.config import SegmentConfig
from leukemia_mtl.masks import drop_small, fill_holes


@dataclass(frozen=True)
class CellCrop:
    index: int
    bbox: tuple[int, int, int, int]  # x, y, w, h of the cell in the source image
    centre: tuple[int, int]
    area: int
    image: np.ndarray  # crop_size x crop_size RGB, black outside this cell, at one magnification (crop_window)
    blast: bool | None  # a known blast centre lies on this cell; None when centres are unknown
    window: tuple[int, int, int] = (
        0,
        0,
        0,
    )  # x, y, side of the square the crop was cut from (may reach past the image)


def _disk(radius: int) -> np.ndarray:
    size = 2 * max(radius, 1) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def clean_mask(mask: np.ndarray, scale: float, cfg: SegmentConfig) -> np.ndarray:
    """Opening against speckle, holes filled, components smaller than a white cell dropped."""
    opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disk(int(round(6 * scale))))
    return drop_small(fill_holes(opened), cfg.min_cell_area * scale * scale)


def blue_channel_isolation(
    rgb: np.ndarray, mask: np.ndarray, scale: float, cfg: SegmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(blue-channel image on black, refined mask): the paper's Fig. 6(b) and the mask of 6(c)."""
    blue, red = rgb[..., 2].astype(np.int16), rgb[..., 0].astype(np.int16)
    blue_dominant = np.where(blue + cfg.blue_margin >= red, 255, 0).astype(np.uint8)
    refined = clean_mask(cv2.bitwise_and(mask, blue_dominant), scale, cfg)
    return cv2.bitwise_and(rgb[..., 2], rgb[..., 2], mask=refined), refined


def isolate(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB where the mask is set, black elsewhere (Fig. 6(c))."""
    return cv2.bitwise_and(rgb, rgb, mask=mask)


def extract_cells(
    rgb: np.ndarray,
    mask: np.ndarray,
    cfg: SegmentConfig,
    *,
    central_only: bool = False,
    blast_centres: tuple[tuple[int, int], ...] | None = None,
    scale: float = 1.0,
) -> list[CellCrop]:
    """One crop per connected cell of `mask`; `central_only` keeps the cell nearest the centre
    (ALL-IDB2-style single-cell images). Crops are windows of `crop_window` (at pixel scale `scale`)
    centred on their cell, so every crop has one magnification and keeps its cell's size."""
    height, width = mask.shape
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    candidates = []
    for index in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[index])
        touches = x == 0 or y == 0 or x + w == width or y + h == height
        if cfg.drop_border_cells and touches and not central_only:
            continue
        candidates.append((index, x, y, w, h, area))
    if central_only and candidates:
        centre = np.array([width / 2, height / 2])
        candidates = [min(candidates, key=lambda c: float(np.linalg.norm(centroids[c[0]] - centre)))]

    crops = []
    for index, x, y, w, h, area in candidates:
        side = int(np.ceil(max(w, h) * (1 + 2 * cfg.crop_margin)))
        if cfg.crop_window > 0:
            side = max(side, int(round(cfg.crop_window * scale)))  # a larger cell keeps its margin
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        window = (slice(max(y0, 0), min(y0 + side, height)), slice(max(x0, 0), min(x0 + side, width)))
        cell = np.where((labels[window] == index)[..., None], rgb[window], 0).astype(np.uint8)
        cell = cv2.copyMakeBorder(
            cell,
            max(-y0, 0),
            max(y0 + side - height, 0),
            max(-x0, 0),
            max(x0 + side - width, 0),
            cv2.BORDER_CONSTANT,
            value=(0, 0, 0),
        )
        interpolation = cv2.INTER_AREA if side > cfg.crop_size else cv2.INTER_LINEAR
        image = cv2.resize(cell, (cfg.crop_size, cfg.crop_size), interpolation=interpolation)
        blast = None
        if blast_centres is not None:
            blast = any(0 <= py < height and 0 <= px < width and labels[py, px] == index for px, py in blast_centres)
        crops.append(
            CellCrop(
                index=len(crops),
                bbox=(x, y, w, h),
                centre=(int(round(cx)), int(round(cy))),
                area=area,
                image=image,
                blast=blast,
                window=(x0, y0, side),
            )
        )
    return crops
