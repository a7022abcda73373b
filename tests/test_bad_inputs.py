"""The bad-input corpus (tests/badinputs.py) at every entry point: `validate`, the pipeline's
ingest task, `predict`, and the model and weight loaders. Each refusal is one message naming the
file, never a traceback; each accepted oddity is reported; nothing is dropped silently.
docs/reliability.md's "Bad input" table has one row per kind and names the test here that proves it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from kfp.dsl import Artifact, Dataset, Metrics

from badinputs import DATASET_CORPUS, Planted, png_bomb, truncated_jpeg, write_rgb
from components.ingest import ingest
from helpers import TINY, classifier_info
from leukemia_mtl import cli
from leukemia_mtl.bundles import CLASSIFIER, META_FILE, MODEL_FILE, load_classifier, save_bundle
from leukemia_mtl.errors import printable
from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier
from leukemia_mtl.stages import StageError

NO_WEIGHTS = ResolvedWeights(None, "random initialisation", False)


def _plant(kind: str, synthetic_copy: Path) -> Planted:
    return DATASET_CORPUS[kind](synthetic_copy)


@pytest.mark.parametrize("kind", sorted(DATASET_CORPUS))
def test_validate_names_the_file_or_reports_the_conversion(kind, synthetic_copy, capsys):
    planted = _plant(kind, synthetic_copy)
    code = cli.main(["validate", str(planted.dataset)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if planted.refused:
        assert code == 1
        assert f"error: {printable(str(planted.named))}: " in err and planted.message in err, err
    else:
        assert code == 0, err
        assert planted.message in out and (
            planted.named == planted.dataset or f"note: {printable(str(planted.named))}: " in out
        ), out


@pytest.mark.parametrize("kind", sorted(DATASET_CORPUS))
@pytest.mark.slow
def test_the_pipelines_ingest_task_names_the_users_file_and_publishes_nothing(kind, synthetic_copy, tmp_path, capsys):
    planted = _plant(kind, synthetic_copy)
    cells_role = planted.dataset.name in ("ALL_IDB2", "by_class")
    smears, cells = ("synthetic", str(planted.dataset)) if cells_role else (str(planted.dataset), "none")
    artifacts = {
        name: kind_(name=name, uri=str(tmp_path / "out" / name))
        for name, kind_ in (("dataset", Dataset), ("metrics", Metrics), ("summary", Artifact))
    }
    run = lambda: ingest.python_func(  # noqa: E731
        smears=smears,
        cells=cells,
        profile="demo",
        overrides=json.dumps(TINY),
        data_version="v1",
        **artifacts,
    )
    if planted.refused:
        with pytest.raises(SystemExit) as info:
            run()
        err = capsys.readouterr().err
        assert info.value.code == 1 and "Traceback" not in err
        assert f"error: {printable(str(planted.named))}: " in err and planted.message in err, (
            err
        )  # the user's path, not a staging copy
        assert not (tmp_path / "out" / "dataset" / "data").exists()
        leftovers = (
            list((tmp_path / "out" / "dataset").glob(".data*")) if (tmp_path / "out" / "dataset").exists() else []
        )
        assert not leftovers, f"a failed ingest left {leftovers} behind"  # no staging copy of the user's data
    else:
        run()
        summary = json.loads((tmp_path / "out" / "dataset" / "dataset.json").read_text())
        text = json.dumps(summary, ensure_ascii=False)
        if planted.named != planted.dataset:  # the note travels with the data, under the user's path
            assert str(planted.named) in text and planted.message in text, text
        else:
            role = summary["datasets"]["cells" if cells_role else "smears"]
            assert role["class_counts"] == {"normal": 2, "blast": 2}


@pytest.mark.slow
def test_predict_streams_answers_and_names_every_bad_image(demo_run, tmp_path, capsys, synthetic_root):
    """One call with good, awkward and bad files and folders: every good image is answered (in
    order, as JSON), every bad one named on stderr, and the exit code says some failed."""
    _, outputs, _ = demo_run
    smear = (synthetic_root / "ALL_IDB1" / "Im001_1.jpg").read_bytes()
    images = tmp_path / "images"
    good = {name: images / name for name in ("smear one.jpg", "célula ü.jpg", "<script>.jpg", "sub/Im002_1.jpg")}
    for path in good.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(smear)
    bad = {
        images / "zero.jpg": "is empty (0 bytes)",
        truncated_jpeg(images / "half.jpg"): "is truncated or corrupt",
        images / "text.jpg": "cannot be decoded",
        png_bomb(images / "bomb.png"): "decompression bomb",
        write_rgb(images / "tiny.jpg", size=(24, 18)): "smaller than the minimum of 32 px",
        write_rgb(images / "small smear.jpg", size=(64, 40)): "smaller than the model's 71 px input",
        images / "sub" / "readme.md": "skipped, not an image file",
        tmp_path / "missing.jpg": "no such file or folder",
        tmp_path / "empty": "folder holds no image files",
        images / "blank.png": "no white cell found in this smear (the image is blank)",
    }
    (images / "zero.jpg").write_bytes(b"")
    (images / "text.jpg").write_text("not pixels")
    (images / "sub" / "readme.md").write_text("notes")
    (tmp_path / "empty").mkdir()
    assert cv2.imwrite(str(images / "blank.png"), np.full((240, 320, 3), 128, np.uint8))  # a slide with nothing on it
    code = cli.main(
        [
            "predict",
            "--model",
            outputs["release"]["path"],
            "--json",
            "--overlays",
            str(tmp_path / "overlays"),
            str(images),
            str(tmp_path / "missing.jpg"),
            str(tmp_path / "empty"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in out + err
    payload = json.loads(out)
    answers = [a for a in payload["predictions"] if "error" not in a]
    assert [a["image"] for a in answers] == sorted(str(p) for p in good.values())
    assert len(payload["errors"]) == len(bad) and payload["classified"] == len(good)
    assert all(e in payload["predictions"] for e in payload["errors"])  # in place, in the inputs' order
    assert all(a["kind"] == "smear" and Path(a["overlay"]).is_file() for a in answers)
    assert len({a["overlay"] for a in answers}) == len(answers)  # no overlay overwrites another
    for path, message in bad.items():
        assert f"error: {path}: " in err and message in err, (path, err)
    assert f"{len(bad)} image(s) could not be classified, {len(good)} were" in err

    (tmp_path / "overlays.png").write_bytes(b"a file, not a folder")
    code = cli.main(
        [
            "predict",
            "--model",
            outputs["release"]["path"],
            "--json",
            "--overlays",
            str(tmp_path / "overlays.png"),
            str(good["smear one.jpg"]),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1 and f"error: --overlays {tmp_path / 'overlays.png'}: is a file; give a folder" in err
    assert "Traceback" not in out + err and (tmp_path / "overlays.png").read_bytes() == b"a file, not a folder"


@pytest.mark.slow
def test_predict_never_writes_over_or_among_its_inputs_and_never_reads_its_own_outputs(
    demo_run, tmp_path, capsys, synthetic_root, monkeypatch, caplog
):
    """`predict --csv *.jpg` (the shell puts the first image after --csv), an output naming an input, a CSV inside
    the input folder, an empty path and a batch of no images are refused before anything is written; `predict .` twice never classifies
    the first run's overlays (the overlay folder is marked and every walk skips it, with a note)."""
    _, outputs, _ = demo_run
    model = outputs["release"]["path"]
    folder = tmp_path / "smears"
    folder.mkdir()
    for name in ("Im001_1.jpg", "Im002_1.jpg"):
        (folder / name).write_bytes((synthetic_root / "ALL_IDB1" / "Im001_1.jpg").read_bytes())
    first = (folder / "Im001_1.jpg").read_bytes()
    refused = {
        (
            "--csv",
            str(folder / "Im001_1.jpg"),
            str(folder / "Im002_1.jpg"),
        ): "is an existing image, which it would overwrite",
        ("--csv", str(folder / "Im002_1.jpg"), str(folder / "Im002_1.jpg")): "is one of the inputs",
        ("--csv", str(folder / "answers.csv"), str(folder)): "lies inside the input folder",
        ("--overlays", str(folder), str(folder / "Im001_1.jpg")): "holds the input",
        (
            "--overlays",
            str(synthetic_root / "ALL_IDB2"),
            str(folder / "Im001_1.jpg"),
        ): "already holds images this tool did not write",  # marking it would hide them from every later walk
        ("--batch", "0", str(folder)): "--batch 0: give 1 to 1024 images per call of the models",
    }
    for arguments, words in refused.items():
        code = cli.main(["predict", "--model", model, *arguments])
        out, err = capsys.readouterr()
        assert code == 1 and words in err and err.count("error:") == 1 and "Traceback" not in err, (arguments, err)
    assert (folder / "Im001_1.jpg").read_bytes() == first and sorted(p.name for p in folder.iterdir()) == [
        "Im001_1.jpg",
        "Im002_1.jpg",
    ]
    with pytest.raises(SystemExit) as empty:
        cli.main(["predict", "--model", model, "--csv", "", str(folder)])
    assert empty.value.code == 2 and "an empty path" in capsys.readouterr().err

    monkeypatch.chdir(folder)  # the default overlay folder, predictions/, now lies inside the input
    for _run in range(2):
        code = cli.main(["predict", "--model", model, "--json", "."])
        out, err = capsys.readouterr()
        payload = json.loads(out)
        assert code == 0 and payload["classified"] == 2, err
        assert sorted(a["image"] for a in payload["predictions"]) == ["Im001_1.jpg", "Im002_1.jpg"]
    assert "skipped 1 folder(s) this tool wrote" in caplog.text and "predictions/" in caplog.text
    code = cli.main(["predict", "--model", model, "--overlays", str(tmp_path / "elsewhere"), "predictions"])
    assert code == 1 and "is a folder this tool wrote" in capsys.readouterr().err


