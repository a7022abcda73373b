"""Stain normalisation: map a smear's colours onto a target fitted on training images (issue 17).

Another lab's stain (more or less eosin, a bluer haematoxylin) or camera shifts every colour the
networks learnt from. `preprocess.stain` picks how each image is mapped onto a target:

- "none": nothing (the paper's method and every profile's default);
- "reinhard": each image's CIELAB channel means and standard deviations are moved onto the
  target's (Reinhard et al. 2001), with OpenCV's colour conversion;
- "macenko": each image's two stain vectors and concentrations, estimated in optical density, are
  replaced by the target's (Macenko et al. 2009), with torchstain's numpy backend.

The target is a learned parameter: fitted on a fold's training images only (train/data.py), saved
with every classifier (classifier.json's "stain"), and applied unchanged at prediction. Pixels with
all channels 0 are segment's black backdrop (and `square()`'s padding): they take no part in any
statistic and stay black.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from leukemia_mtl.config import STAIN_METHODS
from leukemia_mtl.errors import LeukemiaMtlError

__all__ = [
    "STAIN_METHODS",
    "StainError",
    "StainTarget",
    "fit_target",
    "lab_statistics",
    "normalise",
    "normalise_batch",
    "shift_stain",
    "target_from_dict",
]

# pooled pixels a target is fitted on at most (a seeded subsample): a mean, a covariance and percentiles
# settle long before this, and fitting stays cheap beside training
MAX_FIT_PIXELS = 200_000
# an image with fewer foreground pixels (reinhard) or stained pixels (macenko: optical density of at least
# MACENKO_BETA in every channel) has no statistics worth matching and is left as it is, counted
MIN_PIXELS = 64
# torchstain's defaults: transmitted light intensity and the optical density below which a pixel is unstained
MACENKO_IO = 240
MACENKO_BETA = 0.15
MACENKO_ALPHA = 1


class StainError(LeukemiaMtlError):
    """A stain setting, or a stored stain target, that cannot be used."""


def _numbers(value: Any, shape: tuple[int, ...], name: str, where: str) -> tuple:
    """`value` as nested tuples of finite floats of `shape`, or a StainError naming the field."""
    try:
        array = np.asarray(value, dtype=object)
    except ValueError:  # ragged
        array = np.empty(0, dtype=object)
    numeric = array.shape == shape and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in array.flat)
    if not numeric or not np.isfinite(array.astype(float)).all():
        raise StainError(
            f"{where}: stain target field {name!r} must be {' x '.join(map(str, shape))} finite numbers, got {value!r}"
        )
    array = array.astype(float)
    return tuple(map(tuple, array.tolist())) if len(shape) == 2 else tuple(array.tolist())


@dataclass(frozen=True)
class StainTarget:
    """What images are normalised onto; one method's fields are set, the other's are empty."""

    method: str
    images: int  # training images it was fitted on
    pixels: int  # foreground pixels it was fitted on (after subsampling)
    lab_mean: tuple[float, ...] = ()  # reinhard: CIELAB L*, a*, b* (L* 0-100)
    lab_std: tuple[float, ...] = ()
    stain_matrix: tuple[tuple[float, ...], ...] = ()  # macenko: torchstain's HERef, 3 (RGB) x 2 (stains)
    max_concentrations: tuple[float, ...] = ()  # macenko: maxCRef, 99th percentile of each stain

    _FIELDS: ClassVar[dict[str, dict[str, tuple[int, ...]]]] = {
        "reinhard": {"lab_mean": (3,), "lab_std": (3,)},
        "macenko": {"stain_matrix": (3, 2), "max_concentrations": (2,)},
    }

    def to_dict(self) -> dict[str, Any]:
        fields = {
            name: [list(row) for row in getattr(self, name)] if len(shape) == 2 else list(getattr(self, name))
            for name, shape in self._FIELDS[self.method].items()
        }
        return {"method": self.method, "images": self.images, "pixels": self.pixels, **fields}

    @classmethod
    def from_dict(cls, value: Any, where: str = "stain target") -> StainTarget:
        """The target `to_dict` wrote; anything else is one StainError naming `where` and the field."""
        if not isinstance(value, Mapping):
            raise StainError(f"{where}: a stain target must be a JSON object, got {type(value).__name__} {value!r}")
        method = value.get("method")
        if method not in cls._FIELDS:
            raise StainError(f"{where}: stain target method must be one of {', '.join(cls._FIELDS)}, got {method!r}")
        expected = {"method", "images", "pixels", *cls._FIELDS[method]}
        if set(value) != expected:
            missing, extra = sorted(expected - set(value)), sorted(set(value) - expected)
            raise StainError(
                f"{where}: a {method} stain target has the fields {', '.join(sorted(expected))}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(map(str, extra))}" if extra else "")
            )
        for name in ("images", "pixels"):
            if not isinstance(value[name], int) or isinstance(value[name], bool) or value[name] < 1:
                raise StainError(
                    f"{where}: stain target field {name!r} must be a whole number above 0, got {value[name]!r}"
                )
        fields = {name: _numbers(value[name], shape, name, where) for name, shape in cls._FIELDS[method].items()}
        if method == "reinhard" and min(fields["lab_std"]) <= 0:
            raise StainError(f"{where}: stain target field 'lab_std' must be above 0, got {value['lab_std']!r}")
        if method == "macenko" and min(fields["max_concentrations"]) <= 0:
            raise StainError(
                f"{where}: stain target field 'max_concentrations' must be above 0, got {value['max_concentrations']!r}"
            )
        return cls(method=method, images=value["images"], pixels=value["pixels"], **fields)


def target_from_dict(value: Mapping[str, Any] | None, where: str = "stain target") -> StainTarget | None:
    """A stored target (classifier.json's "stain"), None where the model was trained without one."""
    return None if value is None else StainTarget.from_dict(value, where)


def check_method(method: str, setting: str = "preprocess.stain") -> None:
    if method not in STAIN_METHODS:
        raise StainError(f"setting {setting!r} must be one of {', '.join(STAIN_METHODS)}, got {method!r}")


def _foreground(image: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 pixels that are not the black backdrop."""
    pixels = np.asarray(image).reshape(-1, 3)
    return pixels[pixels.any(axis=1)]


def _lab(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) RGB uint8 -> (N, 3) float32 CIELAB (L* 0-100), through OpenCV."""
    rgb = pixels.reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3)


def _rgb(lab: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(lab.reshape(-1, 1, 3).astype(np.float32), cv2.COLOR_LAB2RGB).reshape(-1, 3)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def _stained_count(pixels: np.ndarray) -> int:
    """Pixels torchstain's Macenko estimates stains from (optical density >= beta in every channel)."""
    density = -np.log((pixels.astype(np.float64) + 1) / MACENKO_IO)
    return int((density >= MACENKO_BETA).all(axis=1).sum())


def _macenko(target: StainTarget | None = None):
    from torchstain.base.normalizers import MacenkoNormalizer

    normalizer = MacenkoNormalizer(backend="numpy")
    if target is not None:
        normalizer.HERef = np.asarray(target.stain_matrix, dtype=float)
        normalizer.maxCRef = np.asarray(target.max_concentrations, dtype=float)
    return normalizer


def fit_target(
    images: Sequence[np.ndarray], method: str, seed: int = 0, where: str = "stain target"
) -> StainTarget | None:
    """The target of `method` over the foreground pixels of `images` (uint8 RGB), pooled and
    subsampled with `seed`; None for "none". Too little stain to fit on is a StainError naming `where`."""
    check_method(method)
    if method == "none":
        return None
    pooled = [_foreground(image) for image in images]
    pixels = np.concatenate(pooled) if pooled else np.zeros((0, 3), np.uint8)
    if len(pixels) > MAX_FIT_PIXELS:
        pixels = pixels[np.sort(np.random.default_rng(seed).choice(len(pixels), MAX_FIT_PIXELS, replace=False))]
    if method == "reinhard":
        if len(pixels) < MIN_PIXELS:
            raise StainError(
                f"{where}: {len(images)} image(s) hold {len(pixels)} non-black pixels; a reinhard target "
                f"needs at least {MIN_PIXELS}"
            )
        lab = _lab(pixels)
        mean, std = lab.mean(axis=0, dtype=np.float64), lab.std(axis=0, dtype=np.float64)
        if min(std) <= 0:
            raise StainError(f"{where}: the training images have a single colour; a reinhard target needs variation")
        return StainTarget(
            "reinhard", len(images), len(pixels), lab_mean=tuple(mean.tolist()), lab_std=tuple(std.tolist())
        )
    stained = _stained_count(pixels)
    if stained < MIN_PIXELS:
        raise StainError(
            f"{where}: {len(images)} image(s) hold {stained} stained pixels; a macenko target needs at "
            f"least {MIN_PIXELS}"
        )
    normalizer = _macenko()
    normalizer.fit(pixels.reshape(-1, 1, 3), Io=MACENKO_IO, alpha=MACENKO_ALPHA, beta=MACENKO_BETA)
    matrix, maxima = np.asarray(normalizer.HERef, float), np.asarray(normalizer.maxCRef, float)
    if not (np.isfinite(matrix).all() and np.isfinite(maxima).all() and maxima.min() > 0):
        raise StainError(f"{where}: the macenko fit over {len(images)} image(s) found no two stains")
    return StainTarget(
        "macenko",
        len(images),
        len(pixels),
        stain_matrix=tuple(map(tuple, matrix.tolist())),
        max_concentrations=tuple(maxima.tolist()),
    )


def _normalise_one(image: np.ndarray, target: StainTarget) -> tuple[np.ndarray, bool]:
    """(image normalised onto `target`, whether it was); the backdrop stays black."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise StainError(f"stain normalisation takes uint8 RGB images (h, w, 3), got {image.dtype} {image.shape}")
    flat = image.reshape(-1, 3)
    foreground = flat.any(axis=1)
    pixels = flat[foreground]
    if target.method == "reinhard":
        if len(pixels) < MIN_PIXELS:
            return image, False
        lab = _lab(pixels)
        mean, std = lab.mean(axis=0), np.maximum(lab.std(axis=0), 1e-3)
        mapped = _rgb(
            (lab - mean) / std * np.asarray(target.lab_std, np.float32) + np.asarray(target.lab_mean, np.float32)
        )
    else:
        if _stained_count(pixels) < MIN_PIXELS:
            return image, False
        with np.errstate(divide="ignore", invalid="ignore"):
            mapped, _, _ = _macenko(target).normalize(
                pixels.reshape(-1, 1, 3), Io=MACENKO_IO, alpha=MACENKO_ALPHA, beta=MACENKO_BETA, stains=False
            )
        mapped = mapped.reshape(-1, 3)
    mapped[~mapped.any(axis=1)] = 1  # a cell's pixel never turns into backdrop (predict and tests tell them apart)
    out = flat.copy()
    out[foreground] = mapped
    return out.reshape(image.shape), True


def normalise(image: np.ndarray, target: StainTarget | None) -> np.ndarray:
    """One uint8 RGB image mapped onto `target` (None: as it is). An image with too little stain
    to measure comes back unchanged; `normalise_batch` counts those."""
    return image if target is None else _normalise_one(image, target)[0]


def normalise_batch(images: np.ndarray, target: StainTarget | None) -> tuple[np.ndarray, int]:
    """(n, h, w, 3) uint8 images mapped onto `target`, and how many were left unchanged (too little
    stain: a black or nearly black image); None: the images as they are and 0."""
    images = np.asarray(images)
    if target is None or len(images) == 0:
        return images, 0
    out = np.empty_like(images)
    unchanged = 0
    for index, image in enumerate(images):
        out[index], changed = _normalise_one(image, target)
        unchanged += not changed
    return out, unchanged


def lab_statistics(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB means and standard deviations over the foreground pixels of `images`: how far a set of
    images is from a target (tests, bench)."""
    lab = _lab(np.concatenate([_foreground(image) for image in images]))
    return lab.mean(axis=0, dtype=np.float64), lab.std(axis=0, dtype=np.float64)


def shift_stain(image: np.ndarray, density_gains: Sequence[float]) -> np.ndarray:
    """`image` as another lab's stain would show it: each RGB channel's optical density (Beer-Lambert,
    -log(I / 255)) multiplied by its gain, so darker stain darkens stained pixels most and leaves the bright
    plasma nearly as it is. The backdrop stays black. For tests and bench/stain_shift.py."""
    image = np.asarray(image)
    gains = np.asarray(density_gains, dtype=np.float32)
    if image.dtype != np.uint8 or image.shape[-1] != 3 or gains.shape != (3,) or not (gains > 0).all():
        raise StainError(
            f"shift_stain takes uint8 RGB images and 3 gains above 0, got {image.dtype} {image.shape} "
            f"and {list(density_gains)!r}"
        )
    density = -np.log((image.astype(np.float32) + 1) / 256)
    shifted = np.clip(np.rint(256 * np.exp(-density * gains) - 1), 0, 255).astype(np.uint8)
    backdrop = ~image.any(axis=-1)
    shifted[backdrop] = 0
    shifted[~backdrop & ~shifted.any(axis=-1)] = 1  # a stained pixel never becomes backdrop
    return shifted
