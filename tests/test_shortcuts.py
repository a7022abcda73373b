"""Shortcuts in the data: an attribute of the files (size, camera, format) that tells the classes apart is
measured at ingest and named in the run's summary and report, and one that does not is not flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.ingest import SUMMARY_FILE, ingest
from leukemia_mtl.data.shortcuts import find_shortcuts
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.run_report import limitations_of


def _smear(rng, width, height) -> Image.Image:
    """A pinkish field with a violet blob: the same content whatever the class."""
    pixels = np.full((height, width, 3), (230, 190, 200), np.uint8)
    pixels += rng.integers(0, 20, pixels.shape, dtype=np.uint8)
    cy, cx = height // 2, width // 2
    pixels[cy - 6 : cy + 6, cx - 6 : cx + 6] = (110, 60, 160)
    return Image.fromarray(pixels)


def _dataset(root: Path, sizes: dict[str, tuple[int, int]], n: int = 10, camera: dict[str, str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    for label, (width, height) in sizes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            exif = Image.Exif()
            if camera:
                exif[0x0110] = camera[label]
            _smear(rng, width, height).save(root / label / f"{label}_{i}.jpg", exif=exif)
    return root


def test_image_size_that_follows_the_class_is_flagged_with_its_numbers(tmp_path, tiny_profile):
    root = _dataset(tmp_path / "smears", {"normal": (96, 72), "ALL": (80, 64)})
    [dataset] = load_datasets(root, tiny_profile.data, check=False)
    found = {s.attribute: s for s in find_shortcuts(dataset)}
    size = found["image size"]
    assert size.flagged and size.balanced_accuracy == 1.0 and size.chance == 0.5
    assert size.table == {"96x72": {"normal": 10}, "80x64": {"ALL": 10}}
    assert "96x72: 10 normal" in size.sentence() and "balanced accuracy 1.00" in size.sentence()
    assert not found["file format"].flagged if "file format" in found else True


def test_camera_model_that_follows_the_class_is_flagged(tmp_path, tiny_profile):
    root = _dataset(
        tmp_path / "smears",
        {"normal": (64, 48), "ALL": (64, 48)},
        camera={"normal": "PowerShot G5", "ALL": "Coolpix 995"},
    )
    [dataset] = load_datasets(root, tiny_profile.data, check=False)
    found = {s.attribute: s for s in find_shortcuts(dataset)}
    assert "image size" not in found  # one size: nothing to measure
    assert found["camera"].flagged and "PowerShot G5" in found["camera"].sentence()


def test_attributes_shared_by_both_classes_are_not_flagged(tmp_path, tiny_profile):
    """Negative control: two sizes spread evenly over both classes predict nothing."""
    root = tmp_path / "smears"
    rng = np.random.default_rng(1)
    for label in ("normal", "ALL"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            _smear(rng, *((96, 72) if i % 2 else (80, 64))).save(root / label / f"{label}_{i}.png")
    [dataset] = load_datasets(root, tiny_profile.data, check=False)
    [size] = find_shortcuts(dataset)
    assert not size.flagged and size.balanced_accuracy < 0.75


def test_ingest_records_the_shortcut_and_the_report_says_it_loudly(tmp_path, tiny_profile):
    smears = _dataset(tmp_path / "smears", {"normal": (96, 72), "ALL": (80, 64)})
    summary = ingest(str(smears), "none", tmp_path / "run", tiny_profile, progress=False)
    flagged = [s for s in summary.shortcuts if s["flagged"]]
    assert [s["attribute"] for s in flagged] == ["image size"]
    assert any(n.startswith("SHORTCUT: smears: the image size alone predicts ALL vs normal") for n in summary.notes)
    written = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())
    notes = limitations_of(
        {}, written, CrossvalResult.from_dict({"tasks": {}, "baselines": {}, "folds": []}), tiny_profile
    )
    assert any(n.startswith("SHORTCUT IN THE DATA: smears: the image size alone") and "99.60 %" in n for n in notes)