def _classifier_bundle(directory: Path, backbone: str, input_size: int, info_changes: dict | None = None) -> Path:
    model = build_classifier(backbone, input_size, 2, NO_WEIGHTS)
    info = classifier_info(backbone=backbone, input_size=input_size)
    return save_bundle(model, directory, CLASSIFIER, {**dataclasses.asdict(info), **(info_changes or {})})


@pytest.mark.slow
def test_a_classifier_file_from_another_backbone_input_size_or_head_is_refused(tmp_path):
    xception = _classifier_bundle(tmp_path / "xception", "Xception", 75)
    model, info = load_classifier(xception)  # the good bundle loads
    assert info.backbone == "Xception" and model.input_shape == (None, 75, 75, 3)
    inception = _classifier_bundle(tmp_path / "inception", "InceptionV3", 75)
    (xception / MODEL_FILE).write_bytes((inception / MODEL_FILE).read_bytes())
    with pytest.raises(
        StageError,
        match=f"{xception / MODEL_FILE}: holds the model 'InceptionV3_classifier', "
        "but classifier.json says a Xception classifier",
    ):
        load_classifier(xception)
    wrong_size = _classifier_bundle(tmp_path / "size", "Xception", 71, {"input_size": 75})
    with pytest.raises(StageError, match=r"takes \(None, 71, 71, 3\), but classifier.json says 75 px"):
        load_classifier(wrong_size)
    wrong_head = _classifier_bundle(
        tmp_path / "head", "Xception", 71, {"head": "softmax", "classes": ["normal", "L1", "L2"]}
    )
    with pytest.raises(StageError, match=r"gives \(1,\) outputs, but classifier.json says softmax over 3 classes"):
        load_classifier(wrong_head)


