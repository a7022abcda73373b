"""The paper's first stage: RGB offsets, monochrome, fixed threshold -> region of interest; and a finder
that holds across labs' stains ('nuclear': the nuclear stain's optical density, chosen on real annotated smears
of four labs, BENCHMARKS.md).

The paper adds red +88, green +41, blue +20 (saturating), converts to monochrome and thresholds
at 98. Stained nuclei are the darkest, bluest pixels of a smear: the offsets lift red cells and
plasma well above 98 while nuclei stay below it, so the ROI is the set of pixels *below* the
threshold. The raw mask marks nuclei and specks; a documented clean-up (closing, dropping
components smaller than a white cell's nucleus, growing by a margin, filling holes) turns it
into a region around each white cell. Both masks are kept: the raw one is the paper's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from leukemia_mtl import report
from leukemia_mtl.artifacts import log_metrics
from leukemia_mtl.config import (
    LARGEST_WHITE_CELL_UM,
    REFERENCE_NUCLEUS_AREA,
    REFERENCE_PIXEL_SIZE_UM,
    REFERENCE_RED_CELL_DIAMETER,
    REFERENCE_WIDTH,
    SCALE_DISAGREEMENT,
    DataConfig,
    PreprocessConfig,
    Profile,
)
from leukemia_mtl.data.annotated import measured_finder
from leukemia_mtl.data.datasets import Dataset, load_datasets
from leukemia_mtl.data.images import read_image, read_mask
from leukemia_mtl.data.layout import DATA_DIR
from leukemia_mtl.data.shortcuts import camera_of
from leukemia_mtl.errors import DatasetError, Problem
from leukemia_mtl.io_utils import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    read_csv,
    write_image,
)
from leukemia_mtl.masks import drop_small, fill_holes, mask_agreement
from leukemia_mtl.report import figure_png, new_figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoiResult:
    monochrome: np.ndarray  # offset image in grey, uint8 HxW
    raw_mask: np.ndarray  # the paper's threshold mask, 0/255
    roi_mask: np.ndarray  # cleaned region around white cells, 0/255
    roi_image: np.ndarray  # RGB with everything outside the ROI black
    boxes: list[tuple[int, int, int, int]]  # (x, y, w, h) per region
    areas: list[int] = field(default_factory=list)  # pixels per region, in the order of `boxes`


@dataclass(frozen=True)
class PixelScale:
    """How many of an image's pixels span one of ALL-IDB1's (the unit of every size in the settings).

    `scale` is None when nothing gave or measured it: each image then gets the old assumption from its own
    width (`width_guess`), and `source` says so."""

    scale: float | None
    source: str  # "given (...)", "estimated from the nuclei of N images", or what was assumed and why
    single_cell: bool = False
    # camera (EXIF make and model, else image size) -> its own estimate, where a dataset mixes cameras
    cameras: dict[str, float] = field(default_factory=dict)
    # what a reader must hear: the two rulers (red cells, nuclei) disagree
    warnings: tuple[str, ...] = ()

    def of(self, width: int, camera: str | None = None) -> float:
        if camera in self.cameras:
            return self.cameras[camera]
        return self.scale if self.scale is not None else round(width_guess(width, self.single_cell), 4)

    @property
    def pixel_size_um(self) -> float | None:
        return None if self.scale is None else round(REFERENCE_PIXEL_SIZE_UM / self.scale, 4)

    @property
    def assumed(self) -> bool:
        return self.scale is None


def scale_of(pixel_size_um: float) -> float:
    return REFERENCE_PIXEL_SIZE_UM / pixel_size_um


def given_pixel_size(data_cfg: DataConfig, single_cell: bool) -> float:
    """The configured pixel size (um) of smears or single-cell images; 0 when it is to be estimated."""
    return (data_cfg.cells_pixel_size_um or data_cfg.pixel_size_um) if single_cell else data_cfg.pixel_size_um


def width_guess(width: int, single_cell: bool) -> float:
    """The old assumption, kept only as a last resort: a smear is ALL-IDB1's field at its width, a crop ALL-IDB2's."""
    return 1.0 if single_cell else width / REFERENCE_WIDTH


def nucleus_area(rgb: np.ndarray, cfg: PreprocessConfig, single_cell: bool) -> float | None:
    """The typical white-cell nucleus area of one image (px): the median of its raw mask's large components
    (those of at least 0.3 of the largest: specks and lobes fall out), the largest in a single-cell image."""
    if cfg.threshold_method == "nuclear":
        # the ruler is the adaptive level's nuclei, whose size was measured against four labs' boxes (+3..+26 %);
        # the nuclear finder's masks take in the granules around a nucleus and read 25-36 % larger on all four
        cfg = dataclasses.replace(cfg, threshold_method="adaptive")
    raw = raw_mask(rgb, cfg)
    if cfg.threshold_method == "fixed":  # 'adaptive' has done this already: a scale bar's label is no nucleus
        raw = drop_unstained(raw, rgb, cfg.min_stain_saturation)
    raw = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    _, _, stats, _ = cv2.connectedComponentsWithStats(raw, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    if not areas.size or areas.max() < 16:
        return None
    return float(areas.max()) if single_cell else float(np.median(areas[areas >= 0.3 * areas.max()]))


@dataclass(frozen=True)
class ScaleFinding:
    """A scale measured on a sample of images, with the ruler it was read from and the other ruler's reading."""

    scale: float
    images: int  # images the ruler measured
    ruler: str  # "red cells" or "nuclei"
    other: float | None = None  # the nuclei's estimate beside the red cells', where both measured

    @property
    def disagreement(self) -> float:
        """Larger over smaller of the two estimates (1: they agree, or only one ruler measured)."""
        return max(self.scale, self.other) / min(self.scale, self.other) if self.other else 1.0


