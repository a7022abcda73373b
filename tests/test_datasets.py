"""Dataset layouts and every dataset-level bad input: each problem is reported with its file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from badinputs import png_bomb, truncated_jpeg, write_rgb
from leukemia_mtl.cli import main as cli_main
from leukemia_mtl.config import DataConfig
from leukemia_mtl.data.datasets import load_datasets, scan_dataset
from leukemia_mtl.errors import DatasetError

CFG = DataConfig()


def folder_dataset(root: Path, classes: dict[str, int], start_seed: int = 0) -> Path:
    seed = start_seed
    for cls, count in classes.items():
        for i in range(count):
            write_rgb(root / cls / f"cell_{i}.png", seed=seed)
            seed += 1
    return root


# --- good layouts -----------------------------------------------------------------------------

def test_synthetic_root_loads_both_allidb_sets(synthetic_root):
    idb1, idb2 = load_datasets(synthetic_root, CFG, progress=False)
    assert (idb1.layout, idb2.layout) == ("allidb1", "allidb2")
    assert idb1.classes == ("normal", "L1", "L2", "L3")  # negative class first
    assert idb1.class_counts() == {"normal": 2, "L1": 2, "L2": 2, "L3": 2}
    assert all(r.mask_path is not None for r in idb1.records)
    blasts = [r for r in idb1.records if r.positive]
    assert blasts and all(r.blast_centres for r in blasts)
    assert all(not r.positive for r in idb1.records if r.label == "normal")
    assert {r.group for r in idb1.records} == {r.image_id for r in idb1.records}


def test_allidb1_without_label_file_is_binary_from_suffix(synthetic_copy):
    (synthetic_copy / "ALL_IDB1" / "labels.csv").unlink()
    dataset = scan_dataset(synthetic_copy / "ALL_IDB1", CFG)
    assert dataset.classes == ("normal", "ALL")
    assert all(r.positive == r.path.stem.endswith("_1") for r in dataset.records)


def test_real_allidb_subfolders_im_and_xyc_are_read(synthetic_copy):
    idb1 = synthetic_copy / "ALL_IDB1"
    (idb1 / "im").mkdir()
    (idb1 / "xyc").mkdir()
    for jpg in idb1.glob("*.jpg"):
        jpg.rename(idb1 / "im" / jpg.name)
    for xyc in idb1.glob("*.xyc"):
        xyc.rename(idb1 / "xyc" / xyc.name)
    (idb1 / "labels.csv").unlink()
    shutil.rmtree(idb1 / "masks")
    dataset = load_datasets(idb1, CFG, progress=False)[0]
    assert len(dataset.records) == 8
    assert sum(bool(r.blast_centres) for r in dataset.records) == 6


def test_folder_per_class_with_optional_csv_and_patients(tmp_path):
    root = folder_dataset(tmp_path / "cells", {"normal": 3, "ALL": 3})
    dataset = load_datasets(root, CFG, progress=False)[0]
    assert dataset.layout == "folders" and dataset.classes == ("normal", "ALL")
    csv = tmp_path / "fab.csv"
    rows = ["filename,class,patient"] + [f"normal/cell_{i}.png,normal,p{i}" for i in range(3)]
    rows += [f"ALL/cell_{i}.png,{cls},p9" for i, cls in enumerate(["L1", "L2", "L3"])]
    csv.write_text("\n".join(rows) + "\n")
    dataset = load_datasets(root, CFG, labels_csv=csv, progress=False)[0]
    assert dataset.classes == ("normal", "L1", "L2", "L3")
    assert {r.group for r in dataset.records if r.positive} == {"patient:p9"}


def test_negative_class_is_configurable(tmp_path):
    root = folder_dataset(tmp_path / "cells", {"healthy": 2, "blast": 2})
    dataset = load_datasets(root, DataConfig(negative_class="healthy"), progress=False)[0]
    assert [r.positive for r in dataset.records if r.label == "blast"] == [True, True]


def test_awkward_but_valid_names_load(tmp_path):
    root = tmp_path / "cells"
    for i, name in enumerate(["with space.png", "ünïcødé_细胞.png", "<script>alert(1)</script>.png"]):
        write_rgb(root / "normal" / name, seed=i)
        write_rgb(root / "ALL" / name, seed=10 + i)
    dataset = load_datasets(root, CFG, progress=False)[0]
    assert len(dataset.records) == 6


def test_other_files_are_reported_as_ignored_not_silently_skipped(synthetic_copy):
    (synthetic_copy / "ALL_IDB1" / "README.txt").write_text("notes")
    dataset = load_datasets(synthetic_copy / "ALL_IDB1", CFG, progress=False)[0]
    assert any("README.txt" in n.where and "ignored" in n.message for n in dataset.notes)


# --- bad inputs: one row per kind ------------------------------------------------------------

def _idb1(root: Path) -> Path:
    return root / "ALL_IDB1"


def _first(root: Path, pattern: str) -> Path:
    return sorted(_idb1(root).glob(pattern))[0]


def plant_mislabelled(root):
    write_rgb(root / "ALL_IDB2" / "Im099_7.tif", seed=50)
    return root / "ALL_IDB2", "Im099_7.tif", "label suffix _7 is not 0"


def plant_bad_name(root):
    write_rgb(_idb1(root) / "photo.jpg", seed=51)
    return _idb1(root), "photo.jpg", "does not follow ALL-IDB's ImNNN_Y pattern"


def plant_zero_byte(root):
    (_idb1(root) / "Im050_1.jpg").write_bytes(b"")
    (_idb1(root) / "labels.csv").open("a").write("Im050_1.jpg,L1,\n")
    return _idb1(root), "Im050_1.jpg", r"is empty \(0 bytes\)"


def plant_truncated(root):
    truncated_jpeg(_idb1(root) / "Im051_1.jpg")
    (_idb1(root) / "labels.csv").open("a").write("Im051_1.jpg,L2,\n")
    return _idb1(root), "Im051_1.jpg", "truncated or corrupt"


def plant_not_an_image(root):
    (_idb1(root) / "Im052_0.jpg").write_text("<html>not a picture</html>")
    (_idb1(root) / "labels.csv").open("a").write("Im052_0.jpg,normal,\n")
    return _idb1(root), "Im052_0.jpg", "cannot be decoded"


def plant_bomb(root):
    png_bomb(root / "ALL_IDB2" / "Im098_1.tif")
    (root / "ALL_IDB2" / "labels.csv").open("a").write("Im098_1.tif,L1,\n")
    return root / "ALL_IDB2", "Im098_1.tif", "decompression bomb"


def plant_duplicate_across_classes(root):
    normal = _first(root, "*_0.jpg")
    shutil.copy(normal, _idb1(root) / "Im060_1.jpg")
    (_idb1(root) / "labels.csv").open("a").write("Im060_1.jpg,L3,\n")
    return _idb1(root), "Im060_1.jpg", f"same image as {normal.name} with a different class"


def plant_csv_missing_file(root):
    (_idb1(root) / "labels.csv").open("a").write("Im404_1.jpg,L1,\n")
    return _idb1(root), "labels.csv", "names 'Im404_1.jpg', which is not an image"


def plant_csv_missing_row(root):
    write_rgb(_idb1(root) / "Im070_1.jpg", seed=70)
    return _idb1(root), "Im070_1.jpg", "has no row in the label file"


def plant_csv_bad_header(root):
    (_idb1(root) / "labels.csv").write_text("name;label\nIm001_1.jpg;L1\n")
    return _idb1(root), "labels.csv", "needs columns 'filename' and 'class'"


def plant_csv_contradicts_suffix(root):
    path = _idb1(root) / "labels.csv"
    normal = _first(root, "*_0.jpg").name
    path.write_text(path.read_text().replace(f"{normal},normal", f"{normal},L2"))
    return _idb1(root), normal, "says the opposite"


def plant_bad_xyc(root):
    xyc = _first(root, "*_1.xyc")
    xyc.write_text("12 34\nnot a point\n")
    return _idb1(root), xyc.name, "expected 'x y' blast centre"


def plant_xyc_on_healthy(root):
    xyc = _first(root, "*_0.xyc")
    xyc.write_text("10 10\n")
    return _idb1(root), xyc.name, "blast centres for a healthy"


def plant_centre_outside(root):
    xyc = _first(root, "*_1.xyc")
    xyc.write_text("9999 10\n")
    return _idb1(root), xyc.stem, r"blast centre \(9999, 10\) lies outside"


def plant_mask_wrong_size(root):
    mask = sorted((_idb1(root) / "masks").glob("*.png"))[0]
    write_rgb(mask, size=(20, 20))
    return _idb1(root), mask.name, "mask is 20x20 but its image is 480x360"


def plant_empty_folder(root):
    empty = root / "empty"
    empty.mkdir()
    return empty, "empty", "no dataset found"


def plant_one_class(root):
    return folder_dataset(root / "one", {"normal": 3}, 80), "one", "only one class"


def plant_empty_class_folder(root):
    ds = folder_dataset(root / "cls", {"normal": 2, "ALL": 2}, 90)
    (ds / "L3").mkdir()
    return ds, "L3", "class folder has no images"


def plant_loose_image(root):
    ds = folder_dataset(root / "loose", {"normal": 2, "ALL": 2}, 95)
    write_rgb(ds / "stray.png", seed=99)
    return ds, "stray.png", "image outside any class folder"


def plant_no_negative_class(root):
    return folder_dataset(root / "noneg", {"L1": 2, "L2": 2}, 100), "noneg", "negative class 'normal' not found"


BAD_INPUTS = [
    plant_mislabelled, plant_bad_name, plant_zero_byte, plant_truncated, plant_not_an_image, plant_bomb,
    plant_duplicate_across_classes, plant_csv_missing_file, plant_csv_missing_row, plant_csv_bad_header,
    plant_csv_contradicts_suffix, plant_bad_xyc, plant_xyc_on_healthy, plant_centre_outside,
    plant_mask_wrong_size, plant_empty_folder, plant_one_class, plant_empty_class_folder, plant_loose_image,
    plant_no_negative_class,
]


@pytest.mark.parametrize("plant", BAD_INPUTS, ids=[p.__name__[6:] for p in BAD_INPUTS])
def test_library_raises_one_dataset_error_naming_the_file(synthetic_copy, plant):
    path, name, message = plant(synthetic_copy)
    with pytest.raises(DatasetError) as info:
        load_datasets(path, CFG, progress=False)
    matching = [p for p in info.value.problems if name in p.where]
    assert matching, f"no problem names {name}: {info.value.problems}"
    assert any(__import__("re").search(message, p.message) for p in matching), info.value.problems


@pytest.mark.parametrize("plant", BAD_INPUTS, ids=[p.__name__[6:] for p in BAD_INPUTS])
def test_validate_exits_1_and_names_the_file(synthetic_copy, plant, capsys):
    path, name, message = plant(synthetic_copy)
    assert cli_main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_all_problems_are_reported_in_one_pass(synthetic_copy):
    for plant in (plant_zero_byte, plant_truncated, plant_bad_xyc, plant_csv_missing_row):
        plant(synthetic_copy)
    with pytest.raises(DatasetError) as info:
        load_datasets(synthetic_copy, CFG, progress=False)
    text = str(info.value)
    for name in ("Im050_1.jpg", "Im051_1.jpg", ".xyc", "Im070_1.jpg"):
        assert name in text


def test_validate_as_a_process_good_and_bad(synthetic_copy):
    ok = subprocess.run([sys.executable, "-m", "leukemia_mtl", "validate", str(synthetic_copy)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "OK: 2 dataset(s), 14 images, no problems" in ok.stdout
    plant_truncated(synthetic_copy)
    plant_bomb(synthetic_copy)
    bad = subprocess.run([sys.executable, "-m", "leukemia_mtl", "validate", str(synthetic_copy)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "Im051_1.jpg: is truncated or corrupt" in bad.stderr
    assert "Im098_1.tif: is refused as a decompression bomb" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout
    assert "2 problem(s) found" in bad.stderr


def test_validate_reports_conversions(tmp_path, capsys):
    from badinputs import grayscale

    root = folder_dataset(tmp_path / "cells", {"normal": 2, "ALL": 1})
    grayscale(root / "ALL" / "gray.png", seed=40)
    assert cli_main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert "gray.png: grayscale converted to RGB" in out
