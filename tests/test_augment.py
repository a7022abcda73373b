"""Augmentation: balanced, seeded, keeps source ids, and never touches an evaluation image."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from leukemia_mtl.augment import Item, LeakageError, assert_no_leakage, augment_to_balance, random_transform
from leukemia_mtl.config import AugmentConfig
from leukemia_mtl.data.synth import _rng, render_crop


def _items() -> list[Item]:
    items = []
    for index, (cell, label) in enumerate([("lymphocyte", "normal")] * 5 + [("L1", "L1")] * 2 + [("L3", "L3")] * 1):
        rgb, _ = render_crop(_rng(index, 97, 0), cell, 64)
        items.append(Item(rgb, label, source_id=f"Im{index:03d}", group=f"smear{index // 2}"))
    return items


def test_classes_are_balanced_and_copies_keep_their_source():
    items = _items()
    out = augment_to_balance(items, evaluation_groups=["smear9"], cfg=AugmentConfig(target_per_class=0), seed=0)
    assert Counter(i.label for i in out) == {"normal": 5, "L1": 5, "L3": 5}  # balanced to the largest class
    originals = {i.source_id: i for i in items}
    for copy in (i for i in out if i.augmented):
        source = originals[copy.source_id]
        assert copy.group == source.group and copy.label == source.label
        assert copy.image.shape == source.image.shape and copy.image.dtype == np.uint8
        assert not np.array_equal(copy.image, source.image)
        assert "rot" in copy.transform


def test_target_per_class_sets_the_size_and_never_unbalances():
    out = augment_to_balance(_items(), [], AugmentConfig(target_per_class=12), seed=0)
    assert Counter(i.label for i in out) == {"normal": 12, "L1": 12, "L3": 12}
    out = augment_to_balance(_items(), [], AugmentConfig(target_per_class=3), seed=0)
    assert Counter(i.label for i in out) == {"normal": 5, "L1": 5, "L3": 5}


def test_same_seed_same_images_other_seed_other_images():
    a = augment_to_balance(_items(), [], AugmentConfig(), seed=3)
    b = augment_to_balance(_items(), [], AugmentConfig(), seed=3)
    c = augment_to_balance(_items(), [], AugmentConfig(), seed=4)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c) if x.augmented)


def test_an_evaluation_image_is_refused_by_its_group():
    items = _items()
    with pytest.raises(LeakageError, match="smear1"):
        augment_to_balance(items, evaluation_groups=["smear1", "smear7"], cfg=AugmentConfig(), seed=0)
    with pytest.raises(LeakageError, match="2 source group"):
        assert_no_leakage(["a", "b", "c"], ["b", "c", "d"])


def test_rotation_range_and_flips_follow_the_settings():
    image = np.zeros((40, 40, 3), np.uint8)
    image[5:15, 5:35] = 255  # a bar near the top
    rng = np.random.default_rng(0)
    still, steps = random_transform(
        image,
        AugmentConfig(
            flip_horizontal=False, flip_vertical=False, rotation_max_degrees=0, shift_fraction=0, scale_range=(1, 1)
        ),
        rng,
    )
    assert np.array_equal(still, image) and "flip" not in steps
    angles = [float(random_transform(image, AugmentConfig(), rng)[1].split("rot")[1].split()[0]) for _ in range(200)]
    assert min(angles) >= 0 and max(angles) <= 180 and max(angles) - min(angles) > 150
