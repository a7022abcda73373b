"""Each component called through `python_func` with real KFP artifact objects and real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kfp.dsl import HTML, Artifact, Dataset, Metrics, Model

from components.ingest import ingest
from components.preprocess import preprocess
from components.segment import segment
from helpers import BACKBONE, TINY


def _artifact(kind, tmp_path: Path, name: str):
    return kind(name=name, uri=str(tmp_path / name))


def _run_ingest(tmp_path: Path, data: str, overrides: dict | None = None, cells: str | None = None):
    dataset, metrics = _artifact(Dataset, tmp_path, "dataset"), _artifact(Metrics, tmp_path, "ingest_metrics")
    summary = _artifact(Artifact, tmp_path, "ingest_summary")
    ingest.python_func(
        smears=data,
        cells=data if cells is None else cells,
        profile="demo",
        overrides=json.dumps(overrides or TINY),
        data_version="v1",
        dataset=dataset,
        metrics=metrics,
        summary=summary,
    )
    assert json.loads(Path(summary.path).read_text())["images"] == dataset.metadata["images"]
    return dataset, metrics


def test_ingest_generates_synthetic_data_and_logs_counts(tmp_path):
    dataset, metrics = _run_ingest(tmp_path, "synthetic")
    root = Path(dataset.path)
    assert (
        (root / "data" / "smears").is_dir() and (root / "data" / "cells").is_dir() and (root / "dataset.json").is_file()
    )
    assert dataset.metadata["images"] == 14 and dataset.metadata["data_version"] == "v1"
    assert metrics.metadata["smears_L3"] == 2.0
    assert json.loads(Path(metrics.path).read_text())["images"] == 14.0
    assert not list(root.glob(".data.partial*"))


def test_ingest_copies_a_local_folder(tmp_path, synthetic_root):
    dataset, _ = _run_ingest(tmp_path, str(synthetic_root))
    copied = sorted(
        p.relative_to(Path(dataset.path) / "data" / "smears") for p in (Path(dataset.path) / "data").rglob("*.jpg")
    )
    assert copied == sorted(p.relative_to(synthetic_root / "ALL_IDB1") for p in synthetic_root.rglob("*.jpg"))


def test_ingest_takes_smears_and_cells_from_separate_places_or_no_cells(tmp_path, synthetic_root):
    dataset, _ = _run_ingest(tmp_path / "a", str(synthetic_root / "ALL_IDB1"), cells="none")
    assert dataset.metadata["datasets"] == ["smears"] and dataset.metadata["images"] == 8
    folders = tmp_path / "folders"
    for label in ("normal", "blast"):
        (folders / label).mkdir(parents=True)
    for tif in sorted((synthetic_root / "ALL_IDB2").glob("*.tif")):
        (folders / ("blast" if tif.stem.endswith("_1") else "normal") / tif.name).write_bytes(tif.read_bytes())
    dataset, _metrics = _run_ingest(tmp_path / "b", "synthetic", cells=str(folders))
    info = json.loads((Path(dataset.path) / "dataset.json").read_text())["datasets"]
    assert info["cells"]["layout"] == "folders" and info["cells"]["class_counts"] == {"normal": 3, "blast": 3}


def test_ingest_refuses_inputs_in_the_wrong_role(tmp_path, synthetic_root, capsys):
    with pytest.raises(SystemExit):
        _run_ingest(tmp_path, str(synthetic_root / "ALL_IDB2"), cells="none")
    assert (
        f"error: {synthetic_root}/ALL_IDB2: holds single-cell images (ALL-IDB2 layout), not smears"
        in capsys.readouterr().err
    )


def test_ingest_downloads_from_s3(tmp_path, synthetic_root, s3_env):
    from leukemia_mtl.data.storage import ObjectStore

    store = ObjectStore.from_env()
    store.ensure_bucket("raw")
    store.upload_dir(synthetic_root, "s3://raw/allidb")
    dataset, _metrics = _run_ingest(tmp_path, "s3://raw/allidb")
    assert (
        dataset.metadata["images"] == 14
        and dataset.metadata["source"] == "smears: s3://raw/allidb; cells: s3://raw/allidb"
    )


def test_ingest_stops_on_bad_data_naming_the_users_file_and_publishes_nothing(tmp_path, synthetic_copy, capsys):
    (synthetic_copy / "ALL_IDB1" / "Im001_1.jpg").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        _run_ingest(tmp_path, str(synthetic_copy))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {synthetic_copy}/ALL_IDB1/Im001_1.jpg: is empty (0 bytes)" in err  # the user's path, not staging
    assert "Traceback" not in err
    assert not (tmp_path / "dataset" / "data").exists()


@pytest.mark.parametrize(
    "data, overrides, message",
    [
        ("{tmp}/nowhere", None, "neither 'synthetic', an s3:// URI, nor an existing folder"),
        ("synthetic", {"synth.n_smears": "lots"}, "setting 'synth.n_smears' must be int"),
    ],
)
def test_ingest_names_an_unusable_source_or_setting(tmp_path, capsys, data, overrides, message):
    with pytest.raises(SystemExit):
        _run_ingest(tmp_path, data.format(tmp=tmp_path), overrides)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_preprocess_component_writes_roi_metrics_and_overlay_page(tmp_path):
    dataset, _ = _run_ingest(tmp_path, "synthetic")
    roi, metrics, overlay = (
        _artifact(k, tmp_path, n) for k, n in ((Dataset, "roi"), (Metrics, "roi_metrics"), (HTML, "overlay"))
    )
    preprocess.python_func(
        dataset=dataset, profile="demo", overrides=json.dumps(TINY), roi=roi, metrics=metrics, overlay=overlay
    )
    assert (Path(roi.path) / "manifest.csv").is_file()
    assert metrics.metadata["images"] == 14 and metrics.metadata["roi_mean_recall"] >= 0.85
    page = Path(overlay.path).read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "pixels below 98" in page


@pytest.mark.slow
def test_segment_component_trains_isolates_and_logs_dice(tmp_path):
    dataset, _ = _run_ingest(tmp_path, "synthetic")
    roi, roi_metrics, overlay = (
        _artifact(k, tmp_path, n) for k, n in ((Dataset, "roi"), (Metrics, "roi_metrics"), (HTML, "overlay"))
    )
    preprocess.python_func(
        dataset=dataset, profile="demo", overrides=json.dumps(TINY), roi=roi, metrics=roi_metrics, overlay=overlay
    )
    model, cells, metrics, figure = (
        _artifact(k, tmp_path, n)
        for k, n in ((Model, "model"), (Dataset, "cells"), (Metrics, "seg_metrics"), (HTML, "figure"))
    )
    segment.python_func(
        dataset=dataset,
        roi=roi,
        profile="demo",
        overrides=json.dumps(TINY),
        model=model,
        cells=cells,
        metrics=metrics,
        figure=figure,
    )
    assert (Path(model.path) / "segmenter.keras").is_file() and model.metadata["mask_source"] == "ground truth"
    assert metrics.metadata["crops"] == cells.metadata["crops"] > 0
    assert {"unet_dice", "roi_dice", "unet_iou", "roi_iou", "cell_recall"} <= set(metrics.metadata)
    assert Path(figure.path).read_text().startswith("<!doctype html>")


@pytest.mark.slow
def test_split_augment_and_finetune_components(stage_run, tmp_path):
    from kfp.dsl import Artifact

    from components.augment import augment
    from components.finetune import finetune_from_imagenet
    from components.split import split
    from helpers import SEGMENT_STAGE

    root, _, _ = stage_run
    overrides = json.dumps(SEGMENT_STAGE)
    dataset = Dataset(name="dataset", uri=str(root / "ingest"))
    cells = Dataset(name="cells", uri=str(root / "cells"))
    folds = _artifact(Artifact, tmp_path, "split")
    runs = split.python_func(
        dataset=dataset, backbones=["MobileNetV2", "InceptionV3"], profile="demo", overrides=overrides, split=folds
    )
    result = json.loads(Path(folds.path).read_text())
    assert folds.metadata["folds"] == len(result["folds"]) == 2
    assert runs == [
        {"fold": 0, "backbone": "MobileNetV2"},
        {"fold": 0, "backbone": "InceptionV3"},
        {"fold": 1, "backbone": "MobileNetV2"},
        {"fold": 1, "backbone": "InceptionV3"},
    ]
    data, metrics = _artifact(Dataset, tmp_path, "training_data"), _artifact(Metrics, tmp_path, "augment_metrics")
    augment.python_func(
        dataset=dataset,
        cells=cells,
        split=folds,
        fold=1,
        profile="demo",
        overrides=overrides,
        training_data=data,
        metrics=metrics,
    )
    assert data.metadata["fold"] == "r0f1"
    assert {p.name for p in Path(data.path).glob("*.npz")} == {"stage1.npz", "stage2.npz", "stage3.npz"}
    assert metrics.metadata["stage3_train"] > metrics.metadata["stage3_augmented"] > 0
    model, stage_metrics, curves, evaluation = (
        _artifact(k, tmp_path, n)
        for k, n in ((Model, "model"), (Metrics, "m"), (HTML, "curves"), (Artifact, "evaluation"))
    )
    finetune_from_imagenet.python_func(
        training_data=data,
        backbone="MobileNetV2",
        stage="classical",
        task="detection",
        profile="demo",
        overrides=overrides,
        model=model,
        metrics=stage_metrics,
        curves=curves,
        evaluation=evaluation,
    )
    assert sorted(p.name for p in Path(evaluation.path).iterdir()) == [  # the small files only: no weights
        "classifier.json",
        "explanations.png",
        "history.json",
        "predictions.npz",
        "summary.json",
    ]
    assert evaluation.metadata["fold"] == "r0f1"
    assert model.metadata["imagenet"] is True and model.metadata["task"] == "detection"
    assert 0 <= stage_metrics.metadata["eval_accuracy"] <= 1
    assert (Path(model.path) / "classifier.keras").is_file()


# crossval, ttest, release and report, fed from the shared tiny run's own artifacts (the demo_run fixture)


def _run_root(outputs: dict) -> Path:
    """The pipeline root folder of the run: every task's artifacts lie under it."""
    return Path(outputs["crossval"]["path"]).parents[1]


