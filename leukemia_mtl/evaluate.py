"""Cross-validated evaluation: the paper's metrics per fold and over folds, all from scikit-learn.

Each fold's model predicts its held-out images once; per fold we compute accuracy, balanced
accuracy, precision, recall and F1 (per class, macro, weighted), the confusion matrix and ROC AUC
(per class with micro and macro averages for more than two classes; one AUC, of the positive class,
for two). Across folds we report mean and standard deviation, pool the confusion matrices (counts
and row percentages, the paper's Table IV), draw ROC curves on the pooled out-of-fold predictions
(Fig. 10), give the operating point (sensitivity, specificity, PPV, NPV with Wilson intervals, AUC
with a bootstrap interval) and flag degenerate predictions, and a degenerate operating point (a threshold
that calls every smear ALL). The same metrics on each fold's inner validation split are kept apart: they,
not the evaluation folds, choose what is released.

Besides the two transfer-learning arms, baselines are scored on the same folds (`leukemia_mtl.baselines`):
the training majority class and a colour histogram with logistic regression, so every run shows what a
model that learns nothing about cells gets, and, with ImageNet weights, frozen ImageNet features with
logistic regression, so it shows what the stages add to ImageNet features.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukemia_mtl import report
from leukemia_mtl.artifacts import log_classification, log_metrics
from leukemia_mtl.baselines import evaluation_dirs
from leukemia_mtl.bundles import META_FILE, PREDICTIONS_FILE
from leukemia_mtl.config import CV_METRICS, INNER_METRICS, Profile
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import atomic_write_json
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.stages import ARM_NAMES, ARMS, BASELINE_ARMS, CTL, MTL

SUMMARY_METRICS = CV_METRICS


class EvaluationError(LeukemiaMtlError):
    """Predictions that cannot be scored: a broken model folder, mismatched folds or classes."""


@dataclass
class FoldPredictions:
    """One trained model's predictions on its fold's held-out images."""

    task: str
    arm: str
    backbone: str
    fold_id: str
    repeat: int
    fold: int
    classes: tuple[str, ...]
    labels: np.ndarray  # class index per image
    probabilities: np.ndarray  # (images, classes)
    sources: np.ndarray
    train_sources: int  # source images (before augmentation) it trained on
    model_dir: str
    val_labels: np.ndarray | None = None  # the fold's inner validation split (None or empty: there was none)
    val_probabilities: np.ndarray | None = None

    @property
    def eval_sources(self) -> int:
        return len(self.labels)


def load_fold_predictions(model_dir: Path | str) -> FoldPredictions:
    """A finetune task's folder (classifier.json, summary.json, predictions.npz) as FoldPredictions."""
    model_dir = Path(model_dir)
    try:
        info = json.loads((model_dir / META_FILE).read_text())
        summary = json.loads((model_dir / "summary.json").read_text())
        with np.load(model_dir / PREDICTIONS_FILE, allow_pickle=False) as data:
            probabilities, labels, sources = data["probabilities"], data["labels"].astype(int), data["sources"]
            val_labels = data["val_labels"].astype(int) if "val_labels" in data.files else None
            val_probabilities = data["val_probabilities"] if "val_probabilities" in data.files else None
    except (OSError, KeyError, ValueError) as exc:
        raise EvaluationError(f"{model_dir}: not a finetune model folder ({type(exc).__name__}: {exc})") from None
    arm = info.get("arm") or ARMS.get(info["stage"])
    if arm not in ARM_NAMES:
        raise EvaluationError(
            f"{model_dir}: a {info['stage']} model; cross-validation scores stage 3, classical and baseline models"
        )
    classes = tuple(info["classes"])
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), len(classes)):
        raise EvaluationError(
            f"{model_dir}: predictions of shape {probabilities.shape} for {len(labels)} images "
            f"and {len(classes)} classes"
        )
    if val_labels is not None and len(val_labels) and val_probabilities.shape != (len(val_labels), len(classes)):
        raise EvaluationError(
            f"{model_dir}: inner-validation predictions of shape {val_probabilities.shape} for "
            f"{len(val_labels)} images and {len(classes)} classes"
        )
    return FoldPredictions(
        task=info["task"],
        arm=arm,
        backbone=info["backbone"],
        fold_id=summary["fold_id"],
        repeat=int(summary["repeat"]),
        fold=int(summary["fold"]),
        classes=classes,
        labels=labels,
        probabilities=probabilities,
        sources=sources,
        train_sources=int(summary["train_source_images"]),
        model_dir=str(model_dir),
        val_labels=val_labels,
        val_probabilities=val_probabilities,
    )


