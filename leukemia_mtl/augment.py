"""The paper's augmentation (flips, rotation 0-180 degrees, shift, scale) to balanced classes.

The paper augmented before splitting, so copies of one image sat on both sides of a split. Here
augmentation takes the training part of a split and the groups held out for evaluation, and
refuses to run if any training item shares a source group with an evaluation item. Every copy
keeps its source's id and group, so later stages can check the same thing again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from leukemia_mtl.config import AugmentConfig
from leukemia_mtl.errors import LeukemiaMtlError


class LeakageError(LeukemiaMtlError):
    """A source image (or patient) would appear on both sides of a split."""


@dataclass(frozen=True)
class Item:
    image: np.ndarray  # uint8 RGB
    label: str
    source_id: str  # the image this one is, or was made from
    group: str  # source smear or patient: the unit that must not cross a split
    augmented: bool = False
    transform: str = ""


def assert_no_leakage(train_groups: Iterable[str], evaluation_groups: Iterable[str]) -> None:
    shared = set(train_groups) & set(evaluation_groups)
    if shared:
        listed = ", ".join(sorted(shared)[:5]) + (" ..." if len(shared) > 5 else "")
        raise LeakageError(f"{len(shared)} source group(s) on both sides of the split: {listed}")


def random_transform(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One random flip/rotation/shift/scale of `image` as a single affine warp (black border)."""
    height, width = image.shape[:2]
    out = image
    steps = []
    if cfg.flip_horizontal and rng.random() < 0.5:
        out, steps = cv2.flip(out, 1), steps + ["hflip"]
    if cfg.flip_vertical and rng.random() < 0.5:
        out, steps = cv2.flip(out, 0), steps + ["vflip"]
    angle = float(rng.uniform(0.0, cfg.rotation_max_degrees))
    scale = float(rng.uniform(*cfg.scale_range))
    dx, dy = (float(v) for v in rng.uniform(-cfg.shift_fraction, cfg.shift_fraction, size=2) * (width, height))
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += (dx, dy)
    out = cv2.warpAffine(
        out, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )
    steps.append(f"rot{angle:.0f} scale{scale:.2f} shift{dx:+.0f},{dy:+.0f}")
    return out, " ".join(steps)


def augment_to_balance(
    train: Sequence[Item],
    evaluation_groups: Iterable[str],
    cfg: AugmentConfig,
    seed: int,
) -> list[Item]:
    """Originals plus random copies until every class has as many images as the largest class,
    and at least `target_per_class`; training items only."""
    assert_no_leakage((item.group for item in train), evaluation_groups)
    if not train:
        raise LeakageError("augmentation got no training images")
    counts = Counter(item.label for item in train)
    target = max(cfg.target_per_class, max(counts.values()))
    by_class: dict[str, list[Item]] = defaultdict(list)
    for item in train:
        by_class[item.label].append(item)
    out = list(train)
    for class_index, label in enumerate(sorted(by_class)):
        sources = by_class[label]
        rng = np.random.default_rng(np.random.SeedSequence([seed, class_index]))
        for copy in range(max(0, target - len(sources))):
            source = sources[copy % len(sources)]  # cycle through sources: copies spread evenly
            image, transform = random_transform(source.image, cfg, rng)
            out.append(Item(image, label, source.source_id, source.group, augmented=True, transform=transform))
    return out
