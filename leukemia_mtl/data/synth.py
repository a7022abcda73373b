"""A synthetic stand-in for ALL-IDB, written in ALL-IDB's own layout.

ALL-IDB is not public, so the embedded default data is drawn here. The morphology follows the
FAB criteria so that classes differ for the reasons a haematologist would give:

- mature lymphocyte (normal): small (about a red cell), round dense dark nucleus with coarse
  clumped chromatin, thin rim of sky-blue cytoplasm; normal smears also hold neutrophils,
  monocytes and eosinophils;
- L1: small blasts, but larger than a mature lymphocyte (up to twice its diameter), round nucleus
  with homogeneous fine chromatin, scanty cytoplasm, nucleoli inconspicuous;
- L2: large blasts, irregular (cleft) nucleus, prominent nucleoli, more cytoplasm;
- L3: large blasts, round nucleus, abundant deeply basophilic cytoplasm with prominent vacuoles.

Red cells are pale overlapping discs with central pallor; platelets are small purple specks.
Each smear gets its own stain tint, uneven illumination, blur and sensor noise. Sizes are set
at ALL-IDB1's 2592x1944 and scale with the smear's width; ALL-IDB2 crops are at full scale.
Every file is drawn from a generator seeded by (seed, set, index): the same seed gives
byte-identical files, and image i does not depend on how many images were asked for.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from leukemia_mtl.config import REFERENCE_WIDTH, SynthConfig
from leukemia_mtl.errors import DatasetError, Problem
from leukemia_mtl.io_utils import atomic_write_csv, atomic_write_json, atomic_write_text, write_image

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: lymphocytes and L1 blasts apart in size and chromatin (FAB), larger L3 vacuoles
LABEL_FIELDS = ("filename", "class", "cell_types")
_SMEARS, _CROPS, _ORDER = 1, 2, 3

# Red-cell radius at full ALL-IDB scale (px); every other size is a multiple of it.
RBC_RADIUS = 42.0

# RGB colours of a standard May-Grunwald-Giemsa stain, before per-smear variation.
PLASMA = (238.0, 229.0, 226.0)
RBC = (214.0, 146.0, 152.0)
RBC_PALLOR = (234.0, 200.0, 200.0)
PLATELET = (138.0, 80.0, 162.0)
VACUOLE = (236.0, 236.0, 242.0)


@dataclass(frozen=True)
class CellStyle:
    """What distinguishes one white-cell type: size, nucleus shape, chromatin, cytoplasm."""

    name: str
    cell_radius: tuple[float, float]  # in red-cell radii
    nucleus_fraction: tuple[float, float]  # nucleus radius / cell radius
    nucleus_rgb: tuple[float, float, float]
    cytoplasm_rgb: tuple[float, float, float]
    chromatin_contrast: float  # 0 homogeneous .. 0.3 coarse clumped
    chromatin_grain: float  # texture scale in nucleus radii
    irregularity: float = 0.0  # low-frequency wobble of the nucleus outline
    cleft: bool = False
    nucleoli: tuple[int, int] = (0, 0)
    vacuoles: tuple[int, int] = (0, 0)
    lobes: int = 0  # segmented nucleus (neutrophil, eosinophil)
    granules_rgb: tuple[float, float, float] | None = None
    kidney: bool = False  # monocyte's indented nucleus
    is_blast: bool = False


STYLES: dict[str, CellStyle] = {
    "lymphocyte": CellStyle(
        "lymphocyte",
        (0.90, 1.10),
        (0.78, 0.86),
        (40.0, 12.0, 78.0),
        (168.0, 188.0, 232.0),
        chromatin_contrast=0.34,
        chromatin_grain=0.16,
    ),
    "neutrophil": CellStyle(
        "neutrophil",
        (1.30, 1.50),
        (0.30, 0.36),
        (54.0, 20.0, 94.0),
        (226.0, 206.0, 218.0),
        chromatin_contrast=0.15,
        chromatin_grain=0.25,
        lobes=3,
        granules_rgb=(196.0, 150.0, 196.0),
    ),
    "eosinophil": CellStyle(
        "eosinophil",
        (1.35, 1.55),
        (0.34, 0.40),
        (52.0, 18.0, 92.0),
        (232.0, 180.0, 160.0),
        chromatin_contrast=0.15,
        chromatin_grain=0.25,
        lobes=2,
        granules_rgb=(236.0, 132.0, 84.0),
    ),
    "monocyte": CellStyle(
        "monocyte",
        (1.60, 1.90),
        (0.55, 0.62),
        (56.0, 22.0, 98.0),
        (178.0, 178.0, 212.0),
        chromatin_contrast=0.12,
        chromatin_grain=0.2,
        kidney=True,
    ),
    "L1": CellStyle(
        "L1",
        (1.20, 1.50),
        (0.84, 0.90),
        (60.0, 20.0, 100.0),
        (150.0, 170.0, 226.0),
        chromatin_contrast=0.04,
        chromatin_grain=0.3,
        nucleoli=(0, 1),
        is_blast=True,
    ),
    "L2": CellStyle(
        "L2",
        (1.70, 2.20),
        (0.66, 0.74),
        (62.0, 22.0, 102.0),
        (158.0, 174.0, 224.0),
        chromatin_contrast=0.14,
        chromatin_grain=0.22,
        irregularity=0.3,
        cleft=True,
        nucleoli=(1, 3),
        is_blast=True,
    ),
    "L3": CellStyle(
        "L3",
        (1.65, 2.05),
        (0.58, 0.64),
        (56.0, 20.0, 98.0),
        (78.0, 106.0, 198.0),
        chromatin_contrast=0.08,
        chromatin_grain=0.25,
        irregularity=0.03,
        nucleoli=(2, 3),
        vacuoles=(5, 10),
        is_blast=True,
    ),
}
NORMAL_MIX = (("lymphocyte", 0.45), ("neutrophil", 0.35), ("monocyte", 0.1), ("eosinophil", 0.1))


@dataclass(frozen=True)
class _Stain:
    """Per-smear stain and illumination: how one slide differs from the next."""

    tint: np.ndarray  # per-channel gain on every stained colour
    nucleus_gain: float
    vignette: float
    gradient: tuple[float, float]
    blur_sigma: float
    noise_sigma: float


@dataclass
class SmearTruth:
    """What the generator knows and real ALL-IDB does not: the mask and every cell's type."""

    cls: str
    blast_centres: list[tuple[int, int]]
    cell_types: list[str]


