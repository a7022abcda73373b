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
    plant_mislabelled,
    plant_bad_name,
    plant_zero_byte,
    plant_truncated,
    plant_not_an_image,
    plant_bomb,
    plant_duplicate_across_classes,
    plant_csv_missing_file,
    plant_csv_missing_row,
    plant_csv_bad_header,
    plant_csv_contradicts_suffix,
    plant_bad_xyc,
    plant_xyc_on_healthy,
    plant_centre_outside,
    plant_mask_wrong_size,
    plant_empty_folder,
    plant_one_class,
    plant_empty_class_folder,
    plant_loose_image,
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
    ok = subprocess.run(
        [sys.executable, "-m", "leukemia_mtl", "validate", str(synthetic_copy)], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK: 2 dataset(s), 14 images, no problems" in ok.stdout
    plant_truncated(synthetic_copy)
    plant_bomb(synthetic_copy)
    bad = subprocess.run(
        [sys.executable, "-m", "leukemia_mtl", "validate", str(synthetic_copy)], capture_output=True, text=True
    )
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


# --- one walk for validate, ingest, the data version and predict (issue 15) ---------------------------


def test_the_data_version_sees_an_image_added_inside_a_symlinked_class_folder(tmp_path):
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import fingerprint

    elsewhere = folder_dataset(tmp_path / "elsewhere", {"ALL": 2}, start_seed=50) / "ALL"
    root = folder_dataset(tmp_path / "cells", {"normal": 2})
    (root / "ALL").symlink_to(elsewhere, target_is_directory=True)
    profile = get_profile("demo")
    before = fingerprint("synthetic", str(root), profile)
    assert len(load_datasets(root, CFG, progress=False)[0].records) == 4  # validate reads through the link
    write_rgb(elsewhere / "cell_9.png", seed=77)
    after = fingerprint("synthetic", str(root), profile)
    assert after != before  # the cache would otherwise serve the run on the old data
    assert len(load_datasets(root, CFG, progress=False)[0].records) == 5


@pytest.mark.parametrize("role", ["smears", "cells"])
@pytest.mark.parametrize("value", ["", "  "])
def test_a_blank_input_is_refused_not_turned_into_synthetic_data(role, value, tmp_path):
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import fingerprint, ingest

    inputs = {"smears": "synthetic", "cells": "synthetic", role: value}
    with pytest.raises(DatasetError, match=f"{role}: is empty; give 'synthetic'"):
        fingerprint(inputs["smears"], inputs["cells"], get_profile("demo"))
    with pytest.raises(DatasetError, match=f"{role}: is empty"):
        ingest(inputs["smears"], inputs["cells"], tmp_path / "out", get_profile("demo"), progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_run_local_refuses_an_empty_smears_argument_before_any_task(tmp_path, capsys):
    import pipeline

    code = pipeline.main(["--run-local", "--smears", "", "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "error: smears: is empty" in err and "Traceback" not in err
    assert not list((tmp_path / "run").glob("pipeline_root/*/ingest"))


def test_synth_refuses_a_folder_holding_someone_elses_dataset_and_replaces_its_own_whole(tmp_path, capsys):
    users = folder_dataset(tmp_path / "mine", {"normal": 1})
    (users / "labels.csv").write_text("filename,class\nnormal/cell_0.png,normal\n")
    code = cli_main(
        ["synth", "--out", str(users), "--smears", "4", "--crops", "2", "--width", "320", "--height", "240"]
    )
    assert code == 1 and "already holds files that are not a synthetic dataset" in capsys.readouterr().err
    assert (users / "labels.csv").read_text() == "filename,class\nnormal/cell_0.png,normal\n"  # untouched

    out = tmp_path / "synthetic"
    assert (
        cli_main(["synth", "--out", str(out), "--smears", "8", "--crops", "4", "--width", "320", "--height", "240"])
        == 0
    )
    assert (
        cli_main(["synth", "--out", str(out), "--smears", "4", "--crops", "2", "--width", "320", "--height", "240"])
        == 0
    )
    assert len(list((out / "ALL_IDB1").glob("*.jpg"))) == 4 and len(list((out / "ALL_IDB2").glob("*.tif"))) == 2
    assert not list(tmp_path.glob(".synthetic.*")) and not list(out.glob(".*"))  # no staging left, beside it or in it


def test_a_fifo_given_as_the_label_file_is_refused_without_opening_it(tmp_path, capsys):
    import os

    root = folder_dataset(tmp_path / "cells", {"normal": 2, "ALL": 2})
    os.mkfifo(tmp_path / "labels.csv")
    code = cli_main(["validate", str(root), "--labels", str(tmp_path / "labels.csv")])
    assert code == 1 and "is a FIFO (named pipe), not a regular file; not opened" in capsys.readouterr().err


def test_predict_walks_folders_like_validate_and_never_opens_a_fifo(tmp_path, caplog):
    import os

    from leukemia_mtl.predict import image_paths

    root = folder_dataset(tmp_path / "in", {"a": 2})
    os.mkfifo(root / "a" / "pipe.png")
    (root / "linked").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "._cell_0.png").write_bytes(b"resource fork")
    found = list(image_paths([str(root), str(root / "a" / "pipe.png")]))
    images = sorted(p.relative_to(root).as_posix() for p, _ in found if p is not None)
    messages = [m for _, m in found if m is not None]
    assert images == ["a/cell_0.png", "a/cell_1.png", "linked/cell_0.png", "linked/cell_1.png"]
    # in the folder, through the link, and given by name: three refusals, no hang
    assert sum("is a FIFO (named pipe)" in m for m in messages) == 3
    assert "ignored 2 hidden" in caplog.text and not any("hidden" in m for m in messages)  # a note, not a failed image


def test_a_second_run_into_an_output_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    import os

    import pipeline
    from leukemia_mtl.io_utils import exclusive_folder

    with exclusive_folder(tmp_path / "run"):  # a run in progress
        code = pipeline.main(["--run-local", "--output-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err
    assert code == 1 and f"another run is writing here (pid {os.getpid()})" in err and "Traceback" not in err
    (tmp_path / "file").write_text("not a folder")
    assert pipeline.main(["--run-local", "--output-dir", str(tmp_path / "file")]) == 1
    assert "is a file; give a folder for the run's outputs" in capsys.readouterr().err


def test_preprocess_refuses_an_output_folder_inside_its_dataset(tmp_path, capsys):
    root = folder_dataset(tmp_path / "cells", {"normal": 2, "ALL": 2})
    for out, words in (
        (root / "normal" / "roi", "lies inside the input folder"),  # inside it
        (root.parent, "holds the input"),
    ):  # or its parent (outputs go to OUT/cells/...)
        code = cli_main(["preprocess", str(root), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 1 and words in err and err.count("error:") == 1, err
    assert not (root / "normal" / "roi").exists() and not (root / "roi_masks").exists()
    assert len(load_datasets(root, CFG, progress=False)[0].records) == 4


def test_later_stages_name_an_ingested_file_by_the_users_path(tmp_path):
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import ingest, user_path

    source = folder_dataset(tmp_path / "mine", {"normal": 2, "ALL": 2})
    ingest(str(source), "none", tmp_path / "out", get_profile("demo"), progress=False)
    assert user_path(tmp_path / "out", "smears", "normal/cell_0.png") == f"{source}/normal/cell_0.png"
    assert "pipeline_root" not in user_path(tmp_path / "out", "smears", "normal/cell_0.png")


def test_data_the_split_cannot_divide_is_refused_before_any_task(tmp_path, capsys):
    import pipeline

    root = folder_dataset(tmp_path / "smears", {"normal": 1, "ALL": 3})
    run = tmp_path / "run"
    assert pipeline.main(["--run-local", "--smears", str(root), "--cells", "none", "--output-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"error: {root}: 2-fold cross-validation needs at least 2 images of each class" in err
    assert pipeline.main(["--run-local", "--set", "synth.n_smears=4", "--output-dir", str(run)]) == 1
    assert (
        "error: synth.n_smears: 4 generated smears: 2-fold cross-validation needs at least 2 images"
        in capsys.readouterr().err
    )
    assert not list(run.glob("pipeline_root/*"))  # no task ran


@pytest.mark.parametrize("line", ["inf 3", "12 1e400", "nan 4"])
def test_a_blast_centre_that_is_no_number_of_pixels_is_one_line(tmp_path, line, capsys):
    root = tmp_path / "ALL_IDB1"
    write_rgb(root / "Im001_1.jpg", seed=1)
    write_rgb(root / "Im002_0.jpg", seed=2)
    (root / "Im001_1.xyc").write_text(f"{line}\n")
    assert cli_main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"Im001_1.xyc:1: expected 'x y' blast centre in pixels, got {line!r}" in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["row", "header"])
def test_a_label_file_with_a_huge_field_is_one_line(tmp_path, capsys, where):
    root = folder_dataset(tmp_path / "cells", {"normal": 2, "ALL": 2})
    huge = '"' + "x" * (200 << 10) + '"'
    text = f"filename,class\n{huge},normal\n" if where == "row" else f"filename,class,{huge}\na.png,normal,x\n"
    (root / "labels.csv").write_text(text)
    assert cli_main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert "label file cannot be parsed as CSV (field larger than field limit" in err and "Traceback" not in err


def test_a_huge_file_behind_a_valid_header_is_refused_before_it_is_read(tmp_path):
    from leukemia_mtl.data.images import max_file_bytes, read_image
    from leukemia_mtl.errors import ImageError

    path = write_rgb(tmp_path / "huge.tif", seed=3)
    with open(path, "r+b") as handle:  # sparse: no disk and no memory spent, the size is what counts
        handle.truncate(max_file_bytes(10_000) + 1)
    with pytest.raises(ImageError, match="bytes, more than an image of at most 10,000 pixels can need"):
        read_image(path, max_pixels=10_000)


def test_a_file_name_holding_a_newline_cannot_forge_a_line_of_output(tmp_path, capsys):
    root = folder_dataset(tmp_path / "cells", {"normal": 2, "ALL": 2})
    (root / "normal" / "x\nOK: 1 dataset(s), 4 images, no problems.png").write_bytes(b"not pixels")
    assert cli_main(["validate", str(root)]) == 1
    err = capsys.readouterr().err
    assert "x\\nOK: 1 dataset(s)" in err and not any(line.startswith("OK:") for line in err.splitlines())


def test_each_input_names_its_own_negative_class_and_the_run_shares_one(tmp_path, capsys):
    import json

    import pipeline

    smears = folder_dataset(tmp_path / "smear_set", {"benign": 2, "ALL": 2})
    # keyed by path, as the bare-name refusal asks: the paths stay the user's
    (smears / "labels.csv").write_text(
        "filename,class\n" + "".join(f"{c}/cell_{i}.png,{c}\n" for c in ("benign", "ALL") for i in range(2))
    )
    cells = folder_dataset(tmp_path / "cell_set", {"normal": 2, "ALL": 2}, start_seed=20)
    run = tmp_path / "run"
    code = pipeline.main(
        [
            "--run-local",
            "--until",
            "preprocess",
            "--smears",
            str(smears),
            "--cells",
            str(cells),
            "--negative-class",
            "smears=benign,cells=normal",
            "--output-dir",
            str(run),
        ]
    )
    assert code == 0, capsys.readouterr().err
    ingested = json.loads(next(run.glob("pipeline_root/*/ingest/dataset/dataset.json")).read_text())
    assert ingested["datasets"]["smears"]["classes"] == ["normal", "ALL"] == ingested["datasets"]["cells"]["classes"]
    assert f"{smears}: class 'benign' is this run's negative class 'normal'" in ingested["notes"]
    assert (smears / "benign").is_dir() and not (smears / "normal").exists()  # the user's files are untouched
    staged = next(run.glob("pipeline_root/*/ingest/dataset/data/smears"))
    assert (staged / "benign").is_dir()  # the staged copy keeps the user's names: messages name real files
    assert (
        pipeline.main(["--run-local", "--until", "preprocess", "--negative-class", "smears=", "--output-dir", str(run)])
        == 1
    )
    assert "expected NAME or smears=NAME,cells=NAME" in capsys.readouterr().err


def test_ingests_messages_name_the_users_files_in_their_words_too(tmp_path):
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import ingest

    source = folder_dataset(tmp_path / "mine", {"normal": 2, "ALL": 2})
    (source / "labels.csv").write_text(
        "filename,class\nnormal/cell_0.png,normal\nALL/cell_0.png,ALL\nALL/cell_1.png,ALL\nnowhere.png,ALL\n"
    )
    with pytest.raises(DatasetError) as info:
        ingest(str(source), "none", tmp_path / "out", get_profile("demo"), progress=False)
    text = str(info.value)
    assert f"{source}/normal/cell_1.png: has no row in the label file {source}/labels.csv" in text
    assert f"names 'nowhere.png', which is not an image in {source}" in text
    assert ".data.partial" not in text and str(tmp_path / "out") not in text


def test_repointing_a_linked_class_folder_changes_the_data_version(tmp_path):
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import fingerprint

    first = folder_dataset(tmp_path / "a", {"ALL": 2}, start_seed=60) / "ALL"
    second = folder_dataset(tmp_path / "b", {"ALL": 2}, start_seed=70) / "ALL"
    for image in second.iterdir():  # same names, sizes and times: only the link's target differs
        shutil.copystat(first / image.name, image)
    root = folder_dataset(tmp_path / "cells", {"normal": 2})
    (root / "ALL").symlink_to(first, target_is_directory=True)
    before = fingerprint("synthetic", str(root), get_profile("demo"))
    (root / "ALL").unlink()
    (root / "ALL").symlink_to(second, target_is_directory=True)
    assert fingerprint("synthetic", str(root), get_profile("demo")) != before


def test_a_class_name_written_in_nfc_and_nfd_is_one_class(tmp_path):
    """macOS writes 'é' decomposed (NFD), Linux and CSV editors composed (NFC): the same data set copied from both
    is one class 'leucémie', and a label file in one form matches folders in the other."""
    import unicodedata

    composed, decomposed = unicodedata.normalize("NFC", "leucémie"), unicodedata.normalize("NFD", "leucémie")
    assert composed != decomposed
    root = tmp_path / "cells"
    write_rgb(root / "normal" / "n1.png", seed=1)
    write_rgb(root / composed / "a1.png", seed=2)
    write_rgb(root / decomposed / "a2.png", seed=3)
    dataset = load_datasets(root, CFG, progress=False)[0]
    assert dataset.class_counts() == {"normal": 1, composed: 2}
    (root / "labels.csv").write_text(
        f"filename,class\nn1.png,normal\na1.png,{decomposed}\na2.png,{composed}\n", encoding="utf-8"
    )
    labelled = load_datasets(root, CFG, progress=False)[0]
    assert labelled.class_counts() == {"normal": 1, composed: 2}
    # the negative class typed in the other form (macOS's tab completion) names the same class
    healthy = load_datasets(root, DataConfig(negative_class=decomposed), progress=False)[0]
    assert healthy.negative_class == composed and sum(not r.positive for r in healthy.records) == 2


@pytest.mark.parametrize("size, refused", [((320, 240), True), ((64, 64), False), ((360, 363), False)])
def test_smears_given_as_the_cells_input_are_refused_in_either_layout(tmp_path, size, refused):
    """320x240 fields in a folder-per-class cells input are smears, as an ALL-IDB1 folder there is: refused, not
    cropped as if each were one cell. About square images (crops) pass."""
    root = tmp_path / "cells"
    for index, label in enumerate(["normal", "normal", "ALL", "ALL"]):
        write_rgb(root / label / f"c{index}.png", seed=index, size=size)
    if not refused:
        assert len(scan_dataset(root, CFG).records) == 4
        return
    with pytest.raises(DatasetError) as info:
        scan_dataset(root, CFG)
    (problem,) = info.value.problems
    assert (
        "multi-cell smears, not single-cell crops (4 of 4 images sampled are fields like 320x240 px); give it as "
        "the smears input" in problem.message
    )