def test_a_truncated_classifier_file_or_description_is_refused(tmp_path):
    bundle = _classifier_bundle(tmp_path / "b", "Xception", 71)
    data = (bundle / MODEL_FILE).read_bytes()
    (bundle / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(StageError, match=f"{bundle / MODEL_FILE}: not a Keras model file"):
        load_classifier(bundle)
    (bundle / META_FILE).write_text('{"backbone": "Xception"')
    with pytest.raises(StageError, match=f"{bundle / META_FILE}: not a classifier description"):
        load_classifier(bundle)


def test_a_classifier_with_a_lambda_layer_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    marker_path = str(marker)
    inputs = keras.Input((71, 71, 3), name="rgb")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Lambda(lambda t: (open(marker_path, "w").write("ran"), t[:, :1])[1], name="head")(  # noqa: SIM115
        pooled
    )
    bundle = tmp_path / "lambda"
    bundle.mkdir()
    keras.Model(inputs, outputs, name="Xception_classifier").save(bundle / MODEL_FILE)
    marker.unlink(missing_ok=True)  # saving traced the lambda once
    info = classifier_info()
    (bundle / META_FILE).write_text(json.dumps(dataclasses.asdict(info)))
    with pytest.raises(StageError, match="cannot be loaded as a Keras model .*Lambda"):
        load_classifier(bundle)
    assert not marker.exists()


@pytest.mark.slow
def test_a_release_whose_manifest_reaches_outside_its_folder_is_refused(demo_run, tmp_path):
    import shutil

    from leukemia_mtl.release import ReleaseError, fetch, publish

    _, outputs, _ = demo_run
    release = tmp_path / "release"
    shutil.copytree(outputs["release"]["path"], release)
    (tmp_path / "secret.txt").write_text("outside")
    manifest = json.loads((release / "manifest.json").read_text())
    for hostile in ("../secret.txt", "/etc/hostname"):
        manifest["files"][hostile] = "0" * 64
        (release / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ReleaseError, match=f"lists '{hostile}', which lies outside the release folder"):
            fetch(str(release))
        with pytest.raises(ReleaseError, match="lies outside the release folder"):
            publish(release, str(tmp_path / "published"), None)
        assert not (tmp_path / "published").exists()
        del manifest["files"][hostile]
    (release / "fab" / MODEL_FILE).write_bytes(b"changed")
    (release / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReleaseError, match=f"{release / 'fab' / MODEL_FILE}: checksum differs"):
        fetch(str(release))


@pytest.mark.slow
def test_a_release_manifest_that_would_verify_nothing_is_refused_with_one_line(demo_run, tmp_path):
    import shutil

    from leukemia_mtl.release import ReleaseError, fetch

    _, outputs, _ = demo_run
    release = tmp_path / "release"
    shutil.copytree(outputs["release"]["path"], release)
    good = json.loads((release / "manifest.json").read_text())
    one_file = dict(list(good["files"].items())[:1])
    cases = {
        "an array": ([], "not a release manifest (a JSON list, not an object)"),
        "files empty": ({**good, "files": {}}, "'files' must list every file of the release"),
        "files null": ({**good, "files": None}, "'files' must list every file of the release"),
        "no settings": ({k: v for k, v in good.items() if k != "settings"}, "has no 'settings' object"),
        "a model left out": ({**good, "files": one_file}, "not listed in manifest.json, so it cannot be verified"),
        "format as text": (
            {**good, "format": str(good["format"])},
            f"release format '{good['format']}' (str), this code reads format {good['format']!r} (an integer)",
        ),
    }
    for _case, (manifest, words) in cases.items():
        (release / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ReleaseError, match=re.escape(words)):
            fetch(str(release))
    (release / "manifest.json").write_text(json.dumps(good))
    assert fetch(str(release)) == release  # the untouched manifest still verifies


def test_a_truncated_weights_file_is_refused_naming_it(tmp_path):
    from leukemia_mtl.models.backbones import WeightsError, get_backbone, resolve_weights

    weights = tmp_path / "xception_notop.h5"
    model = build_classifier("Xception", 71, 2, NO_WEIGHTS)
    model.get_layer("backbone").save_weights(tmp_path / "full.weights.h5")
    data = (tmp_path / "full.weights.h5").read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match=f"{weights}: cannot load as Xception weights"):
        build_classifier("Xception", 71, 2, resolve_weights(str(weights), get_backbone("Xception")))