def measure_scale(images, cfg: PreprocessConfig, single_cell: bool) -> ScaleFinding | None:
    """The scale of images from one camera, in one pass: read from the red cells where at least a quarter of the
    images show them standing apart (smears: 7.5 um in every lab), else from the nuclei where at least half show
    one (single-cell crops, crowded fields). None where neither ruler finds enough. Each ruler takes the median
    over the images it measured.

    Over a dataset (or one camera of it), not per image: nucleus size is itself an FAB criterion (L1 small, L2
    large), so a per-image estimate would scale it away; one camera's images share one scale.
    """
    areas, radii, count = [], [], 0
    for rgb in images:
        count += 1
        areas.append(nucleus_area(rgb, cfg, single_cell))
        if not single_cell:
            radii.append(red_cell_radius(rgb))
    by_nuclei = _median_scale(
        [a for a in areas if a is not None], count, 0.5, lambda area: np.sqrt(area / REFERENCE_NUCLEUS_AREA)
    )
    # the disc test keeps only red cells standing apart, so a quarter of the images is enough (single-cell-centred
    # fields show few): what it keeps is red cells, where a threshold that misses the stain passes specks as nuclei
    by_red_cells = _median_scale(
        [r for r in radii if r is not None], count, 0.25, lambda r: 2 * r / REFERENCE_RED_CELL_DIAMETER
    )
    if by_red_cells is not None:
        return ScaleFinding(*by_red_cells, "red cells", by_nuclei[0] if by_nuclei else None)
    return ScaleFinding(*by_nuclei, "nuclei") if by_nuclei is not None else None


def _median_scale(values: list[float], count: int, least_share: float, to_scale) -> tuple[float, int] | None:
    """(scale of the median value, values) where at least `least_share` of the `count` images gave one (a ruler
    that fits only a few images is measuring something else: specks for nuclei under a threshold that misses the
    stain)."""
    if not values or len(values) < least_share * count:
        return None
    return round(float(to_scale(float(np.median(values)))), 4), len(values)


