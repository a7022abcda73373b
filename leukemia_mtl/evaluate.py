"""Cross-validated evaluation: the paper's metrics per fold and over folds, all from scikit-learn.

Each fold's model predicts its held-out images once; per fold we compute accuracy, precision,
recall and F1 (per class, macro, weighted), the confusion matrix and ROC AUC per class with micro
and macro averages. Across folds we report mean and standard deviation, pool the confusion
matrices (counts and row percentages, the paper's Table IV) and draw ROC curves on the pooled
out-of-fold predictions (Fig. 10).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukemia_mtl.errors import LeukemiaMtlError

ARMS = {"stage3": "mtl", "classical": "ctl"}  # multistage vs classical transfer learning
ARM_NAMES = {"mtl": "multistage transfer learning", "ctl": "classical transfer learning"}
TASK_NAMES = {"detection": "detection (normal vs ALL)", "fab": "classification (FAB classes)"}
SUMMARY_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                   "recall_weighted", "f1_weighted", "auc_macro", "auc_micro")


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

    @property
    def eval_sources(self) -> int:
        return len(self.labels)


def load_fold_predictions(model_dir: Path | str) -> FoldPredictions:
    """A finetune task's folder (classifier.json, summary.json, predictions.npz) as FoldPredictions."""
    from leukemia_mtl.train.stage import META_FILE, PREDICTIONS_FILE

    model_dir = Path(model_dir)
    try:
        info = json.loads((model_dir / META_FILE).read_text())
        summary = json.loads((model_dir / "summary.json").read_text())
        with np.load(model_dir / PREDICTIONS_FILE, allow_pickle=False) as data:
            probabilities, labels, sources = data["probabilities"], data["labels"].astype(int), data["sources"]
    except (OSError, KeyError, ValueError) as exc:
        raise EvaluationError(f"{model_dir}: not a finetune model folder ({type(exc).__name__}: {exc})") from None
    if info["stage"] not in ARMS:
        raise EvaluationError(f"{model_dir}: a {info['stage']} model; cross-validation scores stage 3 and classical models")
    classes = tuple(info["classes"])
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), len(classes)):
        raise EvaluationError(f"{model_dir}: predictions of shape {probabilities.shape} for {len(labels)} images "
                              f"and {len(classes)} classes")
    return FoldPredictions(info["task"], ARMS[info["stage"]], info["backbone"], summary["fold_id"], int(summary["repeat"]),
                           int(summary["fold"]), classes, labels, probabilities, sources,
                           int(summary["train_source_images"]), str(model_dir))