def _rng(seed: int, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, kind, index]))


def _draw_stain(rng: np.random.Generator) -> _Stain:
    return _Stain(
        tint=rng.uniform(0.94, 1.05, size=3).astype(np.float32),
        nucleus_gain=float(rng.uniform(0.9, 1.08)),
        vignette=float(rng.uniform(0.04, 0.14)),
        gradient=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
        blur_sigma=float(rng.uniform(0.4, 1.1)),
        noise_sigma=float(rng.uniform(1.5, 4.0)),
    )


class _Canvas:
    """An RGB float canvas and its white-cell mask; shapes are drawn in small local patches."""

    def __init__(self, height: int, width: int, stain: _Stain, rng: np.random.Generator) -> None:
        self.height, self.width = height, width
        self.stain = stain
        self.rng = rng
        self.rgb = np.empty((height, width, 3), np.float32)
        self.rgb[:] = np.asarray(PLASMA, np.float32) * (0.5 + 0.5 * stain.tint)
        self.wbc_mask = np.zeros((height, width), np.uint8)

    def colour(self, rgb: tuple[float, float, float], gain: float = 1.0) -> np.ndarray:
        return np.clip(np.asarray(rgb, np.float32) * self.stain.tint * gain, 0, 255)

    def window(self, cx: float, cy: float, half: int) -> tuple[slice, slice, slice, slice] | None:
        x0, y0 = int(np.floor(cx)) - half, int(np.floor(cy)) - half
        size = 2 * half + 1
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + size, self.width), min(y0 + size, self.height)
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        return (slice(cy0, cy1), slice(cx0, cx1), slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))

    def blend(self, cx: float, cy: float, half: int, alpha: np.ndarray, colour: np.ndarray) -> None:
        """Paint `colour` (RGB, or a patch of them) through `alpha` (patch of 0..1) centred at cx, cy."""
        win = self.window(cx, cy, half)
        if win is None:
            return
        ys, xs, pys, pxs = win
        a = alpha[pys, pxs, None]
        c = colour[pys, pxs] if colour.ndim == 3 else colour
        region = self.rgb[ys, xs]
        region *= 1.0 - a
        region += a * c

    def mark_wbc(self, cx: float, cy: float, half: int, alpha: np.ndarray) -> None:
        win = self.window(cx, cy, half)
        if win is None:
            return
        ys, xs, pys, pxs = win
        np.maximum(
            self.wbc_mask[ys, xs], np.where(alpha[pys, pxs] > 0.5, 255, 0).astype(np.uint8), out=self.wbc_mask[ys, xs]
        )