def fold_metrics(classes: tuple[str, ...], labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """The paper's metrics for one fold; AUCs of classes absent from the fold are None. Two classes
    have one AUC, the positive (second) class's: the other's is the same curve mirrored."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    index = list(range(len(classes)))
    predicted = probabilities.argmax(axis=1)
    result: dict = {"images": int(len(labels)), "accuracy": float(accuracy_score(labels, predicted))}
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": a small fold, the value stands
        warnings.simplefilter("ignore", UserWarning)
        result["balanced_accuracy"] = float(balanced_accuracy_score(labels, predicted)) if len(labels) else None
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=index, zero_division=0)
    result["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support)
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, predicted, labels=index, average=average, zero_division=0)
        result.update({f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)})
    result["confusion_matrix"] = confusion_matrix(labels, predicted, labels=index).tolist()
    one_hot = np.eye(len(classes), dtype=int)[labels]
    auc = {}
    scored_classes = list(enumerate(classes))[1:] if len(classes) == 2 else list(enumerate(classes))
    for i, name in scored_classes:
        present = one_hot[:, i]
        auc[name] = float(roc_auc_score(present, probabilities[:, i])) if 0 < present.sum() < len(present) else None
    defined = [v for v in auc.values() if v is not None]
    result["auc"] = auc
    result["auc_macro"] = float(np.mean(defined)) if defined else None  # two classes: the one AUC
    result["auc_micro"] = (
        float(roc_auc_score(one_hot.ravel(), probabilities.ravel()))
        if len(classes) > 2 and 0 < one_hot.sum() < one_hot.size
        else None
    )
    return result


def _wilson(successes: int, trials: int, confidence: float) -> dict:
    """A proportion with its Wilson score interval (scipy); None where there were no trials."""
    from scipy.stats import binomtest

    if trials == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    interval = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return {"value": successes / trials, "low": float(interval.low), "high": float(interval.high), "n": int(trials)}


def _auc_with_interval(labels: np.ndarray, scores: np.ndarray, confidence: float, seed: int) -> dict:
    """ROC AUC of `scores` for labels 1 vs 0, with a bootstrap percentile interval that resamples
    positives and negatives apart (scipy.stats.bootstrap over two samples), so no resample lacks a class."""
    from scipy.stats import bootstrap, mannwhitneyu

    positives, negatives = scores[labels == 1], scores[labels == 0]
    if not len(positives) or not len(negatives):
        return {"value": None, "low": None, "high": None, "n": int(len(labels))}

    def auc(pos, neg, axis=-1):  # the Mann-Whitney U statistic over all pairs is the AUC
        return mannwhitneyu(pos, neg, axis=axis).statistic / (pos.shape[axis] * neg.shape[axis])

    value = float(auc(positives, negatives))
    low = high = None
    note = "too few images of a class for a bootstrap interval"
    if len(np.unique(scores)) > 1 and min(len(positives), len(negatives)) >= 2:
        interval = bootstrap(
            (positives, negatives),
            auc,
            paired=False,
            vectorized=True,
            n_resamples=2000,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
        note = ""
        if low == high:  # every resample separates perfectly (or not at all): no width to report, not certainty
            low = high = None
            note = "every bootstrap resample gives the same AUC, so the bootstrap gives no interval"
    return {"value": value, "low": low, "high": high, "n": int(len(labels)), "note": note}


def screening_threshold(labels: np.ndarray, positive_scores: np.ndarray, target_sensitivity: float) -> float | None:
    """The highest threshold on P(positive) at which these predictions reach `target_sensitivity`
    (the most specific one that misses no more positives than allowed); None without both classes."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels).astype(int)
    if not 0 < labels.sum() < len(labels):
        return None
    _, tpr, thresholds = roc_curve(labels, np.asarray(positive_scores, np.float64), drop_intermediate=False)
    reached = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
    return float(min(thresholds[reached[0]], 1.0))


def describe_threshold(point: dict) -> str:
    """How an operating point's threshold came about, in words (the report, the model card, predict and the
    run's summary all say it so)."""
    threshold, target, chosen_on = (
        point.get("threshold"),
        point.get("target_sensitivity"),
        point.get("threshold_chosen_on"),
    )
    if threshold is None:
        return "no threshold recorded"
    if target is None or chosen_on is None:
        return f"P(ALL) >= {threshold:.4f} (recorded without how it was chosen)"
    if chosen_on.startswith("none"):
        return f"P(ALL) >= {threshold:.4f} (no threshold could be chosen: the held-out images are of one class)"
    return f"P(ALL) >= {threshold:.4f}, the highest threshold reaching sensitivity {target} on {chosen_on}"


def operating_point(
    classes: tuple[str, ...],
    labels: np.ndarray,
    probabilities: np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict:
    """What a clinician reads from pooled held-out predictions. Two classes (negative first): at
    P(positive) >= threshold, sensitivity, specificity, PPV and NPV with Wilson intervals, and AUC with a
    bootstrap interval. More classes: accuracy with its Wilson interval, balanced accuracy, macro F1."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    labels = np.asarray(labels).astype(int)
    predicted = probabilities.argmax(axis=1)
    if len(classes) == 2:
        positive = probabilities[:, 1] >= threshold
        tp, fp = int((positive & (labels == 1)).sum()), int((positive & (labels == 0)).sum())
        fn, tn = int((~positive & (labels == 1)).sum()), int((~positive & (labels == 0)).sum())
        return {
            "kind": "binary",
            "positive": classes[1],
            "threshold": float(threshold),
            "counts": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
            "sensitivity": _wilson(tp, tp + fn, confidence),
            "specificity": _wilson(tn, tn + fp, confidence),
            "ppv": _wilson(tp, tp + fp, confidence),
            "npv": _wilson(tn, tn + fn, confidence),
            "auc": _auc_with_interval(labels, probabilities[:, 1], confidence, seed),
        }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predicted))
    return {
        "kind": "multiclass",
        "accuracy": _wilson(int((predicted == labels).sum()), len(labels), confidence),
        "balanced_accuracy": balanced,
        "f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
    }


def degenerate_operating_point(point: dict, chosen_on_scores: np.ndarray | None = None) -> str | None:
    """Why a binary operating point says nothing, or None: its threshold is at or below the lowest P(positive) of
    the predictions it was chosen on (every one of them is called positive), or its pooled held-out
    specificity is 0 (every held-out negative is). A screening threshold of P(ALL) >= 0.0000 would otherwise
    pass as a sensitivity of 1.000."""
    threshold, positive, specificity = point["threshold"], point["positive"], point["specificity"]
    scores = np.asarray(chosen_on_scores if chosen_on_scores is not None else [], dtype=np.float64)
    everything = bool(len(scores)) and threshold <= float(scores.min())
    no_negative_left = specificity["value"] == 0
    if not (everything or no_negative_left):
        return None
    details = []
    if everything:
        details.append(f"all {len(scores)} smears it was chosen on score P({positive}) >= {float(scores.min()):.4f}")
    if no_negative_left:
        details.append(f"specificity 0 on the {specificity['n']} held-out negative smears")
    called = "every smear" if everything else "every held-out negative smear"
    return f"P({positive}) >= {threshold:.4f} calls {called} {positive} ({'; '.join(details)})"


def degenerate_flags(
    classes: tuple[str, ...], probabilities: np.ndarray, spread_limit: float, where: str = ""
) -> list[str]:
    """Words for predictions that say nothing: one class for every image, or probabilities that
    barely move from image to image (a network whose output ignores its input)."""
    flags = []
    if len(probabilities) < 2:
        return flags
    predicted = np.unique(probabilities.argmax(axis=1))
    if len(predicted) == 1:
        flags.append(
            f"predicts {classes[int(predicted[0])]} for every one of the {len(probabilities)} held-out images{where}"
        )
    spread = float((probabilities.max(axis=0) - probabilities.min(axis=0)).max())
    if spread < spread_limit:
        flags.append(
            f"probabilities barely vary{where}: no class's probability spans more than {spread:.5f} over "
            f"{len(probabilities)} images (limit {spread_limit})"
        )
    return flags


def row_percentages(matrix) -> list[list[float]]:
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(100 * counts, totals, out=np.zeros_like(counts), where=totals > 0).round(2).tolist()


def roc_curves(classes: tuple[str, ...], labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Per-class, micro- and macro-average ROC curves (scikit-learn's recipe: the macro curve
    averages the per-class curves interpolated on the union of their false-positive rates). Two
    classes: the positive class's curve alone."""
    from sklearn.metrics import auc, roc_curve

    one_hot = np.eye(len(classes), dtype=int)[labels]
    curves = {}
    for i, name in enumerate(classes):
        if len(classes) == 2 and i == 0:
            continue
        if 0 < one_hot[:, i].sum() < len(labels):
            fpr, tpr, thresholds = roc_curve(one_hot[:, i], probabilities[:, i])
            curves[name] = {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": float(auc(fpr, tpr))}
    if curves and len(classes) > 2:
        fpr, tpr, thresholds = roc_curve(one_hot.ravel(), probabilities.ravel())
        curves["micro-average"] = {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": float(auc(fpr, tpr))}
        per_class = [c for k, c in curves.items() if k in classes]
        grid = np.unique(np.concatenate([c["fpr"] for c in per_class]))
        mean_tpr = np.mean([np.interp(grid, c["fpr"], c["tpr"]) for c in per_class], axis=0)
        curves["macro-average"] = {"fpr": grid, "tpr": mean_tpr, "thresholds": None, "auc": float(auc(grid, mean_tpr))}
    return curves


def _mean_std(values: list) -> dict:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0}


def _curve_points(curves: dict) -> dict:
    """ROC curves as JSON-ready lists; scikit-learn's first threshold (inf) becomes 1.0."""
    points = {}
    for name, c in curves.items():
        points[name] = {"fpr": np.round(c["fpr"], 5).tolist(), "tpr": np.round(c["tpr"], 5).tolist(), "auc": c["auc"]}
        if c["thresholds"] is not None:
            points[name]["thresholds"] = np.round(np.minimum(c["thresholds"], 1.0), 5).tolist()
    return points


def _inner_validation(p: FoldPredictions) -> dict | None:
    if p.val_labels is None or not len(p.val_labels):
        return None
    scores = fold_metrics(p.classes, p.val_labels, p.val_probabilities)
    return {"images": scores["images"], **{m: scores[m] for m in INNER_METRICS}}


def _first_repeat_operating_point(
    classes: tuple[str, ...], folds: list[FoldPredictions], confidence: float, seed: int, target_sensitivity: float
) -> dict:
    """The operating point over one repeat's folds, where every image is held out exactly once: with
    repeated K-fold each image is predicted once per repeat, and counting it again would narrow
    the intervals for no new evidence.

    Two classes: the threshold is the highest that reaches `target_sensitivity` on the folds' pooled
    inner-validation predictions (what predict uses by default), and the evaluation folds are scored
    at it, so its sensitivity is an estimate nothing was tuned on. Without inner-validation
    predictions of both classes (the baselines; tiny runs) it is chosen on the evaluation folds
    themselves, and says so: an optimistic figure."""
    first = [p for p in folds if p.repeat == folds[0].repeat]
    labels, probabilities = np.concatenate([p.labels for p in first]), np.concatenate([p.probabilities for p in first])
    if len(classes) != 2:
        return {**operating_point(classes, labels, probabilities, confidence, seed), "repeat": folds[0].repeat}
    validated = [p for p in first if p.val_labels is not None and len(p.val_labels)]
    threshold, chosen_on, scores = None, "the inner validation splits (pooled over the folds)", None
    if validated:
        scores = np.concatenate([p.val_probabilities for p in validated])[:, 1]
        threshold = screening_threshold(np.concatenate([p.val_labels for p in validated]), scores, target_sensitivity)
    if threshold is None:
        scores = probabilities[:, 1]
        threshold = screening_threshold(labels, scores, target_sensitivity)
        chosen_on = "the evaluation folds themselves (no inner-validation predictions of both classes): optimistic"
    if threshold is None:
        threshold, chosen_on, scores = 0.5, "none (the held-out images are of one class): 0.5", None
    point = operating_point(classes, labels, probabilities, confidence, seed, threshold)
    return {
        **point,
        "repeat": folds[0].repeat,
        "target_sensitivity": target_sensitivity,
        "threshold_chosen_on": chosen_on,
        "degenerate": degenerate_operating_point(point, scores),
    }


def cross_validate(
    predictions: list[FoldPredictions],
    confidence: float = 0.95,
    seed: int = 0,
    degenerate_spread: float = 0.02,
    target_sensitivity: float = 0.95,
) -> dict:
    """{task: {backbone: {arm: result}}}; result holds per-fold metrics (and each fold's inner-
    validation metrics), mean/std, pooled figures (confusion matrix, ROC curves, the operating point
    on every held-out prediction) and flags for degenerate predictions."""
    groups: dict[tuple[str, str, str], list[FoldPredictions]] = {}
    for p in predictions:
        groups.setdefault((p.task, p.backbone, p.arm), []).append(p)
    results: dict = {}
    for (task, backbone, arm), folds in sorted(groups.items()):
        folds.sort(key=lambda p: (p.repeat, p.fold))
        ids = [p.fold_id for p in folds]
        if len(set(ids)) != len(ids):
            raise EvaluationError(f"{task}/{backbone}/{arm}: fold(s) given twice: {sorted(ids)}")
        classes = folds[0].classes
        for p in folds:
            if p.classes != classes:
                raise EvaluationError(
                    f"{p.model_dir}: classes {p.classes} differ from fold {folds[0].fold_id}'s {classes}"
                )
        per_fold = [
            {
                "fold_id": p.fold_id,
                "repeat": p.repeat,
                "fold": p.fold,
                "model": p.model_dir,
                "train_source_images": p.train_sources,
                **fold_metrics(classes, p.labels, p.probabilities),
                "inner_validation": _inner_validation(p),
            }
            for p in folds
        ]
        pooled = np.sum([f["confusion_matrix"] for f in per_fold], axis=0).tolist()
        labels = np.concatenate([p.labels for p in folds])
        probabilities = np.concatenate([p.probabilities for p in folds])
        flags = (
            [] if arm == "majority" else degenerate_flags(classes, probabilities, degenerate_spread)
        )  # degenerate by design
        if not flags and arm != "majority":  # one class for a whole fold is worth saying even when the folds differ
            flags = [
                flag for p in folds for flag in degenerate_flags(classes, p.probabilities, 0.0, f" of fold {p.fold_id}")
            ]
        inner = [f["inner_validation"] for f in per_fold]
        results.setdefault(task, {}).setdefault(backbone, {})[arm] = {
            "classes": list(classes),
            "folds": per_fold,
            "summary": {m: _mean_std([f[m] for f in per_fold]) for m in SUMMARY_METRICS},
            "inner_validation": {m: _mean_std([v[m] if v else None for v in inner]) for m in INNER_METRICS},
            "confusion_matrix": pooled,
            "confusion_matrix_percent": row_percentages(pooled),
            "test_train_ratio": float(np.mean([p.eval_sources / p.train_sources for p in folds])),
            "roc": _curve_points(roc_curves(classes, labels, probabilities)),
            "operating_point": _first_repeat_operating_point(classes, folds, confidence, seed, target_sensitivity),
            "degenerate": flags,
        }
    return results


def best_backbone(results: dict, task: str, arm: str = MTL, metric: str = "balanced_accuracy") -> str:
    """The backbone with the highest mean inner-validation `metric` for `task` and `arm` (ties, and
    runs without an inner split: first by name). The evaluation folds take no part."""
    scored = [(-(r[arm]["inner_validation"][metric]["mean"] or 0.0), b) for b, r in results[task].items() if arm in r]
    if not scored:
        raise EvaluationError(f"no {arm} results for {task}")
    return min(scored)[1]


def confusion_figure(classes, matrix, title: str) -> bytes:
    """Counts with row percentages, as the paper's Table IV."""
    counts = np.asarray(matrix)
    percent = np.asarray(row_percentages(matrix))
    side = max(3.6, 1.4 + 1.0 * len(classes))  # room for a wrapped title, and for each cell's two lines
    fig, axes = report.new_figure(1, 1, (side, side))
    ax = axes[0][0]
    ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n({percent[i, j]:.1f}%)",
                ha="center",
                va="center",
                color="white" if percent[i, j] > 60 else "black",
            )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    report.set_title(ax, title)
    return report.figure_png(fig)


def roc_figure(curves: dict, title: str) -> bytes:
    fig, axes = report.new_figure(1, 1, (4.8, 4.4))
    ax = axes[0][0]
    for name, curve in curves.items():
        style = ":" if name.endswith("average") else "-"
        ax.plot(curve["fpr"], curve["tpr"], style, label=f"{name} (AUC {curve['auc']:.2f})")
    ax.plot([0, 1], [0, 1], "r--", linewidth=0.8, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    report.set_title(ax, title)
    ax.legend(loc="lower right")
    return report.figure_png(fig)


def run_crossval(
    evaluation_dirs: list[Path | str],
    out_json: Path | str,
    baseline_dirs: list[Path | str] = (),
    *,
    metric: str = "balanced_accuracy",
    confidence: float = 0.95,
    seed: int = 0,
    degenerate_spread: float = 0.02,
    target_sensitivity: float = 0.95,
) -> CrossvalResult:
    """Score every stage-3, classical and baseline model's held-out predictions; write them to `out_json`
    (the schema is CrossvalResult's) and return them. `best` is the backbone with the highest mean
    multistage inner-validation `metric` (what the KFP UI shows).
    """
    if not evaluation_dirs:
        raise EvaluationError("no model predictions to cross-validate")
    predictions = [load_fold_predictions(d) for d in [*evaluation_dirs, *baseline_dirs]]
    scored = cross_validate(predictions, confidence, seed, degenerate_spread, target_sensitivity)
    tasks = {
        task: {b: arms for b, arms in by_backbone.items() if not set(arms) & set(BASELINE_ARMS)}
        for task, by_backbone in scored.items()
    }
    baselines = {
        task: {arm: result for arms in by_backbone.values() for arm, result in arms.items() if arm in BASELINE_ARMS}
        for task, by_backbone in scored.items()
    }
    folds = sorted({p.fold_id for p in predictions if p.arm not in BASELINE_ARMS})
    for task, by_arm in baselines.items():
        for arm, result in by_arm.items():
            if sorted(f["fold_id"] for f in result["folds"]) != folds:
                raise EvaluationError(
                    f"the {arm} baseline of {task} was scored on folds "
                    f"{sorted(f['fold_id'] for f in result['folds'])}, the models on {folds}"
                )
    results = CrossvalResult.from_dict(
        {
            "folds": folds,
            "metric": metric,
            "tasks": tasks,
            "baselines": baselines,
            "best": {
                task: best_backbone(tasks, task, MTL if any(MTL in r for r in tasks[task].values()) else CTL, metric)
                for task in tasks
            },
        }
    )
    atomic_write_json(Path(out_json), results.to_dict())
    return results


def run_crossval_task(evaluations: list, baselines, results, metrics, views: dict, profile: Profile) -> CrossvalResult:
    """The crossval component's one call: every scored stage's evaluation artifacts and the baselines'
    predictions in; the results, the KFP metrics and, per (task, arm) in `views`, the ClassificationMetrics
    of the backbone inner validation picked (what the KFP UI draws)."""
    cfg = profile.evaluate
    result = run_crossval(
        [a.path for a in evaluations],
        results.path,
        evaluation_dirs(baselines.path),
        metric=cfg.release_metric,
        confidence=cfg.confidence,
        seed=profile.seed,
        degenerate_spread=cfg.degenerate_spread,
        target_sensitivity=cfg.target_sensitivity,
    )
    log_metrics(metrics, result.kfp_metrics())
    results.metadata.update({"folds": len(result.folds), "best": dict(result.best)})
    for (task, arm), view in views.items():
        best = result.best_arm(task, arm)
        categories, matrix, curve = best.kfp_classification_view()
        log_classification(view, categories, matrix, curve, backbone=best.backbone, task=task, arm=arm)
    return result
