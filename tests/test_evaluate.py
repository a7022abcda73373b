"""Cross-validation metrics against scikit-learn, leakage-free folds, and the run report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn import metrics as skm

from helpers import fold_predictions
from leukemia_mtl.config import get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.evaluate import FoldPredictions, cross_validate, fold_metrics, roc_curves
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.train.data import make_folds

CLASSES = ("normal", "L1", "L2", "L3")


def _predictions(seed: int, n: int = 40, classes=CLASSES):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(classes)
    logits = rng.normal(size=(n, len(classes))) + 1.5 * np.eye(len(classes))[labels]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probabilities


def _fab_fold(k: int, **fields) -> FoldPredictions:
    """Fold k of the fab task's multistage arm: _predictions(k)'s 40 images (`fields`: as fold_predictions takes them)."""
    return fold_predictions("fab", "mtl", k, *_predictions(k), classes=CLASSES, **fields)


def test_fold_metrics_equal_scikit_learn_on_fixed_predictions():
    labels, probabilities = _predictions(0)
    predicted = probabilities.argmax(axis=1)
    result = fold_metrics(CLASSES, labels, probabilities)
    assert result["accuracy"] == skm.accuracy_score(labels, predicted)
    for average in ("macro", "weighted"):
        assert result[f"precision_{average}"] == skm.precision_score(
            labels, predicted, average=average, zero_division=0
        )
        assert result[f"recall_{average}"] == skm.recall_score(labels, predicted, average=average, zero_division=0)
        assert result[f"f1_{average}"] == skm.f1_score(labels, predicted, average=average, zero_division=0)
    assert result["confusion_matrix"] == skm.confusion_matrix(labels, predicted).tolist()
    assert result["per_class"]["L2"]["recall"] == skm.recall_score(labels, predicted, labels=[2], average=None)[0]
    assert result["auc_macro"] == pytest.approx(
        skm.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert result["auc_micro"] == pytest.approx(
        skm.roc_auc_score(labels, probabilities, multi_class="ovr", average="micro"), abs=1e-12
    )


def test_fold_metrics_by_hand_on_a_tiny_binary_case():
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    result = fold_metrics(("normal", "ALL"), labels, probabilities)
    # predicted 0 1 1 1 0: TP=2 FP=1 FN=1 TN=1
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["per_class"]["ALL"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["ALL"]["recall"] == pytest.approx(2 / 3)
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]
    assert result["auc"]["ALL"] == pytest.approx(5 / 6)  # 5 of the 6 (ALL, normal) pairs ranked right


def test_a_class_missing_from_a_fold_has_no_auc_instead_of_an_error():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.full((4, 4), 0.25)
    result = fold_metrics(CLASSES, labels, probabilities)
    assert result["auc"]["L2"] is None and result["auc"]["normal"] is not None


def test_cross_validate_means_pooled_confusion_and_roc():
    folds = [_fab_fold(k, sources=np.array([f"s/{k}-{i}" for i in range(40)]), model_dir=f"/m{k}") for k in range(3)]
    result = cross_validate(folds)["fab"]["Xception"]["mtl"]
    accuracies = [fold_metrics(CLASSES, f.labels, f.probabilities)["accuracy"] for f in folds]
    assert result["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert result["summary"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert np.sum(result["confusion_matrix"]) == 120
    assert result["test_train_ratio"] == pytest.approx(40 / 80)
    assert all(abs(sum(row) - 100) < 0.05 for row in result["confusion_matrix_percent"])
    labels = np.concatenate([f.labels for f in folds])
    probabilities = np.concatenate([f.probabilities for f in folds])
    curves = roc_curves(CLASSES, labels, probabilities)
    assert curves["micro-average"]["auc"] == pytest.approx(
        skm.roc_auc_score(labels, probabilities, multi_class="ovr", average="micro")
    )
    assert set(curves) == set(CLASSES) | {"micro-average", "macro-average"}
    with pytest.raises(Exception, match="given twice"):
        cross_validate(folds + folds[:1])


def test_a_planted_duplicate_never_straddles_a_fold(synthetic_copy):
    smears = synthetic_copy / "ALL_IDB1"
    # the same image under a second name (and a third, in another class's numbering): a leak if split apart
    for copy in ("Im090_1", "Im091_1"):
        for suffix, folder in ((".jpg", smears), (".xyc", smears), (".png", smears / "masks")):
            shutil.copyfile(folder / f"Im002_1{suffix}", folder / f"{copy}{suffix}")
    labels = smears / "labels.csv"
    row = next(line for line in labels.read_text().splitlines() if line.startswith("Im002_1"))
    labels.write_text(labels.read_text() + "".join(row.replace("Im002_1", c) + "\n" for c in ("Im090_1", "Im091_1")))
    for repeats in (1, 2):
        profile = get_profile("demo", {"split.folds": 2, "split.repeats": repeats})
        split = make_folds(load_datasets(synthetic_copy, profile.data, check=False), profile)
        assert len(split["folds"]) == 2 * repeats
        copies = {"ALL_IDB1/Im002_1", "ALL_IDB1/Im090_1", "ALL_IDB1/Im091_1"}
        assert {split["group_alias"].get(g, g) for g in copies} == {"ALL_IDB1/Im002_1"}
        for fold in split["folds"]:
            assert not set(fold["train_groups"]) & set(fold["eval_groups"])
            assert "ALL_IDB1/Im090_1" not in fold["train_groups"] + fold["eval_groups"]  # merged into its original
        evaluated = [g for f in split["folds"][:2] for g in f["eval_groups"] if g.startswith("ALL_IDB1/")]
        assert len(evaluated) == len(set(evaluated)) == 8  # each smear group evaluated once per repeat


def test_too_many_folds_for_the_data_is_one_clear_error(synthetic_root):
    from leukemia_mtl.train.data import TrainingDataError

    profile = get_profile("demo", {"split.folds": 5})
    with pytest.raises(TrainingDataError, match="5-fold cross-validation needs at least 5 images of each class"):
        make_folds(load_datasets(synthetic_root, profile.data, check=False), profile)


BASELINE_BACKBONES = {
    "colour": "colour histogram",
    "majority": "majority class",
    "features": "InceptionV3 ImageNet features (224 px) + logistic regression",
}


def _build_report(
    tmp_path, fab_classes=CLASSES, negative="normal", data_name="idb1", group="a", baselines=False, release=None
):
    from leukemia_mtl.evaluate import _curve_points
    from leukemia_mtl.run_report import build_report
    from leukemia_mtl.ttest import run_ttest

    predictions = []
    for task, classes in (("detection", (negative, "ALL")), ("fab", tuple(fab_classes))):
        for arm in ("mtl", "ctl", *(BASELINE_BACKBONES if baselines else ())):
            for k in range(3):
                labels, probabilities = _predictions(10 * k + len(arm), 24, classes)
                if arm == "majority":  # the training frequencies, whatever the image
                    probabilities = np.tile(np.bincount(labels, minlength=len(classes)) / len(labels), (len(labels), 1))
                predictions.append(
                    fold_predictions(
                        task,
                        arm,
                        k,
                        labels,
                        probabilities,
                        classes=classes,
                        sources=np.array([group] * 24),
                        backbone=BASELINE_BACKBONES.get(arm, "InceptionV3"),
                    )
                )
    scored = cross_validate(predictions)
    tasks = {task: {"InceptionV3": by_backbone["InceptionV3"]} for task, by_backbone in scored.items()}
    for task in tasks.values():
        for result in task["InceptionV3"].values():
            result["roc"] = _curve_points(
                roc_curves(
                    tuple(result["classes"]),
                    np.array([0, 1, 1, 0]),
                    np.eye(len(result["classes"]))[[0, 1, 1, 1]].astype(float),
                )
            )
    crossval = {
        "folds": ["r0f0", "r0f1", "r0f2"],
        "tasks": tasks,
        "best": {"detection": "InceptionV3", "fab": "InceptionV3"},
        "baselines": {
            task: {arm: scored[task][backbone][arm] for arm, backbone in BASELINE_BACKBONES.items()} for task in scored
        }
        if baselines
        else {},
    }
    ttest = run_ttest(CrossvalResult.from_dict(crossval), tmp_path / "ttest.json", get_profile("paper"))
    evaluations = {
        "stage 1": [
            {
                "summary": {"imagenet": True, "backbone": "InceptionV3"},
                "history": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8]},
            }
        ]
    }
    split = {
        "repeats": 1,
        "folds_per_repeat": 3,
        "group_alias": {},
        "folds": [{"id": "r0f0", "train_groups": [group], "eval_groups": ["b"]}],
    }
    release = release or {
        "version": "paper-abc",
        "published_to": "s3://m/x",
        "selection": {
            "fab": {"backbone": "InceptionV3", "arm": "mtl", "fold_id": "r0f1", "cv_mean": 0.9, "cv_std": 0.01}
        },
    }
    counts = {
        "smears": {"layout": "allidb1", "class_counts": dict.fromkeys(fab_classes, 27)},
        "cells": {"layout": "allidb2", "class_counts": {negative: 130, "ALL": 130}},
    }
    return build_report(
        profile=get_profile("paper"),
        data_summary={
            "source": "real",
            "smears": f"/data/{data_name}",
            "cells": "/data/idb2",
            "images": 368,
            "datasets": counts,
            "notes": [f"/data/{data_name}/x.png: grayscale converted to RGB"],
        },
        split=split,
        roi_metrics={"roi_mean_recall": 0.9},
        roi_html="<!doctype html><html><body><h1>x</h1><p>ROI page</p></body></html>",
        segment_metrics={"unet_dice": 0.95},
        segment_html="<p>seg page <script>bad()</script></p>",
        evaluations=evaluations,
        crossval=CrossvalResult.from_dict(crossval),
        ttest=ttest,
        release=release,
        html_path=tmp_path / "r.html",
        summary_path=tmp_path / "s.json",
    )


def test_every_string_from_the_data_is_escaped_in_the_report(tmp_path):
    """Class names (folder names or label-file values) and paths come from the user's data."""
    hostile = '<img src=x onerror="alert(1)">'
    _build_report(
        tmp_path,
        fab_classes=("normal", hostile, "L2 & <b>", "L3"),
        data_name="<script>alert(2)</script>",
        group="<script>alert(3)</script>",
    )
    page = (tmp_path / "r.html").read_text()
    for raw in (hostile, "<script>alert(2)</script>", "<script>alert(3)</script>", "L2 & <b>"):
        assert raw not in page
    assert (
        page.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") >= 4
    )  # shown as text: counts, confusion, per class
    assert "L2 &amp; &lt;b&gt;" in page


