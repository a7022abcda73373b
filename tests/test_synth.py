"""The generator writes ALL-IDB's layout, deterministically, with FAB morphology that differs by class."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from leukemia_mtl.config import SynthConfig
from leukemia_mtl.data.synth import STYLES, _rng, generate, render_crop


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_matches_allidb(synthetic_root):
    idb1, idb2 = synthetic_root / "ALL_IDB1", synthetic_root / "ALL_IDB2"
    smears = sorted(idb1.glob("*.jpg"))
    crops = sorted(idb2.glob("*.tif"))
    assert len(smears) == 8 and len(crops) == 6
    assert all(re.fullmatch(r"Im\d{3}_[01]\.jpg", p.name) for p in smears)
    assert all(re.fullmatch(r"Im\d{3}_[01]\.tif", p.name) for p in crops)
    assert all((idb1 / f"{p.stem}.xyc").is_file() and (idb1 / "masks" / f"{p.stem}.png").is_file() for p in smears)
    for crop in crops:
        assert cv2.imread(str(crop)).shape == (257, 257, 3)
    assert sum(p.stem.endswith("_1") for p in crops) == 3  # half blasts
    image = cv2.imread(str(smears[0]))
    assert image.shape == (360, 480, 3)


def test_labels_give_four_balanced_classes_consistent_with_suffix(synthetic_root):
    rows = list(csv.DictReader((synthetic_root / "ALL_IDB1" / "labels.csv").open()))
    assert sorted(r["class"] for r in rows) == ["L1", "L1", "L2", "L2", "L3", "L3", "normal", "normal"]
    for row in rows:
        assert row["filename"].endswith("_0.jpg") == (row["class"] == "normal")


def test_blast_centres_lie_on_white_cells_and_only_in_all_smears(synthetic_root):
    idb1 = synthetic_root / "ALL_IDB1"
    for xyc in sorted(idb1.glob("*.xyc")):
        centres = [tuple(map(int, line.split())) for line in xyc.read_text().splitlines() if line.strip()]
        mask = cv2.imread(str(idb1 / "masks" / f"{xyc.stem}.png"), cv2.IMREAD_GRAYSCALE)
        if xyc.stem.endswith("_0"):
            assert centres == []
        else:
            assert len(centres) >= 4
            assert all(mask[y, x] == 255 for x, y in centres)


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    cfg = SynthConfig(n_smears=3, n_crops=2, smear_width=320, smear_height=240)
    generate(tmp_path / "a", cfg, seed=11, progress=False)
    generate(tmp_path / "b", cfg, seed=11, progress=False)
    generate(tmp_path / "c", cfg, seed=12, progress=False)
    a, b, c = (_digests(tmp_path / n) for n in "abc")
    assert a == b
    images_a = sorted(v for k, v in a.items() if k.endswith((".jpg", ".tif")))
    images_c = sorted(v for k, v in c.items() if k.endswith((".jpg", ".tif")))
    assert len(images_a) == len(images_c) == 5
    assert not set(images_a) & set(images_c)


def test_full_allidb_resolution_works(tmp_path):
    cfg = SynthConfig(n_smears=2, n_crops=0, smear_width=2592, smear_height=1944)
    generate(tmp_path, cfg, seed=3, progress=False)
    image = cv2.imread(str(next((tmp_path / "ALL_IDB1").glob("*.jpg"))))
    assert image.shape == (1944, 2592, 3)


@pytest.mark.parametrize("field, value", [("n_smears", 1), ("smear_width", 10), ("crop_size", 8)])
def test_sizes_too_small_are_refused_by_name(tmp_path, field, value):
    import dataclasses

    with pytest.raises(ValueError, match=f"synth.{field}"):
        generate(tmp_path, dataclasses.replace(SynthConfig(), **{field: value}), seed=0, progress=False)


def _cell_measures(cell_type: str, seeds: range) -> dict[str, float]:
    """Area, nucleus solidity and cytoplasm blueness of single rendered cells (full scale)."""
    areas, solidity, blueness = [], [], []
    for seed in seeds:
        rgb, mask = render_crop(_rng(seed, 99, 0), cell_type, 257)
        body = mask > 0
        areas.append(body.sum())
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        nucleus = ((gray < 70) & body).astype(np.uint8)
        nucleus = cv2.morphologyEx(nucleus, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        contours, _ = cv2.findContours(nucleus, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        biggest = max(contours, key=cv2.contourArea)
        solidity.append(cv2.contourArea(biggest) / cv2.contourArea(cv2.convexHull(biggest)))
        cytoplasm = body & (nucleus == 0)
        blueness.append(float(rgb[..., 2][cytoplasm].mean() - rgb[..., 0][cytoplasm].mean()))
    return {"area": float(np.mean(areas)), "solidity": float(np.mean(solidity)), "blueness": float(np.mean(blueness))}


def test_fab_morphology_differs_for_the_right_reasons():
    seeds = range(6)
    m = {name: _cell_measures(name, seeds) for name in ("lymphocyte", "L1", "L2", "L3")}
    # L1: small blasts, about a mature lymphocyte's size; L2 and L3: large blasts
    assert m["L1"]["area"] < 0.6 * m["L2"]["area"]
    assert m["L1"]["area"] < 0.6 * m["L3"]["area"]
    assert m["lymphocyte"]["area"] < m["L2"]["area"]
    # L2: irregular, cleft nucleus; L1 and L3: round nuclei
    assert m["L2"]["solidity"] < m["L1"]["solidity"] - 0.03
    assert m["L2"]["solidity"] < m["L3"]["solidity"] - 0.03
    # L3: deeply basophilic (blue) cytoplasm
    assert m["L3"]["blueness"] > m["L1"]["blueness"] + 20
    assert m["L3"]["blueness"] > m["L2"]["blueness"] + 20


def test_every_cell_style_renders():
    for name in STYLES:
        rgb, mask = render_crop(_rng(1, 98, 0), name, 257)
        assert rgb.dtype == np.uint8 and mask.any(), name