def fold_metrics(classes: tuple[str, ...], labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """The paper's metrics for one fold; AUCs of classes absent from the fold are None."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

    index = list(range(len(classes)))
    predicted = probabilities.argmax(axis=1)
    result: dict = {"images": int(len(labels)), "accuracy": float(accuracy_score(labels, predicted))}
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
    for i, name in enumerate(classes):
        present = one_hot[:, i]
        auc[name] = float(roc_auc_score(present, probabilities[:, i])) if 0 < present.sum() < len(present) else None
    defined = [v for v in auc.values() if v is not None]
    result["auc"] = auc
    result["auc_macro"] = float(np.mean(defined)) if defined else None
    result["auc_micro"] = float(roc_auc_score(one_hot.ravel(), probabilities.ravel())) if 0 < one_hot.sum() < one_hot.size else None
    return result


def row_percentages(matrix) -> list[list[float]]:
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(100 * counts, totals, out=np.zeros_like(counts), where=totals > 0).round(2).tolist()


def roc_curves(classes: tuple[str, ...], labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """Per-class, micro- and macro-average ROC curves (scikit-learn's recipe: the macro curve
    averages the per-class curves interpolated on the union of their false-positive rates)."""
    from sklearn.metrics import auc, roc_curve

    one_hot = np.eye(len(classes), dtype=int)[labels]
    curves = {}
    for i, name in enumerate(classes):
        if 0 < one_hot[:, i].sum() < len(labels):
            fpr, tpr, thresholds = roc_curve(one_hot[:, i], probabilities[:, i])
            curves[name] = {"fpr": fpr, "tpr": tpr, "thresholds": thresholds, "auc": float(auc(fpr, tpr))}
    if curves:
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


def cross_validate(predictions: list[FoldPredictions]) -> dict:
    """{task: {backbone: {arm: result}}}; result holds per-fold metrics, mean/std and pooled figures
    (confusion matrix, ROC curves on every held-out prediction)."""
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
                raise EvaluationError(f"{p.model_dir}: classes {p.classes} differ from fold {folds[0].fold_id}'s {classes}")
        per_fold = [{"fold_id": p.fold_id, "repeat": p.repeat, "fold": p.fold, "model": p.model_dir,
                     "train_source_images": p.train_sources, **fold_metrics(classes, p.labels, p.probabilities)}
                    for p in folds]
        pooled = np.sum([f["confusion_matrix"] for f in per_fold], axis=0).tolist()
        results.setdefault(task, {}).setdefault(backbone, {})[arm] = {
            "classes": list(classes),
            "folds": per_fold,
            "summary": {m: _mean_std([f[m] for f in per_fold]) for m in SUMMARY_METRICS},
            "confusion_matrix": pooled,
            "confusion_matrix_percent": row_percentages(pooled),
            "test_train_ratio": float(np.mean([p.eval_sources / p.train_sources for p in folds])),
            "roc": _curve_points(roc_curves(classes, np.concatenate([p.labels for p in folds]),
                                            np.concatenate([p.probabilities for p in folds]))),
        }
    return results


def best_backbone(results: dict, task: str, arm: str = "mtl", metric: str = "accuracy") -> str:
    """The backbone with the highest mean `metric` for `task` and `arm` (ties: first by name)."""
    scored = [(-(r[arm]["summary"][metric]["mean"] or 0.0), b) for b, r in results[task].items() if arm in r]
    if not scored:
        raise EvaluationError(f"no {arm} results for {task}")
    return min(scored)[1]


def confusion_figure(classes, matrix, title: str) -> bytes:
    """Counts with row percentages, as the paper's Table IV."""
    from leukemia_mtl import report

    counts = np.asarray(matrix)
    percent = np.asarray(row_percentages(matrix))
    fig, axes = report.new_figure(1, 1, (1.2 + 1.1 * len(classes), 1.0 + 0.9 * len(classes)))
    ax = axes[0][0]
    ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{counts[i, j]}\n({percent[i, j]:.1f}%)", ha="center", va="center", fontsize=8,
                    color="white" if percent[i, j] > 60 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return report.figure_png(fig, dpi=80)


def roc_figure(curves: dict, title: str) -> bytes:
    from leukemia_mtl import report

    fig, axes = report.new_figure(1, 1, (4.6, 4.0))
    ax = axes[0][0]
    for name, curve in curves.items():
        style = ":" if name.endswith("average") else "-"
        ax.plot(curve["fpr"], curve["tpr"], style, label=f"{name} (AUC {curve['auc']:.2f})")
    ax.plot([0, 1], [0, 1], "r--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return report.figure_png(fig, dpi=80)


def run_crossval(evaluation_dirs: list[Path | str], out_json: Path | str) -> dict:
    """Score every stage-3 and classical model's held-out predictions; write and return the results.

    Results: {"tasks": {task: {backbone: {arm: {...per fold, summary, pooled confusion, roc}}}},
    "best": {task: backbone}} where `best` is the backbone with the highest mean multistage accuracy.
    """
    from leukemia_mtl.io_utils import atomic_write_json

    if not evaluation_dirs:
        raise EvaluationError("no model predictions to cross-validate")
    predictions = [load_fold_predictions(d) for d in evaluation_dirs]
    tasks = cross_validate(predictions)
    folds = sorted({p.fold_id for p in predictions})
    results = {"folds": folds, "tasks": tasks,
               "best": {task: best_backbone(tasks, task, "mtl" if any("mtl" in r for r in tasks[task].values()) else "ctl")
                        for task in tasks}}
    atomic_write_json(Path(out_json), results)
    return results


def kfp_classification_view(result: dict, roc_name: str | None = None) -> tuple[list[str], list[list[int]], dict]:
    """(categories, pooled confusion matrix, one ROC curve) for KFP's ClassificationMetrics: the
    positive class's curve for two classes, the micro-average for more."""
    classes = result["classes"]
    name = roc_name or (classes[-1] if len(classes) == 2 else "micro-average")
    curve = result["roc"].get(name) or {"fpr": [], "tpr": [], "thresholds": []}
    return classes, result["confusion_matrix"], curve