_SHIFT = 4  # OpenCV sub-pixel drawing: coordinates in 1/16 px


def _ellipse_alpha(size: int, centre: tuple[float, float], axes: tuple[float, float], angle: float = 0.0) -> np.ndarray:
    patch = np.zeros((size, size), np.uint8)
    scale = 1 << _SHIFT
    cv2.ellipse(
        patch,
        (int(round(centre[0] * scale)), int(round(centre[1] * scale))),
        (max(1, int(round(axes[0] * scale))), max(1, int(round(axes[1] * scale)))),
        angle,
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        _SHIFT,
    )
    return patch.astype(np.float32) / 255.0


def _polygon_alpha(size: int, points: np.ndarray) -> np.ndarray:
    patch = np.zeros((size, size), np.uint8)
    cv2.fillPoly(patch, [np.round(points * (1 << _SHIFT)).astype(np.int32)], 255, cv2.LINE_AA, _SHIFT)
    return patch.astype(np.float32) / 255.0


def _texture(rng: np.random.Generator, size: int, grain_px: float) -> np.ndarray:
    """Zero-mean, unit-spread smooth noise: chromatin clumps and granules at a given grain."""
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), max(grain_px, 0.5))
    spread = float(noise.std()) or 1.0
    return (noise - float(noise.mean())) / spread