def test_report_renders_every_section_from_crossval_results(tmp_path):
    summary = _build_report(tmp_path)
    page = (tmp_path / "r.html").read_text()
    for heading in (
        "What this run could not do",
        "Data and split",
        "Preprocessing",
        "Segmentation",
        "Training curves",
        "Table II",
        "Table III",
        "Table IV",
        "Fig. 10",
        "Table V layout",
        "Table V, re-tested",
        "Released model",
    ):
        assert heading in page, heading
    assert "<p>ROI page</p>" in page and "s3://m/x" in page and "bad()" not in page
    assert "No ImageNet weights" not in " ".join(
        summary["limitations"]
    )  # real weights, real data: only the honest notes
    assert "3 folds instead of the paper's 10" in " ".join(summary["limitations"])
    assert "ALL-IDB2's single-cell images are cut from ALL-IDB1's smears" in " ".join(summary["limitations"])
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    assert set(summary["tasks"]["fab"]["InceptionV3"]["mtl"]["mean"]) == {
        "accuracy",
        "balanced_accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "auc_macro",
    }
    assert page.index("Headline") < page.index("What this run could not do") < page.index("Data and split")
    assert summary["ttest"][0]["tests"][0]["test"].startswith("corrected resampled")


def test_a_binary_task_has_one_auc_and_one_roc_curve():
    labels = np.array([0, 0, 1, 1, 1, 0])
    probabilities = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.7, 0.3], [0.4, 0.6]])
    result = fold_metrics(("normal", "ALL"), labels, probabilities)
    assert set(result["auc"]) == {"ALL"} and result["auc_micro"] is None
    assert result["auc_macro"] == pytest.approx(skm.roc_auc_score(labels, probabilities[:, 1]))
    assert result["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(labels, probabilities.argmax(axis=1))
    )
    curves = roc_curves(("normal", "ALL"), labels, probabilities)
    assert set(curves) == {"ALL"}  # no micro- or macro-average of two mirrored curves
    assert set(roc_curves(CLASSES, *_predictions(1))) == set(CLASSES) | {"micro-average", "macro-average"}


