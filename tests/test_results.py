"""The typed cross-validation results and run summary: they give back the JSON they read, iterate in the
results' order, and take plain dicts as well."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from leukemia_mtl.evaluate import run_crossval
from leukemia_mtl.results import BASELINE_MODEL, ArmResult, CrossvalResult, ResultsError, RunSummary
from leukemia_mtl.stages import BASELINE_ARMS
from test_evaluate import CLASSES, _predictions

TASKS = {"detection": ("normal", "ALL"), "fab": CLASSES}
ARMS = {
    "mtl": ("stage3", "InceptionV3", "Xception"),
    "ctl": ("classical", "InceptionV3", "Xception"),
    "colour": ("baseline", "colour histogram"),
    "majority": ("baseline", "majority class"),
    # named by its backbone, which sorts before the others: the baselines still come in BASELINE_ARMS' order
    "features": ("baseline", "DenseNet121 ImageNet features (224 px) + logistic regression"),
}


def _model_folder(folder, task, arm, stage, backbone, fold: int, seed: int) -> None:
    """A finetune task's evaluation folder (classifier.json, summary.json, predictions.npz), as load_fold_predictions reads it."""
    classes = TASKS[task]
    labels, probabilities = _predictions(seed, 12, classes)
    val_labels, val_probabilities = _predictions(seed + 1, 8, classes)
    folder.mkdir(parents=True)
    info = {"stage": stage, "task": task, "backbone": backbone, "classes": list(classes)}
    (folder / "classifier.json").write_text(json.dumps({**info, "arm": arm} if stage == "baseline" else info))
    (folder / "summary.json").write_text(
        json.dumps({"fold_id": f"r0f{fold}", "repeat": 0, "fold": fold, "train_source_images": 24})
    )
    buffer = io.BytesIO()
    np.savez(
        buffer,
        probabilities=probabilities,
        labels=labels,
        sources=np.array([f"s{fold}-{i}" for i in range(12)]),
        val_labels=val_labels,
        val_probabilities=val_probabilities,
    )
    (folder / "predictions.npz").write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def crossval_json(tmp_path_factory):
    """run_crossval's JSON over two tasks, two backbones, both arms and the three baselines, on two folds."""
    root = tmp_path_factory.mktemp("crossval")
    models, baselines = [], []
    seed = 0
    for task in TASKS:
        for arm, (stage, *backbones) in ARMS.items():
            for backbone in backbones:
                for fold in range(2):
                    folder = root / f"{task}-{arm}-{backbone.replace(' ', '_')}-{fold}"
                    _model_folder(folder, task, arm, stage, backbone, fold, seed)
                    (baselines if stage == "baseline" else models).append(folder)
                    seed += 2
    result = run_crossval(models, root / "crossval.json", baselines)
    return root / "crossval.json", result


def test_the_written_json_is_the_result_and_reads_back_unchanged(crossval_json):
    path, result = crossval_json
    written = json.loads(path.read_text())
    assert isinstance(result, CrossvalResult) and result.to_dict() == written
    again = CrossvalResult.from_dict(written)
    assert again.to_dict() == written and again == result
    assert json.dumps(again.to_dict(), indent=2, sort_keys=True) + "\n" == path.read_text()  # byte for byte
    assert CrossvalResult.load(path) == result
    assert set(written) == {"folds", "metric", "tasks", "baselines", "best"}
    assert written["folds"] == ["r0f0", "r0f1"] and written["metric"] == "balanced_accuracy"


def test_arms_come_task_by_task_by_backbone_then_the_baselines(crossval_json):
    _, result = crossval_json
    assert result.task_names == ("detection", "fab")
    assert result.backbones() == ["InceptionV3", "Xception"] and result.backbones("fab") == ["InceptionV3", "Xception"]
    assert [(r.task, r.backbone, r.arm) for r in result.arms("detection")] == [
        ("detection", "InceptionV3", "ctl"),
        ("detection", "InceptionV3", "mtl"),
        ("detection", "Xception", "ctl"),
        ("detection", "Xception", "mtl"),
    ]
    assert [(r.backbone, r.arm) for r in result.arms("fab", "Xception", baselines=True)] == [
        ("Xception", "ctl"),
        ("Xception", "mtl"),
        (BASELINE_MODEL, "colour"),
        (BASELINE_MODEL, "majority"),
        (BASELINE_MODEL, "features"),
    ]
    every = [(r.task, r.arm) for r in result.arms(baselines=True)]
    assert len(every) == 2 * (4 + 3) and every.index(("fab", "ctl")) > every.index(("detection", "features"))
    assert [r.arm for r in result.baseline_arms("fab")] == list(BASELINE_ARMS) and result.baseline_arms("blast") == []
    assert [r.arm for r in CrossvalResult.load(crossval_json[0]).baseline_arms("fab")] == list(
        BASELINE_ARMS
    )  # sorted keys
    assert list(result.arms("blast")) == []
    assert all(r.is_baseline for r in result.baseline_arms("detection")) and not any(
        r.is_baseline for r in result.arms()
    )