def _trained(outputs: dict) -> dict[str, list[dict[str, Path]]]:
    """Every training task's evaluation and model folders, per stage key (stage3_detection, ...), in the
    ParallelFor's order as dsl.Collected gives them; read from each evaluation's classifier.json."""
    from leukemia_mtl.stages import TRAINING_STAGES

    key_of = {(s.kind, s.task): s.key for s in TRAINING_STAGES}
    trained: dict[str, list[dict[str, Path]]] = {s.key: [] for s in TRAINING_STAGES}
    for described in sorted(_run_root(outputs).rglob("evaluation/classifier.json")):
        info = json.loads(described.read_text())
        task_dir = described.parent.parent
        trained[key_of[info["stage"], info["task"]]].append(
            {"evaluation": task_dir / "evaluation", "model": task_dir / "model"}
        )
    return trained


def _inputs(kind, folders: list[Path]) -> list:
    return [kind(name=folder.name, uri=str(folder)) for folder in folders]


def _read(path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.mark.slow
def test_crossval_component_scores_every_fold_task_and_arm_of_the_run(demo_run, tmp_path):
    """The run's held-out predictions in, the run's own crossval JSON out, and KFP's views of the right size."""
    from kfp.dsl import ClassificationMetrics

    from components.crossval import crossval

    _, outputs, _ = demo_run
    trained = _trained(outputs)
    scored = {
        key: _inputs(Artifact, [t["evaluation"] for t in trained[key]])
        for key in ("stage3_detection", "stage3_fab", "classical_detection", "classical_fab")
    }
    results, metrics = _artifact(Artifact, tmp_path, "results"), _artifact(Metrics, tmp_path, "metrics")
    views = {
        name: _artifact(ClassificationMetrics, tmp_path, name)
        for name in ("detection_mtl", "detection_ctl", "fab_mtl", "fab_ctl")
    }
    crossval.python_func(
        baselines=Artifact(name="predictions", uri=str(_run_root(outputs) / "baseline" / "predictions")),
        profile="demo",
        overrides=json.dumps(TINY),
        results=results,
        metrics=metrics,
        **scored,
        **views,
    )

    result = _read(results.path)
    folds = sorted({_read(t["evaluation"] / "summary.json")["fold_id"] for t in trained["stage3_fab"]})
    backbones = {_read(t["evaluation"] / "classifier.json")["backbone"] for t in trained["stage3_fab"]}
    assert result["folds"] == folds == ["r0f0", "r0f1"] and results.metadata["folds"] == 2
    for task in ("detection", "fab"):
        assert set(result["tasks"][task]) == backbones and set(result["baselines"][task]) == {
            "colour",
            "majority",
            "features",
        }
        for arms in (*result["tasks"][task].values(), result["baselines"][task]):
            for arm, scored_arm in arms.items():
                assert sorted(f["fold_id"] for f in scored_arm["folds"]) == folds, (task, arm)
        assert all(set(arms) == {"mtl", "ctl"} for arms in result["tasks"][task].values())
        assert f"{task}_{result['best'][task]}_mtl_balanced_accuracy" in metrics.metadata
    assert result == _read(outputs["crossval"]["path"])  # the pipeline's own crossval artifact, number for number

    split = _read(outputs["split"]["path"])
    smears = sum(1 for fold in split["folds"] for group in fold["eval_groups"] if group.startswith("smears/"))
    for name, view in views.items():
        matrix = [row["row"] for row in view.metadata["confusionMatrix"]["rows"]]
        classes = [spec["displayName"] for spec in view.metadata["confusionMatrix"]["annotationSpecs"]]
        assert len(classes) == len(matrix) == (2 if name.startswith("detection") else 4), name
        assert all(len(row) == len(classes) for row in matrix)
        assert sum(map(sum, matrix)) == smears, name  # pooled over the evaluation folds: every smear once
        assert view.metadata["confidenceMetrics"] and _read(view.path)["matrix"] == matrix


@pytest.mark.slow
def test_ttest_component_compares_each_task_and_backbone_with_the_papers_table_v(demo_run, tmp_path):
    """Every (task, backbone) gets the three comparisons on the run's folds, beside the paper's Table V re-tested."""
    from components.ttest import ttest

    _, outputs, _ = demo_run
    scored = _read(outputs["crossval"]["path"])
    results, metrics = _artifact(Artifact, tmp_path, "results"), _artifact(Metrics, tmp_path, "metrics")
    ttest.python_func(
        crossval=Artifact(name="results", uri=outputs["crossval"]["path"]),
        profile="demo",
        overrides=json.dumps(TINY),
        results=results,
        metrics=metrics,
    )

    result = _read(results.path)
    pairs = (("ctl", "mtl"), ("colour", "mtl"), ("colour", "ctl"), ("features", "mtl"), ("features", "ctl"))
    assert {(c["task"], c["backbone"], c["first"], c["second"]) for c in result["comparisons"]} == {
        (task, backbone, first, second)
        for task, by_backbone in scored["tasks"].items()
        for backbone in by_backbone
        for first, second in pairs
    }
    metric = result["metric"]
    for comparison in result["comparisons"]:
        arms = {
            **scored["baselines"][comparison["task"]],
            **scored["tasks"][comparison["task"]][comparison["backbone"]],
        }
        assert comparison["folds"] == scored["folds"]
        for side in ("first", "second"):
            by_fold = {f["fold_id"]: f[metric] for f in arms[comparison[side]]["folds"]}
            assert comparison[f"{side}_scores"] == [by_fold[f] for f in comparison["folds"]]
        if comparison["tests"]:
            name = f"{comparison['task']}_{comparison['backbone']}_{comparison['second']}_vs_{comparison['first']}"
            assert metrics.metadata[f"{name}_mean_difference"] == pytest.approx(
                comparison["tests"][0]["mean_difference"], abs=1e-4
            )
    table_v = result["paper_table_v"]
    assert table_v["claimed"] == {"t": pytest.approx(0.8531, abs=1e-4), "p": 0.0001, "df": 18}
    assert table_v["p_of_claimed_t"] == pytest.approx(0.405, abs=1e-3) and table_v["tests"]
    assert result == _read(outputs["ttest"]["path"])


def _release(outputs: dict, tmp_path: Path, crossval_path: str, overrides: dict):
    from components.release import release

    trained = _trained(outputs)
    models = {
        key: _inputs(Model, [t["model"] for t in trained[key]])
        for key in ("stage2", "stage3_detection", "stage3_fab", "classical_detection", "classical_fab")
    }
    model, manifest = _artifact(Model, tmp_path, "model"), _artifact(Artifact, tmp_path, "manifest")
    release.python_func(
        crossval=Artifact(name="results", uri=crossval_path),
        data_summary=Artifact(name="summary", uri=str(_run_root(outputs) / "ingest" / "summary")),
        segmenter=Model(name="model", uri=outputs["segmenter"]["path"]),
        profile="demo",
        overrides=json.dumps(overrides),
        model=model,
        manifest=manifest,
        **models,
    )
    return model, _read(manifest.path)


@pytest.mark.slow
def test_release_component_bundles_the_selected_models_with_checksums_or_refuses(demo_run, tmp_path):
    """The run's models in: a checksummed folder whose selection names the run's backbones and folds, the
    run's own version (content-derived); and, with the gate set to refuse, no model once a baseline is unbeatable."""
    import hashlib

    _, outputs, _ = demo_run
    scored = _read(outputs["crossval"]["path"])
    model, manifest = _release(outputs, tmp_path / "flag", outputs["crossval"]["path"], TINY)
    backbones = {b for by_backbone in scored["tasks"].values() for b in by_backbone}
    for task in ("detection", "fab", "cells"):
        pick = manifest["selection"][task]
        assert pick["backbone"] in backbones and pick["arm"] in ("mtl", "ctl") and pick["fold_id"] in scored["folds"], (
            task
        )
    assert manifest["files"] and {name.split("/")[0] for name in manifest["files"]} >= {
        "segmenter",
        "detection",
        "fab",
        "cells",
    }
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((Path(model.path) / name).read_bytes()).hexdigest() == digest, name
    assert manifest["gate"]["action"] == "flag" and manifest["version"] == outputs["release"]["metadata"]["version"]
    assert model.metadata["gate_passed"] == manifest["gate"]["passed"] and manifest["published_to"] is None
    if not manifest["gate"]["passed"]:  # flag: released all the same, and the reasons say why it fails
        assert manifest["gate"]["reasons"] and not manifest.get("refused")

    for by_arm in scored["baselines"].values():  # an unbeatable colour baseline: the gate must say no
        by_arm["colour"]["summary"][scored["metric"]]["mean"] = 1.0
    unbeatable = tmp_path / "crossval.json"
    unbeatable.write_text(json.dumps(scored))
    model, manifest = _release(
        outputs, tmp_path / "refuse", str(unbeatable), {**TINY, "evaluate.release_gate": "refuse"}
    )
    assert manifest["refused"] and manifest["version"] is None and manifest["files"] == {}
    assert any("does not beat the colour baseline" in reason for reason in manifest["gate"]["reasons"])
    assert (
        sorted(p.name for p in Path(model.path).iterdir()) == ["manifest.json"]
        and model.metadata["version"] == "refused"
    )


@pytest.mark.slow
def test_report_component_writes_the_page_and_the_runs_summary(demo_run, tmp_path):
    """Every upstream artifact of the run in: an HTML page and a summary.json equal to the run's own."""
    from components.report import report

    out, outputs, _ = demo_run
    root = _run_root(outputs)
    trained = _trained(outputs)
    evaluations = {key: _inputs(Artifact, [t["evaluation"] for t in runs]) for key, runs in trained.items()}

    def given(kind, path):
        return kind(name=Path(path).name, uri=str(path))

    html, summary = _artifact(HTML, tmp_path, "html"), _artifact(Artifact, tmp_path, "summary")
    report.python_func(
        data_summary=given(Artifact, root / "ingest" / "summary"),
        split=given(Artifact, outputs["split"]["path"]),
        roi_metrics=given(Metrics, root / "preprocess" / "metrics"),
        roi_overlay=given(HTML, outputs["roi_overlay"]["path"]),
        segment_metrics=given(Metrics, root / "segment" / "metrics"),
        segmentation=given(HTML, outputs["segmentation"]["path"]),
        crossval=given(Artifact, outputs["crossval"]["path"]),
        ttest=given(Artifact, outputs["ttest"]["path"]),
        release_manifest=given(Artifact, outputs["release_manifest"]["path"]),
        profile="demo",
        overrides=json.dumps(TINY),
        html=html,
        summary=summary,
        **evaluations,
    )

    page = Path(html.path).read_text()
    assert page.startswith("<!doctype html>") and "Headline" in page and "data:image/png;base64," in page
    result = _read(summary.path)
    assert (
        result["folds"] == _read(outputs["crossval"]["path"])["folds"]
        and summary.metadata["schema"] == result["schema"]
    )
    assert result == _read(out / "summary.json")  # the run's summary, number for number


@pytest.mark.slow
def test_baseline_component_scores_the_runs_folds_as_the_run_did(demo_run, tmp_path):
    """The run's dataset and split in; both baselines on every fold out, the same predictions as the run's task."""
    from components.baseline import baseline

    _, outputs, _ = demo_run
    root = _run_root(outputs)
    predictions = _artifact(Artifact, tmp_path, "predictions")
    baseline.python_func(
        dataset=Dataset(name="dataset", uri=outputs["dataset"]["path"]),
        split=Artifact(name="split", uri=outputs["split"]["path"]),
        profile="demo",
        overrides=json.dumps(TINY),
        predictions=predictions,
    )

    theirs = root / "baseline" / "predictions"
    assert predictions.metadata == {"arms": ["colour", "majority", "features"], "folds": 2}  # TINY has ImageNet weights
    assert sorted(p.name for p in Path(predictions.path).iterdir()) == sorted(p.name for p in theirs.iterdir())
    for folder in sorted(theirs.glob("*_r0f*")):
        with (
            np.load(Path(predictions.path) / folder.name / "predictions.npz") as ours,
            np.load(folder / "predictions.npz") as run,
        ):
            for field in ("probabilities", "labels", "sources"):
                assert np.array_equal(ours[field], run[field]), (folder.name, field)


@pytest.mark.slow
def test_finetune_from_previous_component_continues_the_runs_stage_1(demo_run, tmp_path):
    """Stage 2 from the run's stage-1 model of one fold: the backbone carried over, a new sigmoid head, the
    evaluation folder crossval reads."""
    from components.finetune import finetune_from_previous

    _, outputs, _ = demo_run
    stage1 = _trained(outputs)["stage1"][0]
    iteration = stage1["model"].parent.parent
    model, metrics, curves, evaluation = (
        _artifact(k, tmp_path, n)
        for k, n in ((Model, "model"), (Metrics, "m"), (HTML, "curves"), (Artifact, "evaluation"))
    )
    finetune_from_previous.python_func(
        training_data=Dataset(name="training_data", uri=str(iteration / "augment" / "training_data")),
        previous=Model(name="model", uri=str(stage1["model"])),
        backbone=BACKBONE,
        stage="stage2",
        task="blast",
        profile="demo",
        overrides=json.dumps(TINY),
        model=model,
        metrics=metrics,
        curves=curves,
        evaluation=evaluation,
    )

    summary = _read(Path(evaluation.path) / "summary.json")
    assert summary["stage"] == "stage2" and summary["weights"].startswith("stage1 (") and summary["carried_over"]
    assert summary["fold_id"] == _read(stage1["evaluation"] / "summary.json")["fold_id"]
    assert _read(Path(model.path) / "classifier.json")["head"] == "sigmoid" and model.metadata["stage"] == "stage2"
    assert metrics.metadata["train_images"] > 0 and "stage 2 (blast)" in Path(curves.path).read_text()