def test_a_full_disk_is_one_line_naming_the_file_and_nothing_is_left_looking_complete(
    synthetic_copy, tmp_path, monkeypatch, capsys, tiny_profile
):
    """ENOSPC, as the kernel raises it on a write's fsync or a copy, stands for a full disk (a real one cannot be
    made without mount rights): preprocess says which file and why in one line; ingest no longer blames the
    user's intact images for the empty copies a full disk left."""
    import errno
    import os
    import shutil

    from leukemia_mtl.data import ingest as ingest_module
    from leukemia_mtl.data.files import OUTPUT_MARKER
    from leukemia_mtl.errors import environment_error_line

    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code = cli.main(["preprocess", str(synthetic_copy / "ALL_IDB1"), "--out", str(tmp_path / "roi")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "roi_masks/" in err and "No space left on device; the disk holding it is full" in err
    assert not [p for p in (tmp_path / "roi").rglob("*") if p.is_file() and p.name != OUTPUT_MARKER]  # none whole
    monkeypatch.undo()

    copies = []

    def copy_until_full(source, target):
        copies.append(target)
        if len(copies) > 3:
            Path(target).write_bytes(b"")  # what a full disk leaves: an empty file, then the error
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source), None, str(target))  # as sendfile
        return shutil.copyfile(source, target)

    monkeypatch.setattr(ingest_module.shutil, "copyfile", copy_until_full)
    with pytest.raises(OSError) as info:
        ingest_module.ingest(
            str(synthetic_copy / "ALL_IDB1"), "none", tmp_path / "ingest", tiny_profile, progress=False
        )
    line = environment_error_line(info.value)
    assert line is not None and "the disk holding it is full" in line and str(copies[-1]) in line
    assert not any(p.is_file() for p in (tmp_path / "ingest").rglob("*"))  # the staging copy is gone


def test_an_output_folder_without_write_permission_is_one_line(synthetic_copy, tmp_path, monkeypatch, capsys):
    """As root the suite cannot be refused by chmod, so the kernel's EACCES is raised where a folder is made."""
    import errno
    import os

    made = os.mkdir

    def forbidden(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return made(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", forbidden)
    code = cli.main(["preprocess", str(synthetic_copy / "ALL_IDB1"), "--out", str(tmp_path / "locked" / "roi")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'locked'}" in err and "Permission denied; use a folder you may write in" in err
