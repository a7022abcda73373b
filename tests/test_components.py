"""Each component called through `python_func` with real KFP artifact objects and real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components.ingest import ingest
from components.preprocess import preprocess
from components.segment import segment
from conftest import TINY


def _artifact(kind, tmp_path: Path, name: str):
    return kind(name=name, uri=str(tmp_path / name))


def _run_ingest(tmp_path: Path, data: str, overrides: dict | None = None, cells: str | None = None):
    dataset, metrics = _artifact(Dataset, tmp_path, "dataset"), _artifact(Metrics, tmp_path, "ingest_metrics")
    summary = _artifact(Artifact, tmp_path, "ingest_summary")
    ingest.python_func(smears=data, cells=data if cells is None else cells, profile="demo", overrides=json.dumps(overrides or TINY),
                       data_version="v1", dataset=dataset, metrics=metrics, summary=summary)
    assert json.loads(Path(summary.path).read_text())["images"] == dataset.metadata["images"]
    return dataset, metrics


def test_ingest_generates_synthetic_data_and_logs_counts(tmp_path):
    dataset, metrics = _run_ingest(tmp_path, "synthetic")
    root = Path(dataset.path)
    assert (root / "data" / "smears").is_dir() and (root / "data" / "cells").is_dir() and (root / "dataset.json").is_file()
    assert dataset.metadata["images"] == 14 and dataset.metadata["data_version"] == "v1"
    assert metrics.metadata["smears_L3"] == 2.0
    assert json.loads(Path(metrics.path).read_text())["images"] == 14.0
    assert not list(root.glob(".data.partial*"))


def test_ingest_copies_a_local_folder(tmp_path, synthetic_root):
    dataset, _ = _run_ingest(tmp_path, str(synthetic_root))
    copied = sorted(p.relative_to(Path(dataset.path) / "data" / "smears") for p in (Path(dataset.path) / "data").rglob("*.jpg"))
    assert copied == sorted(p.relative_to(synthetic_root / "ALL_IDB1") for p in synthetic_root.rglob("*.jpg"))


def test_ingest_takes_smears_and_cells_from_separate_places_or_no_cells(tmp_path, synthetic_root):
    dataset, metrics = _run_ingest(tmp_path / "a", str(synthetic_root / "ALL_IDB1"), cells="none")
    assert dataset.metadata["datasets"] == ["smears"] and dataset.metadata["images"] == 8
    folders = tmp_path / "folders"
    for label in ("normal", "blast"):
        (folders / label).mkdir(parents=True)
    for tif in sorted((synthetic_root / "ALL_IDB2").glob("*.tif")):
        (folders / ("blast" if tif.stem.endswith("_1") else "normal") / tif.name).write_bytes(tif.read_bytes())
    dataset, metrics = _run_ingest(tmp_path / "b", "synthetic", cells=str(folders))
    info = json.loads((Path(dataset.path) / "dataset.json").read_text())["datasets"]
    assert info["cells"]["layout"] == "folders" and info["cells"]["class_counts"] == {"normal": 3, "blast": 3}


def test_ingest_refuses_inputs_in_the_wrong_role(tmp_path, synthetic_root, capsys):
    with pytest.raises(SystemExit):
        _run_ingest(tmp_path, str(synthetic_root / "ALL_IDB2"), cells="none")
    assert f"error: {synthetic_root}/ALL_IDB2: holds single-cell images (ALL-IDB2 layout), not smears" in capsys.readouterr().err


def test_ingest_downloads_from_s3(tmp_path, synthetic_root, s3_env):
    from leukemia_mtl.data.storage import ObjectStore

    store = ObjectStore.from_env()
    store.ensure_bucket("raw")
    store.upload_dir(synthetic_root, "s3://raw/allidb")
    dataset, metrics = _run_ingest(tmp_path, "s3://raw/allidb")
    assert dataset.metadata["images"] == 14 and dataset.metadata["source"] == "smears: s3://raw/allidb; cells: s3://raw/allidb"


def test_ingest_stops_on_bad_data_naming_the_users_file_and_publishes_nothing(tmp_path, synthetic_copy, capsys):
    (synthetic_copy / "ALL_IDB1" / "Im001_1.jpg").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        _run_ingest(tmp_path, str(synthetic_copy))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {synthetic_copy}/ALL_IDB1/Im001_1.jpg: is empty (0 bytes)" in err  # the user's path, not staging
    assert "Traceback" not in err
    assert not (tmp_path / "dataset" / "data").exists()


@pytest.mark.parametrize("data, overrides, message", [
    ("{tmp}/nowhere", None, "neither 'synthetic', an s3:// URI, nor an existing folder"),
    ("synthetic", {"synth.n_smears": "lots"}, "setting 'synth.n_smears' must be int"),
])
def test_ingest_names_an_unusable_source_or_setting(tmp_path, capsys, data, overrides, message):
    with pytest.raises(SystemExit):
        _run_ingest(tmp_path, data.format(tmp=tmp_path), overrides)
    assert message in capsys.readouterr().err


def test_preprocess_component_writes_roi_metrics_and_overlay_page(tmp_path):
    dataset, _ = _run_ingest(tmp_path, "synthetic")
    roi, metrics, overlay = (_artifact(k, tmp_path, n) for k, n in ((Dataset, "roi"), (Metrics, "roi_metrics"), (HTML, "overlay")))
    preprocess.python_func(dataset=dataset, profile="demo", overrides=json.dumps(TINY), roi=roi, metrics=metrics, overlay=overlay)
    assert (Path(roi.path) / "manifest.csv").is_file()
    assert metrics.metadata["images"] == 14 and metrics.metadata["roi_mean_recall"] >= 0.85
    page = Path(overlay.path).read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "pixels below 98" in page


def test_segment_component_trains_isolates_and_logs_dice(tmp_path):
    dataset, _ = _run_ingest(tmp_path, "synthetic")
    roi, roi_metrics, overlay = (_artifact(k, tmp_path, n) for k, n in ((Dataset, "roi"), (Metrics, "roi_metrics"), (HTML, "overlay")))
    preprocess.python_func(dataset=dataset, profile="demo", overrides=json.dumps(TINY), roi=roi, metrics=roi_metrics, overlay=overlay)
    model, cells, metrics, figure = (_artifact(k, tmp_path, n) for k, n in
                                     ((Model, "model"), (Dataset, "cells"), (Metrics, "seg_metrics"), (HTML, "figure")))
    segment.python_func(dataset=dataset, roi=roi, profile="demo", overrides=json.dumps(TINY),
                        model=model, cells=cells, metrics=metrics, figure=figure)
    assert (Path(model.path) / "segmenter.keras").is_file() and model.metadata["mask_source"] == "ground truth"
    assert metrics.metadata["crops"] == cells.metadata["crops"] > 0
    assert {"unet_dice", "roi_dice", "unet_iou", "roi_iou", "cell_recall"} <= set(metrics.metadata)
    assert Path(figure.path).read_text().startswith("<!doctype html>")


def test_split_augment_and_finetune_components(stage_run, tmp_path):
    from kfp.dsl import Artifact

    from components.augment import augment
    from components.finetune import finetune_from_imagenet
    from components.split import split
    from conftest import SEGMENT_STAGE

    root, _, _ = stage_run
    overrides = json.dumps(SEGMENT_STAGE)
    dataset = Dataset(name="dataset", uri=str(root / "ingest"))
    cells = Dataset(name="cells", uri=str(root / "cells"))
    folds = _artifact(Artifact, tmp_path, "split")
    runs = split.python_func(dataset=dataset, backbones=["Xception", "InceptionV3"], profile="demo", overrides=overrides, split=folds)
    result = json.loads(Path(folds.path).read_text())
    assert folds.metadata["folds"] == len(result["folds"]) == 2
    assert runs == [{"fold": 0, "backbone": "Xception"}, {"fold": 0, "backbone": "InceptionV3"},
                    {"fold": 1, "backbone": "Xception"}, {"fold": 1, "backbone": "InceptionV3"}]
    data, metrics = _artifact(Dataset, tmp_path, "training_data"), _artifact(Metrics, tmp_path, "augment_metrics")
    augment.python_func(dataset=dataset, cells=cells, split=folds, fold=1, profile="demo", overrides=overrides,
                        training_data=data, metrics=metrics)
    assert data.metadata["fold"] == "r0f1"
    assert {p.name for p in Path(data.path).glob("*.npz")} == {"stage1.npz", "stage2.npz", "stage3.npz"}
    assert metrics.metadata["stage3_train"] > metrics.metadata["stage3_augmented"] > 0
    model, stage_metrics, curves, evaluation = (_artifact(k, tmp_path, n) for k, n in
                                                ((Model, "model"), (Metrics, "m"), (HTML, "curves"), (Artifact, "evaluation")))
    finetune_from_imagenet.python_func(training_data=data, backbone="Xception", stage="classical", task="detection",
                                       profile="demo", overrides=overrides, model=model, metrics=stage_metrics, curves=curves,
                                       evaluation=evaluation)
    assert sorted(p.name for p in Path(evaluation.path).iterdir()) == [  # the small files only: no weights
        "classifier.json", "explanations.png", "history.json", "predictions.npz", "summary.json"]
    assert evaluation.metadata["fold"] == "r0f1"
    assert model.metadata["imagenet"] is False and model.metadata["task"] == "detection"
    assert 0 <= stage_metrics.metadata["eval_accuracy"] <= 1
    assert (Path(model.path) / "classifier.keras").is_file()