def test_an_arm_names_the_fields_of_its_json(crossval_json):
    path, result = crossval_json
    written = json.loads(path.read_text())
    mtl = result.arm("fab", "Xception", "mtl")
    scores = written["tasks"]["fab"]["Xception"]["mtl"]
    assert isinstance(mtl, ArmResult) and mtl.scores == scores
    assert mtl.classes == list(CLASSES) and mtl.folds == scores["folds"] and mtl.degenerate == scores["degenerate"]
    assert mtl.cv_mean("accuracy") == scores["summary"]["accuracy"]["mean"]
    assert mtl.inner_mean("balanced_accuracy") == scores["inner_validation"]["balanced_accuracy"]["mean"]
    assert mtl.fold_scores("accuracy") == {f["fold_id"]: f["accuracy"] for f in scores["folds"]}
    assert result.arm("fab", BASELINE_MODEL, "colour").scores == written["baselines"]["fab"]["colour"]
    assert result.best_arm("detection", "ctl").backbone == written["best"]["detection"]
    with pytest.raises(KeyError):
        result.arm("fab", "Xception", "colour")
    categories, matrix, curve = result.arm("detection", "Xception", "mtl").kfp_classification_view()
    assert (
        categories == ["normal", "ALL"]
        and matrix == written["tasks"]["detection"]["Xception"]["mtl"]["confusion_matrix"]
    )
    assert curve == written["tasks"]["detection"]["Xception"]["mtl"]["roc"]["ALL"]


def test_the_kfp_metrics_cover_every_arm_and_baseline(crossval_json):
    _, result = crossval_json
    values = result.kfp_metrics()
    assert values["fab_Xception_mtl_accuracy"] == round(result.arm("fab", "Xception", "mtl").cv_mean("accuracy"), 4)
    assert "detection_baseline_majority_degenerate" in values
    assert len([k for k in values if k.endswith("_degenerate")]) == 14 and "fab_baseline_features_accuracy" in values


def test_plain_dicts_are_accepted_and_what_is_not_results_is_refused(crossval_json):
    path, result = crossval_json
    assert CrossvalResult.of(result) is result
    assert CrossvalResult.of(json.loads(path.read_text())) == result
    hand_built = CrossvalResult.of({"tasks": result.tasks_tree()})  # as a test builds one: no folds, baselines, best
    assert hand_built.folds == () and hand_built.metric is None and hand_built.baseline_arms("fab") == []
    assert [r.arm for r in hand_built.arms("fab")] == ["ctl", "mtl", "ctl", "mtl"]
    with pytest.raises(ResultsError, match="not cross-validation results"):
        CrossvalResult.of({"comparisons": []})
    with pytest.raises(ResultsError, match="not a cross-validation results file"):
        CrossvalResult.load(path.parent / "missing.json")


def test_summary_rows_read_multistage_first_then_the_baselines():
    arm = {"folds": [], "mean": {"accuracy": 0.5}, "std": {"accuracy": 0.1}, "degenerate": []}
    summary = RunSummary.of(
        {
            "schema": "leukemia-mtl/summary/2",
            "folds": ["r0f0"],
            "tasks": {"fab": {"Xception": {"ctl": arm, "mtl": arm}}, "detection": {"A": {"ctl": arm}}},
            "baselines": {"fab": {"features": arm, "majority": arm, "colour": {**arm, "degenerate": ["flag"]}}},
        }
    )
    assert [(r.task, r.model, r.arm) for r in summary.rows()] == [
        ("detection", "A", "ctl"),
        ("fab", "Xception", "mtl"),
        ("fab", "Xception", "ctl"),
        ("fab", BASELINE_MODEL, "colour"),
        ("fab", BASELINE_MODEL, "majority"),
        ("fab", BASELINE_MODEL, "features"),
    ]
    colour = list(summary.rows("fab"))[-3]
    assert colour.is_baseline and colour.degenerate == ["flag"] and colour.mean["accuracy"] == 0.5
    assert (
        summary.headline == {} and summary.expectations == [] and summary.release is None
    )  # an older schema's summary
    assert RunSummary.of(summary) is summary and RunSummary.from_dict(summary.to_dict()) == summary
    assert colour.operating_point is None and colour.degenerate_operating_point is None


def test_a_degenerate_operating_point_is_read_where_flagged_and_none_elsewhere(crossval_json):
    """Detection's operating points carry the flag (None where the threshold leaves some smear negative); results
    written before the flag, and multiclass points, read as not degenerate."""
    path, result = crossval_json
    for arm in result.arms("detection", baselines=True):
        assert (
            "degenerate" in arm.operating_point and arm.degenerate_operating_point == arm.operating_point["degenerate"]
        )
    assert all(arm.degenerate_operating_point is None for arm in result.arms("fab", baselines=True))
    older = json.loads(path.read_text())
    for arm in older["tasks"]["detection"]["Xception"].values():
        arm["operating_point"].pop("degenerate")
    assert CrossvalResult.of(older).arm("detection", "Xception", "mtl").degenerate_operating_point is None
    assert (
        CrossvalResult.of({"tasks": {"fab": {"X": {"mtl": {}}}}}).arm("fab", "X", "mtl").degenerate_operating_point
        is None
    )
    flagged = {"operating_point": {"degenerate": "P(ALL) >= 0.0000 ..."}}
    row = next(RunSummary.of({"tasks": {"detection": {"X": {"mtl": flagged}}}}).rows())
    assert row.degenerate_operating_point == "P(ALL) >= 0.0000 ..."