def red_cell_radius(rgb: np.ndarray) -> float | None:
    """The typical red-cell radius of one smear (px), or None where too few red cells stand apart.

    Red cells are the mass of the field that is darker than the background in green (haemoglobin absorbs it;
    Otsu's level). Each connected piece's largest distance to the background is its inscribed radius; pieces
    shaped like one disc (area within 0.7-1.5x that of their inscribed circle) are single cells, clumps are not;
    the median of their equal-area radii (an oval's inscribed radius is its smaller half-axis), weighted by area
    (platelets and specks are disc-like but small)."""
    green = np.ascontiguousarray(rgb[..., 1])
    _, mask = cv2.threshold(green, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    mask = fill_holes(cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    inscribed = np.zeros(count, np.float64)
    inside = mask > 0  # the background's distances are 0: only the pieces' pixels matter
    np.maximum.at(inscribed, labels[inside], cv2.distanceTransform(mask, cv2.DIST_L2, 5)[inside])
    radii, areas = inscribed[1:], stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    disc = (radii >= 3) & (areas >= 0.7 * np.pi * radii**2) & (areas <= 1.5 * np.pi * radii**2)
    if disc.sum() < 3:
        return None
    radii, areas = np.sqrt(areas[disc] / np.pi), areas[disc]  # the disc of the same area: an oval's mean radius
    order = np.argsort(radii)
    return float(radii[order][np.searchsorted(np.cumsum(areas[order]) / areas.sum(), 0.5)])


# a camera's share of a dataset's images from which it gets its own pixel-scale estimate
MIN_CAMERA_SHARE = 0.1


def dataset_scale(
    dataset: Dataset, cfg: PreprocessConfig, data_cfg: DataConfig, cameras: list[str] | None = None
) -> PixelScale:
    """The pixel scale of a dataset: from its configured pixel size, else estimated on a sample of its images, and
    per camera where it mixes cameras (`cameras`: each record's, from `camera_of`): ALL-IDB1's two cameras differ
    in magnification, and one scale for both would shrink one camera's cells or swell the other's.

    A camera gets its own estimate when it holds at least `MIN_CAMERA_SHARE` of the images (and 5); the rest share
    the dataset's. Nucleus size within a camera (an FAB criterion) survives; between cameras it cannot be told from
    magnification, which is one more reason the shortcut check (data/shortcuts.py) names a camera that follows the
    classes."""
    given = given_pixel_size(data_cfg, dataset.single_cell)
    if given:
        return PixelScale(round(scale_of(given), 4), f"given ({given:g} um per pixel)", dataset.single_cell)
    records = dataset.records

    def estimate_on(indices: list[int]) -> ScaleFinding | None:
        picks = sorted(
            {
                indices[int(i)]
                for i in np.linspace(0, len(indices) - 1, min(len(indices), cfg.scale_sample_images)).round()
            }
        )
        images = (
            read_image(records[i].path, max_pixels=data_cfg.max_pixels, min_side=data_cfg.min_side).rgb for i in picks
        )
        return measure_scale(images, cfg, dataset.single_cell) if indices else None

    estimate = estimate_on(list(range(len(records))))
    per_camera: dict[str, ScaleFinding] = {}
    if cameras is not None and len(set(cameras)) > 1:
        by_camera: dict[str, list[int]] = {}
        for index, camera in enumerate(cameras):
            by_camera.setdefault(camera, []).append(index)
        large = {c: idx for c, idx in by_camera.items() if len(idx) >= max(5, MIN_CAMERA_SHARE * len(records))}
        if len(large) > 1:
            per_camera = {c: found for c, idx in sorted(large.items()) if (found := estimate_on(idx)) is not None}
    if estimate is None and not per_camera:
        return PixelScale(
            None,
            "assumed from each image's width against ALL-IDB's (no nucleus or red cell found to "
            "estimate it from; give data.pixel_size_um)",
            dataset.single_cell,
        )
    if estimate is None:  # every camera with an estimate has its own; the others take their median
        estimate = ScaleFinding(round(float(np.median([f.scale for f in per_camera.values()])), 4), 0, "cameras")
    # the dataset-wide estimate is checked only where some image uses it (a camera without its own)
    others = cameras is None or any(camera not in per_camera for camera in cameras)
    checked = ([("", estimate)] if others else []) + list(per_camera.items())
    warnings = tuple(
        f"{dataset.name}{f' ({camera})' if camera else ''}: the pixel scale from the red cells ({found.scale:g}) and from "
        f"the nuclei ({found.other:g}) disagree by {found.disagreement - 1:.0%}; the red cells' is used (7.5 um in every "
        "lab; nucleus size varies with the cells). Check the ROI page's overlay, or give data.pixel_size_um"
        for camera, found in checked
        if found.disagreement > SCALE_DISAGREEMENT
    )
    source = f"estimated from the {estimate.ruler} of {estimate.images} images" + _beside(estimate)
    if per_camera:
        source = (
            "estimated per camera: "
            + ", ".join(
                f"{camera} {found.scale:g} ({found.ruler}, {found.images} images{_beside(found, short=True)})"
                for camera, found in per_camera.items()
            )
            + f"; other cameras {estimate.scale:g}"
        )
    return PixelScale(
        estimate.scale, source, dataset.single_cell, {c: f.scale for c, f in per_camera.items()}, warnings
    )


def _scale_words(scale: PixelScale) -> str:
    """The scale for a log line: a number only where there is one (never 'None um per pixel')."""
    cameras = f"; per camera {', '.join(f'{k}: {v:g}' for k, v in scale.cameras.items())}" if scale.cameras else ""
    if scale.pixel_size_um is None:
        return f"from each image's width ({scale.source}){cameras}"
    return f"{scale.scale:g} of ALL-IDB1's ({scale.pixel_size_um:g} um per pixel), {scale.source}{cameras}"


def _beside(found: ScaleFinding, short: bool = False) -> str:
    """The other ruler's reading, for the record."""
    if not found.other:
        return ""
    return f"; nuclei {found.other:g}" if short else f" (the nuclei say {found.other:g})"


def offset_monochrome(rgb: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    offsets = (float(cfg.offset_red), float(cfg.offset_green), float(cfg.offset_blue), 0.0)
    shifted = cv2.add(rgb, offsets)  # uint8 saturating add
    return cv2.cvtColor(shifted, cv2.COLOR_RGB2GRAY)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Each channel's optical density (Beer-Lambert, -log(I / I0)) against the image's own background, its 99th
    percentile per channel: a brighter lamp, a paler stain or another white balance divides every channel by the
    same factor and leaves the stains' proportions as they are. float32 HxWx3, 0 at the background."""
    pixels = rgb.reshape(-1, 3)
    background = np.percentile(pixels[:: max(1, len(pixels) // 100_000)], 99, axis=0).astype(np.float32)
    density = -np.log((rgb.astype(np.float32) + 1) / (background + 1))
    return np.maximum(density, 0, out=density)


# optical density in 1/DENSITY_STEPS steps when Otsu's level is taken on it (8-bit histogram, up to 2.55)
DENSITY_STEPS = 100


def _otsu_density(values: np.ndarray) -> float:
    steps = np.clip(values * DENSITY_STEPS, 0, 255).astype(np.uint8)
    if int(steps.min()) == int(steps.max()):
        return float("inf")
    level, _ = cv2.threshold(steps.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return float(level) / DENSITY_STEPS


def nuclear_density(density: np.ndarray) -> np.ndarray:
    """The nuclear stain's share of each pixel's optical density: green's minus blue's. Romanowsky stains colour
    nuclei violet (they absorb green strongly and blue hardly at all) and red cells pink (green and blue alike),
    and grey or black (a scale bar's label, dust) absorbs all three alike: only nuclei, and the platelets that
    the size clean-up drops, stand out. On txl-pbc's four labs nuclei measure 0.74-1.78 and red cells -0.03-0.22."""
    return density[..., 1] - density[..., 2]


def roi_threshold(mono: np.ndarray, cfg: PreprocessConfig) -> float:
    """The grey level below which a pixel is a stained nucleus.

    'fixed' is the paper's 98. 'adaptive' finds it in the image: Otsu's level over all pixels separates
    the bright background from the cells, and Otsu's level among the cells' pixels separates the dark
    nuclei from the red cells, so a lighter or darker stain moves the level with it.
    """
    if cfg.threshold_method == "fixed":
        return float(cfg.threshold)
    background, _ = cv2.threshold(mono, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    cells = mono[mono < background]
    if cells.size < 2 or int(cells.min()) == int(cells.max()):
        return 0.0  # nothing darker than the background: no nucleus
    level, _ = cv2.threshold(cells.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    return float(level)


def drop_unstained(mask: np.ndarray, rgb: np.ndarray, min_saturation: int) -> np.ndarray:
    """`mask` without the regions whose mean saturation says they are grey or black, not stain."""
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    if count <= 1:
        return mask
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float64)
    sums = np.bincount(labels.ravel(), weights=saturation.ravel(), minlength=count)
    sizes = np.bincount(labels.ravel(), minlength=count)
    stained = sums / np.maximum(sizes, 1) >= min_saturation
    stained[0] = False
    return np.where(stained[labels], 255, 0).astype(np.uint8)


def raw_mask(
    rgb: np.ndarray, cfg: PreprocessConfig, mono: np.ndarray | None = None, density: np.ndarray | None = None
) -> np.ndarray:
    """The threshold mask before clean-up: stained nuclei (and specks), 0/255."""
    if cfg.threshold_method == "nuclear":
        nuclear = nuclear_density(optical_density(rgb) if density is None else density)
        level = max(cfg.nuclear_min_density, _otsu_density(nuclear))
        return np.where(nuclear > level, 255, 0).astype(np.uint8)
    mono = offset_monochrome(rgb, cfg) if mono is None else mono
    _, raw = cv2.threshold(mono, roi_threshold(mono, cfg), 255, cv2.THRESH_BINARY_INV)
    if cfg.threshold_method == "adaptive":
        raw = drop_unstained(raw, rgb, cfg.min_stain_saturation)
    return raw


def compute_roi(rgb: np.ndarray, cfg: PreprocessConfig, scale: float = 1.0) -> RoiResult:
    """ROI of one RGB image (uint8 HxWx3); `scale` is its pixel scale (see `PixelScale`)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"compute_roi needs 8-bit RGB (HxWx3 uint8), got {rgb.dtype} {rgb.shape}")
    mono = offset_monochrome(rgb, cfg)
    density = optical_density(rgb) if cfg.threshold_method == "nuclear" else None
    raw = raw_mask(rgb, cfg, mono, density)

    close_px = max(3, int(round(cfg.roi_margin * 0.5 * scale)) | 1)
    closed = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px)))
    nuclei = drop_small(closed, cfg.min_component_area * scale * scale)

    margin_px = int(round(cfg.roi_margin * scale))
    grown = nuclei
    if margin_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1, 2 * margin_px + 1))
        grown = cv2.dilate(nuclei, kernel)
    if density is not None:  # each nucleus grows over its own cell only, not into the plasma
        grown = _over_cells(grown, nuclei, density, cfg.cell_extent_level)
    roi = fill_holes(grown)
    if density is not None and cfg.split_touching:
        pixel_um = REFERENCE_PIXEL_SIZE_UM / scale
        roi = split_touching(
            roi, nuclei, cfg.split_core_fraction, cfg.split_min_nucleus_um2 / pixel_um**2, cfg.split_neck_fraction
        )

    count, _, stats, _ = cv2.connectedComponentsWithStats(roi, connectivity=8)
    boxes = [tuple(int(v) for v in stats[i, :4]) for i in range(1, count)]
    roi_image = cv2.bitwise_and(rgb, rgb, mask=roi)
    return RoiResult(
        monochrome=mono,
        raw_mask=raw,
        roi_mask=roi,
        roi_image=roi_image,
        boxes=boxes,
        areas=[int(stats[i, cv2.CC_STAT_AREA]) for i in range(1, count)],
    )


# A field no finder can read, named as such (preprocess.field_problem): a grey-level spread below BLANK_CONTRAST is
# blank; more than OVEREXPOSED_SHARE of pixels white in every channel (the cells too, not only the plasma) is
# overexposed; fine detail (the Laplacian's spread over the grey level's, at SHARPNESS_SCALE of ALL-IDB1's pixel
# scale) below SHARPNESS_MIN is out of focus.
# Four labs' smears (txl-pbc) measure 0.13-0.60 and the generator's 0.33-0.46; the same smears blurred by 1 um
# (Gaussian sigma) 0.05-0.15.
BLANK_CONTRAST = 3.0
OVEREXPOSED_SHARE = 0.8
SHARPNESS_SCALE = 0.3
SHARPNESS_MIN = 0.1


def field_problem(rgb: np.ndarray, scale: float) -> str | None:
    """What makes a field unreadable ('blank', 'overexposed', 'out of focus'), or None."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    contrast = float(grey.std())
    if contrast < BLANK_CONTRAST:
        return "blank"
    if float((rgb.min(axis=-1) >= 250).mean()) > OVEREXPOSED_SHARE:
        return "overexposed"
    factor = min(1.0, SHARPNESS_SCALE / scale)
    small = cv2.resize(grey, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA) if factor < 1 else grey
    small = small.astype(np.float32)
    if float(cv2.Laplacian(small, cv2.CV_32F).std()) / max(float(small.std()), 1e-3) < SHARPNESS_MIN:
        return "out of focus"
    return None


# a region of a smear larger than this many of the largest white cells (with the clean-up's margin) is no cell and
# no cluster of touching cells the eye would accept
OVERSIZED_CELLS = 4
OVERSIZED_FIELD = 0.5  # ... or larger than this share of the field


def oversized(result: RoiResult, cfg: PreprocessConfig, scale: float) -> bool:
    """Whether a smear's region is larger than any white cell can be: red cells or plasma taken for cells, or a
    pixel scale that is wrong (the issue's 1440x900 fields read at 3.6x their scale had one region over each)."""
    diameter = (LARGEST_WHITE_CELL_UM / REFERENCE_PIXEL_SIZE_UM + 2 * cfg.roi_margin) * scale
    largest = OVERSIZED_CELLS * np.pi * (diameter / 2) ** 2
    field_area = result.roi_mask.size
    return any(area > min(largest, OVERSIZED_FIELD * field_area) for area in result.areas)


def _over_cells(grown: np.ndarray, nuclei: np.ndarray, density: np.ndarray, extent_level: float) -> np.ndarray:
    """The grown nuclei cut to the cells' pixels (total optical density above `extent_level` of Otsu's level
    between cells and plasma), keeping only the pieces that hold a nucleus: a lymphocyte's region ends where its
    thin rim of cytoplasm does, not a margin further out (on PBC's cells the median IoU with the annotated box
    rose from 0.59 to 0.89)."""
    total = density.sum(axis=-1)
    cells = np.where(total > extent_level * _otsu_density(total), 255, 0).astype(np.uint8)
    pieces = cv2.bitwise_or(cv2.bitwise_and(grown, cells), nuclei)
    count, labels = cv2.connectedComponents(pieces, connectivity=8)
    return np.where(_holding(labels, count, nuclei), 255, 0).astype(np.uint8)


def _holding(labels: np.ndarray, count: int, nuclei: np.ndarray) -> np.ndarray:
    """Per pixel: whether its component (of `labels`, `count` of them, 0 the background) holds a nucleus pixel."""
    holds = np.zeros(count, bool)
    holds[np.unique(labels[nuclei > 0])] = True
    holds[0] = False
    return holds[labels]


def split_touching(
    roi: np.ndarray, nuclei: np.ndarray, core_fraction: float, min_nucleus_px: float, neck_fraction: float
) -> np.ndarray:
    """`roi` with touching cells cut apart, so that each region is one cell (ALL's blasts cluster), in two passes.

    1. By their nuclei: a region holding two or more nucleus pieces of at least `min_nucleus_px` pixels (smaller
       ones are lobes or fragments, no cell's own) is shared out, each pixel to its nearest such piece; two shares
       whose border is no neck (at least `neck_fraction` of the smaller share's diameter) are one cell again: a
       lobed neutrophil's lobes divide a round cell across its whole width, touching cells meet along a waist.
    2. By their outline: a region still holding two or more nuclear cores (touching blasts' nuclei touch too: one
       piece, two thick parts) whose own shape has two or more cores (distance to its edge above `core_fraction` of
       its largest) is cut along the neck between them (marker watershed on that distance).

    Each cut is carved 2-3 px wide where two cells meet, so the pieces are separate components; a piece that is no
    cell (no nucleus, or under MIN_PIECE of its region) joins its neighbour again."""
    if not (nuclei > 0).any():
        return roi
    roi = _carve(
        roi,
        nuclei,
        lambda cut_roi, regions, count: _owners_by_nucleus(
            cut_roi, regions, count, nuclei, min_nucleus_px, neck_fraction
        ),
    )
    return _carve(
        roi, nuclei, lambda cut_roi, regions, count: _owners_by_outline(cut_roi, regions, count, nuclei, core_fraction)
    )


def _several(regions: np.ndarray, count: int, inside: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per region: whether it holds two or more of `labels` (on the nuclei's pixels)."""
    pairs = np.unique(np.stack([regions[inside], labels[inside]]), axis=1)
    several = np.bincount(pairs[0][pairs[1] > 0], minlength=count) >= 2
    several[0] = False
    return several


def _owners_by_nucleus(roi, regions, count, nuclei, min_nucleus_px, neck_fraction) -> np.ndarray | None:
    piece_count, pieces = cv2.connectedComponents(nuclei, connectivity=8)
    inside = nuclei > 0
    own = np.bincount(pieces[inside], minlength=piece_count) >= min_nucleus_px
    own[0] = False
    owning = inside & own[pieces]
    several = _several(regions, count, owning, pieces)
    if not several.any():
        return None
    _, nearest = cv2.distanceTransformWithLabels(
        np.where(owning, 0, 255).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    piece_of = np.zeros(int(nearest.max()) + 1, np.int32)
    piece_of[nearest[owning]] = pieces[owning]
    return _joined_across_wide_borders(np.where(several[regions] & (roi > 0), piece_of[nearest], 0), neck_fraction)


def _joined_across_wide_borders(owners: np.ndarray, neck_fraction: float) -> np.ndarray:
    """`owners` (a share label per pixel of the regions to cut) with neighbouring shares made one while the widest
    border between two of them is at least `neck_fraction` of the smaller share's equivalent diameter, the widest
    first; region by region, in its own window."""
    count, regions, stats, _ = cv2.connectedComponentsWithStats((owners > 0).astype(np.uint8), connectivity=8)
    joined = owners.copy()
    for region in range(1, count):
        x, y, width, height = (int(v) for v in stats[region, :4])
        window = (slice(y, y + height), slice(x, x + width))
        inside = regions[window] == region
        shares = _join_shares(np.where(inside, owners[window], 0), neck_fraction)
        joined[window] = np.where(inside, shares, joined[window])
    return joined


def _join_shares(shares: np.ndarray, neck_fraction: float) -> np.ndarray:
    while True:
        labels, compact = np.unique(shares, return_inverse=True)
        compact = compact.reshape(shares.shape)
        if len(labels) <= 2:  # the background and one share
            return shares
        count = len(labels)
        diameter = 2 * np.sqrt(np.bincount(compact.ravel(), minlength=count) / np.pi)
        widest, width = None, 0.0
        for low, high, length in _borders(compact, count):
            ratio = length / min(diameter[low], diameter[high])
            if ratio > width:
                widest, width = (low, high), ratio
        if widest is None or width < neck_fraction:
            return shares
        shares = np.where(compact == widest[1], labels[widest[0]], shares)


def _borders(labels: np.ndarray, count: int):
    """(label, label, length) per pair of labels that touch (4-neighbours, background 0 aside); the length is the
    chord of the border (the spread of its points along their main direction, plus one pixel), the same for a
    border at any angle: counting pixel pairs would read a diagonal border 1.4 times as long."""
    across, down = (labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])
    points, pairs = [], []
    for (first, second), offset in ((across, (0.0, 0.5)), (down, (0.5, 0.0))):
        meet = (first > 0) & (second > 0) & (first != second)
        ys, xs = np.nonzero(meet)
        points.append(np.stack([ys + offset[0], xs + offset[1]], axis=1))
        pairs.append(
            np.minimum(first[meet], second[meet]).astype(np.int64) * count + np.maximum(first[meet], second[meet])
        )
    points, pairs = np.concatenate(points), np.concatenate(pairs)
    for pair in np.unique(pairs):
        spots = points[pairs == pair]
        centred = spots - spots.mean(axis=0)
        direction = np.linalg.svd(centred, full_matrices=False)[2][0] if len(spots) > 1 else np.array([1.0, 0.0])
        along = centred @ direction
        yield int(pair // count), int(pair % count), float(along.max() - along.min() + 1.0)


def _owners_by_outline(roi, regions, count, nuclei, core_fraction) -> np.ndarray | None:
    inside = nuclei > 0
    _, nucleus_labels = cv2.connectedComponents(nuclei, connectivity=8)
    nucleus_distance = cv2.distanceTransform(nuclei, cv2.DIST_L2, 5)
    nucleus_largest = np.zeros(int(nucleus_labels.max()) + 1, np.float32)
    np.maximum.at(nucleus_largest, nucleus_labels.ravel(), nucleus_distance.ravel())
    _, nucleus_cores = cv2.connectedComponents(
        (inside & (nucleus_distance > core_fraction * nucleus_largest[nucleus_labels])).astype(np.uint8), connectivity=8
    )
    several = _several(regions, count, inside, nucleus_cores)
    if not several.any():
        return None
    distance = cv2.distanceTransform(roi, cv2.DIST_L2, 5)
    largest = np.zeros(count, np.float32)
    np.maximum.at(largest, regions.ravel(), distance.ravel())
    cores = (distance > core_fraction * largest[regions]) & several[regions]
    core_count, markers = cv2.connectedComponents(cores.astype(np.uint8), connectivity=8)
    markers = markers.astype(np.int32)
    whole = (roi > 0) & ~several[regions]  # a region not to cut is its own marker
    markers[whole] = core_count + regions[whole]
    markers[roi == 0] = core_count + count  # the plasma
    landscape = np.clip(255 - distance * (255.0 / max(float(distance.max()), 1.0)), 0, 255).astype(np.uint8)
    cv2.watershed(cv2.cvtColor(landscape, cv2.COLOR_GRAY2BGR), markers)
    return np.where(several[regions] & (markers > 0) & (markers < core_count), markers, 0)


def _carve(roi: np.ndarray, nuclei: np.ndarray, owners_of) -> np.ndarray:
    """`roi` cut where two owners (from `owners_of(roi, regions, count)`: a cell label per pixel, 0 none) meet."""
    count, regions = cv2.connectedComponents(roi, connectivity=8)
    owners = owners_of(roi, regions, count) if count > 1 else None
    if owners is None:
        return roi
    owned = (owners > 0) & (roi > 0)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    beyond = float(owners.max() + 1)
    lowest = cv2.erode(np.where(owned, owners, beyond).astype(np.float32), kernel)
    highest = cv2.dilate(np.where(owned, owners, 0).astype(np.float32), kernel)
    cut = (roi > 0) & (highest > 0) & (lowest < beyond) & (lowest != highest)
    carved = np.where(cut, 0, roi).astype(np.uint8)
    piece_count, pieces, stats, _ = cv2.connectedComponentsWithStats(carved, connectivity=8)
    region_of_piece = np.zeros(piece_count, np.int64)
    region_of_piece[pieces.ravel()] = regions.ravel()
    region_area = np.bincount(regions.ravel(), minlength=count)
    fair = stats[:, cv2.CC_STAT_AREA] >= MIN_PIECE * region_area[region_of_piece]
    no_cell = (pieces > 0) & ~(_holding(pieces, piece_count, nuclei) & fair[pieces])
    if no_cell.any():
        rejoin = cv2.dilate(no_cell.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))) > 0
        carved[rejoin & cut] = 255
    return carved


# the smallest share of a region that a piece cut from it may have (smaller: a sliver, and the cut is undone)
MIN_PIECE = 0.15


def cell_recall(boxes: list[tuple[int, int, int, int]], centres: tuple[tuple[int, int], ...]) -> float:
    """Share of known blast centres that fall inside some ROI box."""
    if not centres:
        return 1.0
    hits = sum(any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in boxes) for cx, cy in centres)
    return hits / len(centres)


@dataclass
class PreprocessSummary:
    images: int
    with_ground_truth: int
    mean_iou: float | None
    mean_recall: float | None
    mean_precision: float | None
    blast_recall: float | None
    regions: int
    without_region: dict[str, int] = field(default_factory=dict)  # per dataset: images where no cell was found
    oversized: dict[str, int] = field(default_factory=dict)  # per dataset: smears with a region no white cell fills
    # per dataset: problem ('blank', 'overexposed', 'out of focus') -> the images that have it
    unreadable: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    pixel_scales: dict[str, dict[str, object]] = field(default_factory=dict)  # per dataset: scale, um, source
    warnings: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        out = {"images": float(self.images), "roi_regions": float(self.regions)}
        for name in ("mean_iou", "mean_recall", "mean_precision", "blast_recall"):
            value = getattr(self, name)
            if value is not None:
                out[f"roi_{name}"] = round(float(value), 4)
        return out


MANIFEST = "manifest.csv"
MANIFEST_FIELDS = (
    "dataset",
    "image_id",
    "source",
    "label",
    "positive",
    "group",
    "width",
    "height",
    "pixel_scale",
    "roi_fraction",
    "boxes",
    "roi_mask",
    "roi_image",
    "iou",
    "recall",
)


def preprocess_datasets(
    datasets: list[Dataset],
    out_dir: Path | str,
    cfg: PreprocessConfig,
    data_cfg: DataConfig,
    *,
    progress: bool = True,
) -> PreprocessSummary:
    """ROI mask and ROI-only image for every image; a manifest, a summary and an overlay figure.

    Output layout: `<dataset>/roi_masks/<id>.png`, `<dataset>/roi_images/<id>.png`,
    `manifest.csv`, `summary.json`, `overlay.png`. Re-running over the same output overwrites
    each file atomically, so an interrupted run leaves only whole files.
    """
    out = Path(out_dir)
    # outputs written into a dataset would become images (or class folders) of it on the next read
    writes = [out] + [out / d.name / sub for d in datasets for sub in ("roi_masks", "roi_images")]
    for dataset in datasets:
        root = dataset.root.resolve()
        if any(w.resolve() == root or root in w.resolve().parents for w in writes):
            raise DatasetError(
                [Problem(str(out), f"would write into the dataset {dataset.root}; give an output folder outside it")]
            )
    rows: list[dict[str, object]] = []
    scores: list[dict[str, float]] = []
    blast_hits: list[float] = []
    examples: list[tuple[str, np.ndarray, RoiResult]] = []
    shown_labels: set[str] = set()  # one overlay example per class: the figure shows each class
    scales: dict[str, PixelScale] = {}
    too_large: dict[str, int] = {}
    unreadable: dict[str, dict[str, list[str]]] = {}
    for dataset in datasets:
        cameras = [camera_of(record.path) for record in dataset.records]  # file headers only
        scales[dataset.name] = scale = dataset_scale(dataset, cfg, data_cfg, cameras)
        log.info("%s: pixel scale %s", dataset.name, _scale_words(scale))
        for record, camera in tqdm(
            zip(dataset.records, cameras),
            desc=f"preprocess {dataset.name}",
            unit="img",
            total=len(cameras),
            disable=not progress or None,
        ):
            rgb = read_image(record.path, max_pixels=data_cfg.max_pixels, min_side=data_cfg.min_side).rgb
            height, width = rgb.shape[:2]
            image_scale = scale.of(width, camera)
            result = compute_roi(rgb, cfg, image_scale)
            mask_rel = f"{dataset.name}/roi_masks/{record.image_id}.png"
            image_rel = f"{dataset.name}/roi_images/{record.image_id}.png"
            write_image(out / mask_rel, result.roi_mask)
            write_image(out / image_rel, result.roi_image)
            row: dict[str, object] = {
                "dataset": dataset.name,
                "image_id": record.image_id,
                "source": record.rel_path,
                "label": record.label,
                "positive": int(record.positive),
                "group": f"{dataset.name}/{record.group}",
                "width": width,
                "height": height,
                "pixel_scale": image_scale,
                "roi_fraction": round(float(np.count_nonzero(result.roi_mask)) / result.roi_mask.size, 5),
                "boxes": json.dumps(result.boxes),
                "roi_mask": mask_rel,
                "roi_image": image_rel,
                "iou": "",
                "recall": "",
            }
            problem = field_problem(rgb, image_scale)
            if problem:
                unreadable.setdefault(dataset.name, {}).setdefault(problem, []).append(record.rel_path)
            if not dataset.single_cell and oversized(result, cfg, image_scale):
                too_large[dataset.name] = too_large.get(dataset.name, 0) + 1
            if record.mask_path is not None:
                agreement = mask_agreement(
                    result.roi_mask, read_mask(record.mask_path, (width, height), max_pixels=data_cfg.max_pixels)
                )
                scores.append(agreement)
                row["iou"], row["recall"] = round(agreement["iou"], 4), round(agreement["recall"], 4)
            if record.blast_centres:
                blast_hits.append(cell_recall(result.boxes, record.blast_centres))
            if not dataset.single_cell and len(examples) < cfg.overlay_examples and record.label not in shown_labels:
                shown_labels.add(record.label)
                examples.append((f"{dataset.name}/{record.rel_path} ({record.label})", rgb, result))
            rows.append(row)

    atomic_write_csv(out / MANIFEST, MANIFEST_FIELDS, rows)
    _clear_stale(out, rows)
    summary = PreprocessSummary(
        images=len(rows),
        with_ground_truth=len(scores),
        mean_iou=float(np.mean([s["iou"] for s in scores])) if scores else None,
        mean_recall=float(np.mean([s["recall"] for s in scores])) if scores else None,
        mean_precision=float(np.mean([s["precision"] for s in scores])) if scores else None,
        blast_recall=float(np.mean(blast_hits)) if blast_hits else None,
        regions=sum(len(json.loads(str(r["boxes"]))) for r in rows),
        unreadable=unreadable,
    )
    for dataset in datasets:
        scale = scales[dataset.name]
        summary.pixel_scales[dataset.name] = {
            "scale": scale.scale,
            "pixel_size_um": scale.pixel_size_um,
            "source": scale.source,
            "cameras": dict(scale.cameras),
        }
        if scale.assumed:
            summary.warnings.append(f"{dataset.name}: pixel scale {scale.source}")
        summary.warnings.extend(scale.warnings)
        mine = [r for r in rows if r["dataset"] == dataset.name]
        empty = sum(not json.loads(str(r["boxes"])) for r in mine)
        summary.without_region[dataset.name] = empty
        if mine and empty / len(mine) > cfg.warn_empty_fraction:
            summary.warnings.append(
                f"{dataset.name}: the ROI step found no white cell in {empty} of {len(mine)} images "
                f"({empty / len(mine):.0%}); the threshold ({cfg.threshold_method}) does not fit this stain or camera "
                + (
                    "(try preprocess.threshold_method=nuclear)"
                    if cfg.threshold_method != "nuclear"
                    else "(check the pixel scale: data.pixel_size_um)"
                )
                + ", and later stages would see black images"
            )
        for problem, names in summary.unreadable.get(dataset.name, {}).items():
            summary.warnings.append(
                f"{dataset.name}: {len(names)} image{'s' if len(names) > 1 else ''} {'are' if len(names) > 1 else 'is'} "
                f"{problem} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}): no white cell can be read from "
                "such a field; retake or drop it"
            )
        if not dataset.single_cell:
            summary.oversized[dataset.name] = count = too_large.get(dataset.name, 0)
            if mine and count / len(mine) > cfg.warn_empty_fraction:
                summary.warnings.append(
                    f"{dataset.name}: {count} of {len(mine)} smears ({count / len(mine):.0%}) have a region larger than "
                    f"{OVERSIZED_CELLS} of the largest white cells ({LARGEST_WHITE_CELL_UM:g} um) or half the field: red "
                    f"cells or plasma were taken for white cells, or the pixel scale ({scale.scale}, {scale.source}) is "
                    "wrong. Check the ROI page's overlay; give data.pixel_size_um"
                    + (", or try preprocess.threshold_method=nuclear" if cfg.threshold_method != "nuclear" else "")
                )
    for warning in summary.warnings:
        log.warning("%s", warning)
    atomic_write_json(out / "summary.json", {"config": cfg.__dict__, **summary.__dict__})
    if examples:
        atomic_write_bytes(out / "overlay.png", overlay_figure(examples))
    log.info("preprocessed %d images into %s", len(rows), out)
    return summary


def _clear_stale(out: Path, rows: list[dict]) -> None:
    """Every file in the ROI folders that this run's manifest does not list goes: an earlier run's images (over a
    larger dataset) and the temporary files of a run killed mid-write. The run's outputs are exactly its own."""
    listed = {str(row[key]) for row in rows for key in ("roi_mask", "roi_image")}
    for folder in list(out.glob("*/roi_masks")) + list(out.glob("*/roi_images")):
        for path in folder.rglob("*"):  # image ids keep their folders (ALL/Im001, im/Im001_1)
            if (path.is_file() or path.is_symlink()) and path.relative_to(out).as_posix() not in listed:
                path.unlink()


def read_manifest(root: Path | str) -> list[dict[str, str]]:
    return read_csv(Path(root) / MANIFEST)


def overlay_figure(examples: list[tuple[str, np.ndarray, RoiResult]], max_width_px: int = 480) -> bytes:
    """PNG: per example, the smear, the offset monochrome, and the ROI outlined on the smear."""
    fig, axes = new_figure(len(examples), 3, (10, 2.8 * len(examples)))
    for row, (title, rgb, result) in zip(axes, examples):
        factor = min(1.0, max_width_px / rgb.shape[1])
        small = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        mono = cv2.resize(result.monochrome, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(result.roi_mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        outlined = small.copy()
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(outlined, contours, -1, (0, 255, 0), 2)
        for ax, img, name in zip(
            row, (small, mono, outlined), ("smear", "RGB offsets + monochrome", "ROI (threshold 98, cleaned)")
        ):
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(name)
            ax.axis("off")
        row[0].set_title(f"{title}")
    return figure_png(fig)


def method_description(cfg: PreprocessConfig) -> str:
    """How this run found the white cells, in one paragraph of the ROI page."""
    if cfg.threshold_method == "nuclear":
        return (
            "White cells found by their nuclear stain: each pixel's optical density against the image's own "
            "background, green's minus blue's (violet nuclei absorb green and hardly any blue; pink red cells "
            f"absorb both alike); pixels above Otsu's level on it (at least {cfg.nuclear_min_density:g}) are "
            "nuclei, cleaned (closing, components smaller than a nucleus dropped), each grown by at most "
            f"{cfg.roi_margin:g} px at ALL-IDB1's pixel scale over its own cell's pixels (total density above "
            f"{cfg.cell_extent_level:g} of Otsu's level between cells and plasma), holes filled."
        )
    level = (
        f"{cfg.threshold}"
        if cfg.threshold_method == "fixed"
        else "a level found in each image (Otsu's among the pixels darker than the background; unstained regions dropped)"
    )
    return (
        f"RGB offsets red +{cfg.offset_red}, green +{cfg.offset_green}, blue +{cfg.offset_blue}; monochrome; pixels "
        f"below {level} are the region of interest, cleaned (closing, components smaller than a nucleus dropped, "
        f"grown by {cfg.roi_margin:g} px at ALL-IDB1's pixel scale, holes filled)."
    )


def _measured_paragraphs(method: str) -> list[str]:
    """The finder's recall on real annotated smears, as bench/cell_finder.py last measured it, beside this run's
    own numbers: a run on unannotated smears cannot measure it itself."""
    measured = measured_finder()
    rows = measured.get("methods", {}).get(method, {}).get(measured.get("quoted_split", ""), {})
    if not rows:
        return [
            report.paragraph(
                f"The '{method}' finder has not been measured on real annotated smears (python bench/cell_finder.py)."
            )
        ]
    return [
        report.paragraph(
            f"This finder ('{method}') on real annotated smears, as {measured['command']} measured it on "
            f"{measured['date']} (commit {measured.get('commit') or 'unknown'}): {measured['data']}, its "
            f"{measured['quoted_split']} images (settings were chosen on its train split). Recall is the share of "
            "white-cell boxes some region overlaps with IoU >= 0.5; the goal is at least 0.9 with at most 1.5 regions "
            "per white cell."
        ),
        report.grid(
            [
                "source",
                "images",
                "white cells",
                "recall (IoU >= 0.5)",
                "regions per white cell",
                "images with a white cell and no region",
            ],
            [
                [
                    source,
                    row["images"],
                    row["white_cells"],
                    row["recall"],
                    row["regions_per_cell"],
                    row["missed_images"],
                ]
                for source, row in rows.items()
            ],
        ),
    ]


def run_preprocess_stage(ingested: Path, out_dir: Path, overlay_html: Path, profile: Profile) -> PreprocessSummary:
    """The pipeline stage: the ingest artifact in, ROI artifact and an HTML overlay page out."""
    # ingest decoded and checked every image; a scan re-reads names and labels only
    datasets = load_datasets(Path(ingested) / DATA_DIR, profile.data, check=False)
    summary = preprocess_datasets(datasets, out_dir, profile.preprocess, profile.data)
    figure = Path(out_dir) / "overlay.png"
    parts = [
        report.paragraph(method_description(profile.preprocess)),
        *_measured_paragraphs(profile.preprocess.threshold_method),
        *(report.paragraph(f"WARNING: {warning}") for warning in summary.warnings),
        report.table(summary.metrics()),
        report.paragraph(
            "Pixel scale per dataset (image pixels per ALL-IDB1 pixel; every size in the settings is "
            "rescaled by it): "
            + "; ".join(
                f"{name}: {s['scale']} ({s['pixel_size_um']} um per pixel, {s['source']})"
                if s["scale"] is not None
                else f"{name}: {s['source']}"
                for name, s in summary.pixel_scales.items()
            )
        ),
    ]
    if figure.is_file():
        parts.append(report.png_img(figure.read_bytes(), "smears with their regions of interest"))
    atomic_write_text(overlay_html, report.page("preprocess: regions of interest", *parts))
    return summary


def run_preprocess_task(dataset, roi, metrics, overlay, profile: Profile) -> PreprocessSummary:
    """The preprocess component's one call: KFP's ROI artifact, its metrics and the overlay page."""
    summary = run_preprocess_stage(Path(dataset.path), Path(roi.path), Path(overlay.path), profile)
    roi.metadata.update({"images": summary.images})
    log_metrics(metrics, summary.metrics())
    return summary