def test_the_operating_point_matches_scikit_learn_and_scipy():
    from scipy.stats import binomtest

    from leukemia_mtl.evaluate import operating_point

    rng = np.random.default_rng(3)
    labels = np.array([0] * 10 + [1] * 30)
    positive = np.clip(0.35 + 0.3 * labels + rng.normal(0, 0.2, len(labels)), 0, 1)
    probabilities = np.stack([1 - positive, positive], axis=1)
    point = operating_point(("normal", "ALL"), labels, probabilities, 0.95, seed=0)
    tn, fp, fn, tp = skm.confusion_matrix(labels, (positive >= 0.5).astype(int)).ravel()
    assert point["counts"] == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    assert point["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert point["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert point["ppv"]["value"] == pytest.approx(tp / (tp + fp)) and point["npv"]["value"] == pytest.approx(
        tn / (tn + fn)
    )
    wilson = binomtest(int(tp), int(tp + fn)).proportion_ci(0.95, method="wilson")
    assert (point["sensitivity"]["low"], point["sensitivity"]["high"]) == pytest.approx((wilson.low, wilson.high))
    assert point["auc"]["value"] == pytest.approx(skm.roc_auc_score(labels, positive))
    assert point["auc"]["low"] < point["auc"]["value"] < point["auc"]["high"]
    again = operating_point(("normal", "ALL"), labels, probabilities, 0.95, seed=0)
    assert again["auc"] == point["auc"]  # a seeded bootstrap
    four = operating_point(CLASSES, *_predictions(2))
    assert (
        four["kind"] == "multiclass"
        and 0 < four["accuracy"]["low"] < four["accuracy"]["value"] < four["accuracy"]["high"]
    )


def test_degenerate_predictions_are_flagged():
    from leukemia_mtl.evaluate import degenerate_flags

    constant = np.tile([0.45778, 0.54222], (6, 1)) + np.linspace(0, 1e-5, 6)[:, None] * [-1, 1]
    flags = degenerate_flags(("normal", "ALL"), constant, 0.02)
    assert any("predicts ALL for every one of the 6" in f for f in flags)
    assert any("probabilities barely vary" in f for f in flags)
    assert degenerate_flags(CLASSES, _predictions(0)[1], 0.02) == []
    folds = [
        fold_predictions(
            "detection",
            "mtl",
            k,
            np.array([0, 1, 1, 1, 0, 1]),
            constant,
            classes=("normal", "ALL"),
        )
        for k in range(2)
    ]
    result = cross_validate(folds)["detection"]["Xception"]["mtl"]
    assert result["degenerate"] and result["summary"]["balanced_accuracy"]["mean"] == 0.5


def test_the_colour_baseline_finds_a_planted_colour_shortcut_and_the_majority_baseline_none(synthetic_copy, tmp_path):
    """Tint every ALL smear blue: a colour histogram then separates detection perfectly, which is what
    the baseline is there to show; the majority class gets balanced accuracy 0.5 whatever the data."""
    import cv2

    from leukemia_mtl.baselines import evaluation_dirs, run_baselines
    from leukemia_mtl.data.ingest import ingest
    from leukemia_mtl.evaluate import load_fold_predictions

    profile = get_profile(
        "demo", {"split.folds": 2, "model.weights": "none"}
    )  # colour and majority: no ImageNet features
    smears = synthetic_copy / "ALL_IDB1"
    for path in smears.glob("*_1.jpg"):
        image = cv2.imread(str(path)).astype(np.int16)
        image[..., 0] += 60  # OpenCV's BGR: more blue
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
    ingest(str(smears), "none", tmp_path / "ingest", profile, progress=False)
    split = make_folds(load_datasets(tmp_path / "ingest" / "data", profile.data, check=False), profile)
    summary = run_baselines(tmp_path / "ingest", split, tmp_path / "baselines", profile)
    assert summary["folds"] == ["r0f0", "r0f1"] and len(summary["evaluations"]) == 2 * 2 * 2  # tasks x arms x folds
    predictions = [load_fold_predictions(d) for d in evaluation_dirs(tmp_path / "baselines")]
    scored = cross_validate(predictions)
    colour = scored["detection"]["colour histogram"]["colour"]
    majority = scored["detection"]["majority class"]["majority"]
    assert colour["summary"]["balanced_accuracy"]["mean"] == 1.0
    assert majority["summary"]["balanced_accuracy"]["mean"] == 0.5 and not majority["degenerate"]
    for p in predictions:  # the units the arms are scored on: each fold's evaluation smears, once
        fold = next(f for f in split["folds"] if f["id"] == p.fold_id)
        assert sorted(p.sources.tolist()) == sorted(f"{g.split('/')[0]}/{g.split('/')[1]}" for g in fold["eval_groups"])


def test_a_perfect_separation_gets_no_pretend_interval_for_its_auc():
    from leukemia_mtl.evaluate import operating_point

    labels = np.array([0] * 6 + [1] * 18)
    positive = np.where(labels == 1, 0.9, 0.1) + np.linspace(0, 0.05, len(labels))
    point = operating_point(("normal", "ALL"), labels, np.stack([1 - positive, positive], axis=1))
    assert point["auc"]["value"] == 1.0 and point["auc"]["low"] is None and "no interval" in point["auc"]["note"]
    assert point["specificity"]["low"] < 0.7  # six normal smears: Wilson still says how little that is


def test_the_operating_point_is_chosen_on_inner_validation_and_scored_on_the_evaluation_folds():
    """The threshold reaches the target sensitivity on the pooled inner-validation predictions; the
    evaluation folds are only scored at it. Without inner-validation predictions it says it is optimistic."""
    from leukemia_mtl.evaluate import screening_threshold

    rng = np.random.default_rng(4)

    def fold(k: int, with_validation: bool) -> FoldPredictions:
        labels, val_labels = np.array([0] * 10 + [1] * 20), np.array([0] * 8 + [1] * 16)
        positive = np.clip(0.3 + 0.35 * labels + rng.normal(0, 0.15, len(labels)), 0, 1)
        val_positive = np.clip(0.3 + 0.35 * val_labels + rng.normal(0, 0.15, len(val_labels)), 0, 1)
        return fold_predictions(
            "detection",
            "mtl",
            k,
            labels,
            np.stack([1 - positive, positive], axis=1),
            classes=("normal", "ALL"),
            train_sources=40,
            val_labels=val_labels if with_validation else None,
            val_probabilities=np.stack([1 - val_positive, val_positive], axis=1) if with_validation else None,
        )

    folds = [fold(0, True), fold(1, True)]
    point = cross_validate(folds, target_sensitivity=0.9)["detection"]["Xception"]["mtl"]["operating_point"]
    val_labels = np.concatenate([f.val_labels for f in folds])
    val_scores = np.concatenate([f.val_probabilities for f in folds])[:, 1]
    threshold = screening_threshold(val_labels, val_scores, 0.9)
    assert point["threshold"] == threshold and point["threshold_chosen_on"].startswith("the inner validation")
    assert (val_scores[val_labels == 1] >= threshold).mean() >= 0.9  # reached on inner validation ...
    assert (val_scores[val_labels == 1] > threshold).mean() < 0.9  # ... by the highest threshold that does
    labels = np.concatenate([f.labels for f in folds])
    scores = np.concatenate([f.probabilities for f in folds])[:, 1]
    assert point["sensitivity"]["value"] == pytest.approx(
        (scores[labels == 1] >= threshold).mean()
    )  # scored, not tuned
    assert point["specificity"]["value"] == pytest.approx((scores[labels == 0] < threshold).mean())

    unvalidated = cross_validate([fold(0, False), fold(1, False)])["detection"]["Xception"]["mtl"]["operating_point"]
    assert "optimistic" in unvalidated["threshold_chosen_on"] and unvalidated["sensitivity"]["value"] >= 0.95
    assert screening_threshold(np.zeros(5), np.linspace(0, 1, 5), 0.95) is None  # no positives: no threshold


def test_a_threshold_is_described_as_it_was_chosen():
    from leukemia_mtl.evaluate import describe_threshold

    chosen = describe_threshold(
        {"threshold": 0.41, "target_sensitivity": 0.95, "threshold_chosen_on": "the inner validation splits"}
    )
    assert chosen == "P(ALL) >= 0.4100, the highest threshold reaching sensitivity 0.95 on the inner validation splits"
    assert "of one class" in describe_threshold(
        {
            "threshold": 0.5,
            "target_sensitivity": 0.95,
            "threshold_chosen_on": "none (the held-out images are of one class): 0.5",
        }
    )
    assert "recorded without how" in describe_threshold({"threshold": 0.5})  # an older crossval: no "None on None"


def _binary_fold(k: int, positive, val_positive=None, arm: str = "mtl", backbone: str = "Xception") -> FoldPredictions:
    """One detection fold: normal first, ALL after, P(ALL) as given (and the inner validation split's, if given)."""
    positive = np.asarray(positive, float)
    labels = np.array([0] * (len(positive) // 2) + [1] * (len(positive) - len(positive) // 2))
    val_labels = val_probabilities = None
    if val_positive is not None:
        val_positive = np.asarray(val_positive, float)
        val_labels = np.array([0] * (len(val_positive) // 2) + [1] * (len(val_positive) - len(val_positive) // 2))
        val_probabilities = np.stack([1 - val_positive, val_positive], axis=1)
    return fold_predictions(
        "detection",
        arm,
        k,
        labels,
        np.stack([1 - positive, positive], axis=1),
        classes=("normal", "ALL"),
        sources=np.array([f"s{k}-{i}" for i in range(len(labels))]),
        backbone=backbone,
        val_labels=val_labels,
        val_probabilities=val_probabilities,
    )


SEPARATED = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]  # normal, normal, normal, ALL, ALL, ALL


def _point(held_out, validation) -> dict:
    """Detection's operating point over two folds with these P(ALL), held out and on inner validation."""
    return cross_validate([_binary_fold(k, held_out, validation) for k in range(2)])["detection"]["Xception"]["mtl"][
        "operating_point"
    ]


def test_an_operating_point_that_calls_every_smear_all_is_flagged():
    """As seen on real data: some ALL smears of the inner validation split get P(ALL) = 0, so the only threshold
    that reaches the target sensitivity is P(ALL) >= 0.0000, and every held-out smear is called ALL."""
    from leukemia_mtl.evaluate import degenerate_operating_point

    collapsed = [0.2, 0.3, 0.4, 0.0, 0.9, 0.95]  # one ALL smear at P(ALL) = 0
    point = _point(SEPARATED, collapsed)
    assert point["threshold"] == 0.0 and point["threshold_chosen_on"].startswith("the inner validation")
    assert point["specificity"]["value"] == 0.0 and point["sensitivity"]["value"] == 1.0  # looks perfect on sensitivity
    assert point["degenerate"].startswith("P(ALL) >= 0.0000 calls every smear ALL")
    assert (
        "all 12 smears it was chosen on" in point["degenerate"]
        and "specificity 0 on the 6 held-out" in point["degenerate"]
    )

    # at the lowest inner-validation P(ALL), though some held-out normal smears fall below it: still flagged
    lowest_is_all = [0.5, 0.6, 0.7, 0.45, 0.9, 0.95]
    point = _point(SEPARATED, lowest_is_all)
    assert point["threshold"] == 0.45 and point["specificity"]["value"] == 1.0
    assert point["degenerate"] == (
        "P(ALL) >= 0.4500 calls every smear ALL (all 12 smears it was chosen on score P(ALL) >= 0.4500)"
    )

    # chosen well on inner validation, but every held-out normal smear scores above it: specificity 0
    shifted = [0.85, 0.86, 0.87, 0.9, 0.95, 0.99]
    point = _point(shifted, SEPARATED)
    assert point["threshold"] == 0.7 and point["specificity"]["value"] == 0.0
    assert point["degenerate"] == (
        "P(ALL) >= 0.7000 calls every held-out negative smear ALL (specificity 0 on the 6 held-out negative smears)"
    )

    good = _point(SEPARATED, SEPARATED)
    assert good["degenerate"] is None and good["threshold"] == 0.7
    assert (
        degenerate_operating_point(good) is None and degenerate_operating_point(good, np.array([0.7, 0.9])) is not None
    )
    folds = [_fab_fold(k, sources=np.arange(40).astype(str), backbone="X") for k in range(2)]
    four = cross_validate(folds)["fab"]["X"]["mtl"]["operating_point"]
    assert four["kind"] == "multiclass" and "degenerate" not in four  # no threshold: nothing to flag


def _gate_crossval(mtl_validation, *, ctl_validation=SEPARATED, features: float | None = 0.6) -> dict:
    """Detection only: a multistage and a classical arm that separate the evaluation folds (their inner validation
    as given), the colour and majority baselines, and the features baseline with the given per-image accuracy
    (None: not scored, as without ImageNet weights)."""
    rng = np.random.default_rng(0)
    folds = [_binary_fold(k, SEPARATED, mtl_validation) for k in range(3)]
    folds += [_binary_fold(k, SEPARATED, ctl_validation, "ctl") for k in range(3)]
    folds += [_binary_fold(k, rng.uniform(0.3, 0.7, 6), None, "colour", "colour histogram") for k in range(3)]
    folds += [_binary_fold(k, [0.5] * 6, None, "majority", "majority class") for k in range(3)]
    if features is not None:
        labels = np.array([0, 0, 0, 1, 1, 1])
        for k in range(3):
            right = rng.random(6) < features
            folds.append(
                _binary_fold(
                    k,
                    np.where(right == labels.astype(bool), 0.8, 0.2),
                    None,
                    "features",
                    "DenseNet121 ImageNet features (224 px) + logistic regression",
                )
            )
    scored = cross_validate(folds)["detection"]
    baselines = {
        arm: by_arm[arm] for by_arm in scored.values() for arm in by_arm if arm in ("colour", "majority", "features")
    }
    return {
        "folds": ["r0f0", "r0f1", "r0f2"],
        "metric": "balanced_accuracy",
        "tasks": {"detection": {"Xception": scored["Xception"]}},
        "baselines": {"detection": baselines},
    }


def test_the_release_gate_requires_beating_the_features_baseline_where_it_was_scored():
    from leukemia_mtl.release import gate, select

    def verdict(crossval: dict) -> dict:
        result = CrossvalResult.from_dict(crossval)
        return gate(result, select(result, "balanced_accuracy"), "balanced_accuracy")

    passed = verdict(_gate_crossval(SEPARATED))
    assert passed["passed"], passed["reasons"]
    assert set(passed["values"]["detection"]) == {"released", "colour", "majority", "features"}
    without = verdict(_gate_crossval(SEPARATED, features=None))  # model.weights="none": two baselines, still gated
    assert without["passed"] and set(without["values"]["detection"]) == {"released", "colour", "majority"}
    unbeaten = _gate_crossval(SEPARATED)
    unbeaten["baselines"]["detection"]["features"]["summary"]["balanced_accuracy"]["mean"] = (
        1.0  # frozen features as good
    )
    failed = verdict(unbeaten)
    assert not failed["passed"] and failed["reasons"] == [
        "detection: the released Xception mtl model's cross-validated balanced_accuracy 1.0000 does not beat the features "
        "baseline's 1.0000"
    ]


def test_the_release_gate_refuses_a_degenerate_operating_point():
    """Perfectly separating held-out predictions, but a threshold chosen at P(ALL) >= 0.0000: not a release."""
    from leukemia_mtl.release import gate, select

    crossval = CrossvalResult.from_dict(
        _gate_crossval([0.2, 0.3, 0.4, 0.0, 0.9, 0.95], ctl_validation=[0.6, 0.3, 0.4, 0.2, 0.9, 0.95])
    )
    released = crossval.arm("detection", "Xception", "mtl")
    assert released.cv_mean("balanced_accuracy") == 1.0 and not released.degenerate  # nothing else says so
    selection = select(crossval, "balanced_accuracy")
    assert selection["detection"]["arm"] == "mtl"  # the inner splits choose it: inner balanced accuracy 0.83 vs 0.67
    verdict = gate(crossval, selection, "balanced_accuracy")
    assert not verdict["passed"] and len(verdict["reasons"]) == 1
    assert verdict["reasons"][0].startswith(
        "detection: the released Xception mtl model's operating point is degenerate: "
        "P(ALL) >= 0.0000 calls every smear ALL"
    )


def test_the_report_shows_the_features_baseline_and_a_degenerate_operating_point(tmp_path):
    """Every baseline in the headline, the per-fold tables and the t-tests; the released detection model's degenerate
    operating point in its headline row, and the gate's reason."""
    reason = "detection: the released InceptionV3 mtl model's operating point is degenerate: P(ALL) >= 0.0000 calls ..."
    release = {
        "version": "paper-abc",
        "published_to": None,
        "refused": False,
        "gate": {"passed": False, "metric": "balanced_accuracy", "reasons": [reason]},
        "selection": {
            task: {"backbone": "InceptionV3", "arm": "mtl", "fold_id": "r0f1", "cv_mean": 0.9, "cv_std": 0.01}
            for task in ("detection", "fab")
        },
    }
    summary = _build_report(tmp_path, baselines=True, release=release)
    page = (tmp_path / "r.html").read_text()
    assert (
        set(summary["baselines"]["detection"])
        == set(summary["headline"]["detection"]) - {"released"}
        == set(BASELINE_BACKBONES)
    )
    assert (
        page.count("frozen ImageNet features + logistic regression (baseline)") >= 2 + 2 * 2
    )  # headlines, per-fold tables
    assert {(c["first"], c["second"]) for c in summary["ttest"]} >= {("features", "mtl"), ("features", "ctl")}
    assert any("InceptionV3's frozen ImageNet features of the whole smear" in note for note in summary["methods"])
    assert "RELEASE FLAGGED" in page and "operating point is degenerate" in page
    flag = summary["headline"]["detection"]["majority"]["operating_point"]["degenerate"]  # one answer for every smear
    assert flag.startswith("P(ALL) >= 0.5000 calls every smear ALL") and "calls every smear ALL" in page