def _soft(alpha: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(alpha, (0, 0), max(sigma, 0.5)) if sigma > 0 else alpha


def _draw_rbc(canvas: _Canvas, cx: float, cy: float, radius: float) -> None:
    rng = canvas.rng
    half = int(np.ceil(radius * 1.15)) + 2
    size = 2 * half + 1
    centre = (half + cx % 1, half + cy % 1)
    axes = (radius * rng.uniform(0.95, 1.05), radius * rng.uniform(0.9, 1.0))
    angle = float(rng.uniform(0, 180))
    body = _ellipse_alpha(size, centre, axes, angle)
    canvas.blend(cx, cy, half, body * 0.8, canvas.colour(RBC))
    pallor = _soft(_ellipse_alpha(size, centre, (axes[0] * 0.45, axes[1] * 0.45), angle), radius * 0.15)
    canvas.blend(cx, cy, half, pallor * 0.75, canvas.colour(RBC_PALLOR))


def _draw_platelet(canvas: _Canvas, cx: float, cy: float, radius: float) -> None:
    rng = canvas.rng
    half = int(np.ceil(radius * 1.6)) + 2
    size = 2 * half + 1
    theta = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    r = radius * rng.uniform(0.7, 1.3, size=theta.size)
    points = np.stack([half + cx % 1 + r * np.cos(theta), half + cy % 1 + r * np.sin(theta)], axis=1)
    canvas.blend(cx, cy, half, _soft(_polygon_alpha(size, points), radius * 0.2) * 0.9, canvas.colour(PLATELET))


def _nucleus_outline(rng: np.random.Generator, style: CellStyle, centre: np.ndarray, radius: float) -> np.ndarray:
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.full_like(theta, radius)
    if style.irregularity:
        for harmonic in (2, 3, 4, 5):
            r *= 1 + style.irregularity / harmonic * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    if style.cleft:
        at = rng.uniform(0, 2 * np.pi)
        r *= 1 - 0.5 * np.exp(-(np.angle(np.exp(1j * (theta - at))) ** 2) / 0.04)
    if style.kidney:
        at = rng.uniform(0, 2 * np.pi)
        r *= 1 - 0.3 * np.exp(-(np.angle(np.exp(1j * (theta - at))) ** 2) / 0.3)
    squash = rng.uniform(0.85, 1.0)
    x, y = r * np.cos(theta), r * np.sin(theta) * squash
    turn = rng.uniform(0, np.pi)
    xr = centre[0] + x * np.cos(turn) - y * np.sin(turn)
    yr = centre[1] + x * np.sin(turn) + y * np.cos(turn)
    return np.stack([xr, yr], axis=1)


def _draw_wbc(canvas: _Canvas, style: CellStyle, cx: float, cy: float, scale: float) -> None:
    """One white cell: cytoplasm, nucleus with chromatin, then nucleoli, vacuoles, granules."""
    rng = canvas.rng
    cell_r = RBC_RADIUS * scale * rng.uniform(*style.cell_radius)
    half = int(np.ceil(cell_r * 1.1)) + 3
    size = 2 * half + 1
    centre = np.array([half + cx % 1, half + cy % 1])

    cell_axes = (cell_r * rng.uniform(0.94, 1.0), cell_r * rng.uniform(0.9, 1.0))
    body = _ellipse_alpha(size, tuple(centre), cell_axes, float(rng.uniform(0, 180)))
    cyto_tex = _texture(rng, size, cell_r * 0.15)
    cytoplasm = canvas.colour(style.cytoplasm_rgb)[None, None, :] * (1 + 0.04 * cyto_tex[..., None])
    canvas.blend(cx, cy, half, body, cytoplasm)
    canvas.mark_wbc(cx, cy, half, body)

    if style.granules_rgb is not None:
        grains = np.clip(_texture(rng, size, max(cell_r * 0.04, 0.6)) - 0.8, 0, None) * body
        canvas.blend(cx, cy, half, np.clip(grains, 0, 1) * 0.8, canvas.colour(style.granules_rgb))

    nuc_r = cell_r * rng.uniform(*style.nucleus_fraction)
    nucleus_colour = canvas.colour(style.nucleus_rgb, canvas.stain.nucleus_gain)
    if style.lobes:
        nucleus = np.zeros((size, size), np.float32)
        start = rng.uniform(0, 2 * np.pi)
        spread = cell_r * 0.42
        for lobe in range(style.lobes):
            a = start + lobe * (2 * np.pi / style.lobes) * 0.75
            lc = (centre[0] + spread * np.cos(a), centre[1] + spread * np.sin(a))
            nucleus = np.maximum(nucleus, _ellipse_alpha(size, lc, (nuc_r, nuc_r * 0.8), float(np.degrees(a))))
        nucleus = np.minimum(cv2.dilate(nucleus, np.ones((3, 3), np.uint8), iterations=max(1, int(nuc_r * 0.15))), body)
    else:
        offset = (
            (cell_r - nuc_r) * rng.uniform(0.0, 0.6) * np.array([np.cos(t := rng.uniform(0, 2 * np.pi)), np.sin(t)])
        )
        nucleus = _polygon_alpha(size, _nucleus_outline(rng, style, centre + offset, nuc_r)) * body

    chromatin = _texture(rng, size, max(nuc_r * style.chromatin_grain, 0.6))
    nucleus_pixels = nucleus_colour[None, None, :] * (1 + style.chromatin_contrast * chromatin[..., None])
    canvas.blend(cx, cy, half, nucleus, np.clip(nucleus_pixels, 0, 255))

    nucleoli = int(rng.integers(style.nucleoli[0], style.nucleoli[1] + 1))
    for _ in range(nucleoli):
        spot = _random_point_inside(rng, nucleus, 0.9)
        if spot is None:
            break
        radius = nuc_r * rng.uniform(0.10, 0.16)
        alpha = _soft(_ellipse_alpha(size, spot, (radius, radius * 0.85)), radius * 0.25) * nucleus
        canvas.blend(cx, cy, half, alpha * 0.85, canvas.colour((118.0, 88.0, 168.0)))

    vacuoles = int(rng.integers(style.vacuoles[0], style.vacuoles[1] + 1))
    for _ in range(vacuoles):
        spot = _random_point_inside(rng, body * (1 - nucleus), 0.9)  # vacuoles of the cytoplasm
        if spot is None:
            break
        radius = cell_r * rng.uniform(0.07, 0.13)
        alpha = _soft(_ellipse_alpha(size, spot, (radius, radius)), radius * 0.2) * body
        canvas.blend(cx, cy, half, alpha * 0.9, canvas.colour(VACUOLE))


def _random_point_inside(rng: np.random.Generator, alpha: np.ndarray, level: float) -> tuple[float, float] | None:
    ys, xs = np.nonzero(alpha > level)
    if ys.size == 0:
        return None
    pick = int(rng.integers(ys.size))
    return float(xs[pick]), float(ys[pick])


def _finish(canvas: _Canvas, scale: float) -> np.ndarray:
    """Illumination, optics and sensor: vignetting, gradient, blur, noise; then 8-bit RGB."""
    stain, h, w = canvas.stain, canvas.height, canvas.width
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    light = 1 - stain.vignette * (x * x + y * y) / 2 + stain.gradient[0] * x + stain.gradient[1] * y
    rgb = canvas.rgb * light[..., None]
    rgb = cv2.GaussianBlur(rgb, (0, 0), max(stain.blur_sigma * max(scale, 0.35), 0.3))
    rgb += canvas.rng.standard_normal(rgb.shape, dtype=np.float32) * stain.noise_sigma
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _place_cells(
    rng: np.random.Generator, width: int, height: int, radii: list[float], margin: float
) -> list[tuple[float, float]]:
    """Non-overlapping white-cell centres, kept inside the frame so masks and .xyc are whole."""
    placed: list[tuple[float, float, float]] = []
    for radius in radii:
        for _ in range(200):
            x = rng.uniform(radius + margin, width - radius - margin)
            y = rng.uniform(radius + margin, height - radius - margin)
            if all((x - px) ** 2 + (y - py) ** 2 > (radius + pr + margin) ** 2 for px, py, pr in placed):
                placed.append((x, y, radius))
                break
    return [(x, y) for x, y, _ in placed]


def _draw_background(canvas: _Canvas, scale: float, coverage: float) -> None:
    rng = canvas.rng
    rbc_r = RBC_RADIUS * scale
    count = int(coverage * canvas.width * canvas.height / (np.pi * rbc_r**2))
    for _ in range(count):
        _draw_rbc(
            canvas,
            rng.uniform(-rbc_r, canvas.width + rbc_r),
            rng.uniform(-rbc_r, canvas.height + rbc_r),
            rbc_r * rng.uniform(0.9, 1.1),
        )
    for _ in range(max(1, count // 15)):
        _draw_platelet(
            canvas, rng.uniform(0, canvas.width), rng.uniform(0, canvas.height), rbc_r * rng.uniform(0.1, 0.16)
        )


def _smear_cell_types(rng: np.random.Generator, cls: str) -> list[str]:
    names, weights = zip(*NORMAL_MIX)
    if cls == "normal":
        return list(rng.choice(names, size=int(rng.integers(3, 7)), p=weights))
    blasts = [cls] * int(rng.integers(4, 9))
    return blasts + list(rng.choice(names, size=int(rng.integers(0, 3)), p=weights))


def render_smear(
    rng: np.random.Generator, cls: str, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, SmearTruth]:
    """A whole smear of class `cls` (normal, L1, L2, L3): RGB image, WBC mask, ground truth."""
    scale = width / REFERENCE_WIDTH
    canvas = _Canvas(height, width, _draw_stain(rng), rng)
    _draw_background(canvas, scale, coverage=float(rng.uniform(0.55, 0.75)))
    types = _smear_cell_types(rng, cls)
    radii = [RBC_RADIUS * scale * STYLES[t].cell_radius[1] * 1.1 for t in types]
    centres = _place_cells(rng, width, height, radii, margin=RBC_RADIUS * scale * 0.3)
    truth = SmearTruth(cls=cls, blast_centres=[], cell_types=[])
    for cell_type, (x, y) in zip(types, centres):
        _draw_wbc(canvas, STYLES[cell_type], x, y, scale)
        truth.cell_types.append(cell_type)
        if STYLES[cell_type].is_blast:
            truth.blast_centres.append((int(round(x)), int(round(y))))
    return _finish(canvas, scale), canvas.wbc_mask, truth


def render_red_cells(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A field of red cells and platelets with no white cell: what a finder must leave without a region."""
    scale = width / REFERENCE_WIDTH
    canvas = _Canvas(height, width, _draw_stain(rng), rng)
    _draw_background(canvas, scale, coverage=float(rng.uniform(0.55, 0.75)))
    return _finish(canvas, scale)


def render_touching(
    rng: np.random.Generator, cell_type: str, count: int, width: int, height: int, overlap: float = 0.05
) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A field of red cells with `count` white cells of `cell_type` in a row, each touching the next (their outlines
    overlap by `overlap` of a diameter), as blasts cluster in ALL: the image and each white cell's box (x, y, w, h)."""
    scale = width / REFERENCE_WIDTH
    canvas = _Canvas(height, width, _draw_stain(rng), rng)
    _draw_background(canvas, scale, coverage=float(rng.uniform(0.55, 0.75)))
    radius = RBC_RADIUS * scale * STYLES[cell_type].cell_radius[1]
    step = 2 * radius * (1 - overlap)
    x0, y = width / 2 - step * (count - 1) / 2, height / 2
    boxes = []
    for index in range(count):
        before = canvas.wbc_mask.copy()
        _draw_wbc(canvas, STYLES[cell_type], x0 + index * step, y, scale)
        drawn = (canvas.wbc_mask > 0) & (before == 0)
        ys, xs = np.nonzero(drawn)
        boxes.append((int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)))
    return _finish(canvas, scale), boxes


def render_crop(rng: np.random.Generator, cell_type: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """ALL-IDB2-style crop: one white cell near the centre among red cells, at full scale."""
    canvas = _Canvas(size, size, _draw_stain(rng), rng)
    _draw_background(canvas, 1.0, coverage=float(rng.uniform(0.5, 0.7)))
    jitter = size * 0.04
    _draw_wbc(
        canvas, STYLES[cell_type], size / 2 + rng.uniform(-jitter, jitter), size / 2 + rng.uniform(-jitter, jitter), 1.0
    )
    return _finish(canvas, 1.0), canvas.wbc_mask


def smear_classes(cfg: SynthConfig) -> list[str]:
    """The classes of the smears `generate` writes (in another order): what a run can check before generating."""
    return [cfg.classes[i % len(cfg.classes)] for i in range(cfg.n_smears)]


def _balanced_labels(rng: np.random.Generator, classes: tuple[str, ...], n: int) -> list[str]:
    labels = [classes[i % len(classes)] for i in range(n)]
    return [labels[i] for i in rng.permutation(n)]


def generate(out_dir: Path | str, cfg: SynthConfig, seed: int, *, progress: bool = True) -> Path:
    """Write ALL_IDB1 (smears, .xyc, masks, labels.csv) and ALL_IDB2 (crops, masks, labels.csv)."""
    unknown = [c for c in cfg.classes if c != "normal" and c not in STYLES]
    if unknown or "normal" not in cfg.classes:
        raise ValueError(f"synth.classes must be 'normal' plus FAB types among L1, L2, L3; got {list(cfg.classes)}")
    for name, value, low in (
        ("n_smears", cfg.n_smears, 2),
        ("n_crops", cfg.n_crops, 0),
        ("smear_width", cfg.smear_width, 160),
        ("smear_height", cfg.smear_height, 120),
        ("crop_size", cfg.crop_size, 64),
    ):
        if value < low:
            raise ValueError(f"synth.{name} must be at least {low}, got {value}")
    out = Path(out_dir)
    existing = sorted(p for p in out.iterdir() if p.name != ".synth.partial") if out.is_dir() else []  # a killed run's
    if out.exists() and not out.is_dir():
        raise DatasetError([Problem(str(out), "is a file; give a folder for the synthetic dataset")])
    if existing and not (out / "synth.json").is_file():
        raise DatasetError(
            [
                Problem(
                    str(out),
                    f"already holds files that are not a synthetic dataset "
                    f"(e.g. {existing[0].name}); give an empty or new folder",
                )
            ]
        )
    # written inside the target (nothing beside it, which may be someone else's folder or another
    # file system), then swapped in whole, the description last: a rerun with fewer items leaves no mix
    staging = out / ".synth.partial"
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        _write(staging, cfg, seed, progress)
        for name in ("synth.json", "ALL_IDB1", "ALL_IDB2"):
            old = out / name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        for name in ("ALL_IDB1", "ALL_IDB2", "synth.json"):
            if (staging / name).exists():
                (staging / name).rename(out / name)
    except OSError as exc:
        raise DatasetError([Problem(str(out), f"cannot be written ({exc.strerror or exc})")]) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %d smears and %d crops under %s", cfg.n_smears, cfg.n_crops, out)
    return out


def _write(out: Path, cfg: SynthConfig, seed: int, progress: bool) -> None:
    idb1, idb2 = out / "ALL_IDB1", out / "ALL_IDB2"

    order = _balanced_labels(_rng(seed, _ORDER, 0), cfg.classes, cfg.n_smears)
    rows = []
    for index, cls in enumerate(tqdm(order, desc="synth ALL_IDB1", unit="smear", disable=not progress or None)):
        image, mask, truth = render_smear(_rng(seed, _SMEARS, index), cls, cfg.smear_width, cfg.smear_height)
        stem = f"Im{index + 1:03d}_{0 if cls == 'normal' else 1}"
        write_image(idb1 / f"{stem}.jpg", image, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        atomic_write_text(idb1 / f"{stem}.xyc", "".join(f"{x} {y}\n" for x, y in truth.blast_centres))
        write_image(idb1 / "masks" / f"{stem}.png", mask)
        rows.append({"filename": f"{stem}.jpg", "class": cls, "cell_types": ";".join(truth.cell_types)})
    atomic_write_csv(idb1 / "labels.csv", LABEL_FIELDS, rows)

    blast_types = [c for c in cfg.classes if c != "normal"]
    crop_rows = []
    for index in tqdm(range(cfg.n_crops), desc="synth ALL_IDB2", unit="crop", disable=not progress or None):
        rng = _rng(seed, _CROPS, index)
        blast = index % 2 == 1
        cell_type = blast_types[(index // 2) % len(blast_types)] if blast else "lymphocyte"
        image, mask = render_crop(rng, cell_type, cfg.crop_size)
        stem = f"Im{index + 1:03d}_{int(blast)}"
        write_image(idb2 / f"{stem}.tif", image)
        write_image(idb2 / "masks" / f"{stem}.png", mask)
        crop_rows.append(
            {"filename": f"{stem}.tif", "class": cell_type if blast else "normal", "cell_types": cell_type}
        )
    if crop_rows:
        atomic_write_csv(idb2 / "labels.csv", LABEL_FIELDS, crop_rows)

    atomic_write_json(out / "synth.json", {"generator_version": GENERATOR_VERSION, "seed": seed, "config": asdict(cfg)})
