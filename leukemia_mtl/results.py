"""Cross-validation results and the run's summary as types, so that the steps that read them (the t-tests,
release, the model card, the report, the run summary, the benches) name fields instead of repeating string
paths and nested loops over tasks, backbones and arms.

Both keep the JSON they are read from and written to as it is: `to_dict` gives back exactly what `from_dict`
was given, and the files keep their schemas. Both read plain dicts as well (`of`): the JSON a component
loads, or one a test builds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.stages import BASELINE_ARMS, MTL

BASELINE_MODEL = "baseline"  # what stands for a backbone in a baseline's row, metric name or table cell


class ResultsError(LeukemiaMtlError):
    """A file or object that is not what it is read as."""


def _scores(arm: ArmResult) -> dict:
    return arm.scores


def _baseline_order(by_arm: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A task's baselines in BASELINE_ARMS' order (others after, by name), whatever order the JSON holds them in
    (the files are written with sorted keys)."""
    return sorted(
        by_arm.items(),
        key=lambda item: (BASELINE_ARMS.index(item[0]) if item[0] in BASELINE_ARMS else len(BASELINE_ARMS), item[0]),
    )


def _read_json(path: Path | str, what: str) -> Any:
    """A results file's JSON, or one ResultsError naming the file (never a JSON traceback)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: not {what} ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class ArmResult:
    """One arm's cross-validated scores on one task and backbone (for a baseline: BASELINE_MODEL).

    `scores` is the arm's object of the crossval JSON, as evaluate.cross_validate computes it; the
    properties name its parts."""

    task: str
    backbone: str
    arm: str
    scores: Mapping[str, Any] = field(repr=False)

    @property
    def is_baseline(self) -> bool:
        return self.arm in BASELINE_ARMS

    @property
    def classes(self) -> list[str]:
        return self.scores["classes"]

    @property
    def folds(self) -> list[dict]:
        """Per evaluation fold: fold_id, repeat, fold, model, train_source_images, evaluate.fold_metrics's
        metrics, and inner_validation (that fold's inner split's metrics, or None)."""
        return self.scores["folds"]

    @property
    def summary(self) -> dict[str, dict]:
        """{metric: {"mean", "std"}} over the evaluation folds (None where undefined)."""
        return self.scores["summary"]

    @property
    def inner_validation(self) -> dict[str, dict]:
        """{metric: {"mean", "std"}} over the folds' inner validation splits; what the release chooses by."""
        return self.scores.get("inner_validation", {})

    @property
    def confusion_matrix(self) -> list[list[int]]:
        """Counts pooled over the folds: rows true, columns predicted (each image's most probable class)."""
        return self.scores["confusion_matrix"]

    @property
    def confusion_matrix_percent(self) -> list[list[float]]:
        return self.scores["confusion_matrix_percent"]

    @property
    def test_train_ratio(self) -> float:
        return self.scores["test_train_ratio"]

    @property
    def roc(self) -> dict[str, dict]:
        """{class or "micro-average" / "macro-average": {"fpr", "tpr", "auc", "thresholds"?}}."""
        return self.scores["roc"]

    @property
    def operating_point(self) -> dict:
        return self.scores["operating_point"]

    @property
    def degenerate(self) -> list[str]:
        return self.scores["degenerate"]

    @property
    def degenerate_operating_point(self) -> str | None:
        """Why the operating point's threshold calls every smear, or every negative one, positive (evaluate.
        degenerate_operating_point); None where it does not, and for results written before the flag."""
        return (self.scores.get("operating_point") or {}).get("degenerate")

    def cv_mean(self, metric: str) -> float | None:
        """`metric`'s mean over the evaluation folds."""
        return self.summary[metric]["mean"]

    def cv_std(self, metric: str) -> float | None:
        return self.summary[metric]["std"]

    def inner_mean(self, metric: str) -> float | None:
        """`metric`'s mean over the folds' inner validation splits."""
        return self.inner_validation[metric]["mean"]

    def fold_scores(self, metric: str) -> dict[str, float | None]:
        """{fold_id: metric}: what two arms are paired by."""
        return {f["fold_id"]: f[metric] for f in self.folds}

    def kfp_classification_view(self, roc_name: str | None = None) -> tuple[list[str], list[list[int]], dict]:
        """(categories, pooled confusion matrix, one ROC curve) for KFP's ClassificationMetrics: the
        positive class's curve for two classes, the micro-average for more."""
        name = roc_name or (self.classes[-1] if len(self.classes) == 2 else "micro-average")
        curve = self.roc.get(name) or {"fpr": [], "tpr": [], "thresholds": []}
        return self.classes, self.confusion_matrix, curve


@dataclass(frozen=True)
class CrossvalResult:
    """What the crossval step writes (evaluate.run_crossval) and the t-tests, release and report read.

    The JSON:
        folds: [fold_id, ...] (sorted; the transfer-learning arms' evaluation folds)
        metric: the inner-validation metric `best` was chosen by (balanced_accuracy by default)
        tasks: {"detection" | "fab": {backbone: {"mtl" | "ctl": ARM}}}
        baselines: {"detection" | "fab": {"colour" | "majority" | "features": ARM}} (on the same folds, in
            BASELINE_ARMS' order; "features" only with ImageNet weights)
        best: {task: backbone}: the highest mean inner-validation `metric` of the multistage arm
            (classical where there is none); what the KFP UI shows
        ARM = {"classes": [name, ...],
               "folds": [{"fold_id", "repeat", "fold", "model", "train_source_images", "images", "accuracy",
                          "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted",
                          "recall_weighted", "f1_weighted", "per_class": {class: {"precision", "recall", "f1", "support"}},
                          "confusion_matrix", "auc": {class: value}, "auc_macro", "auc_micro",
                          "inner_validation": {"images", metric: value} | None}],
               "summary": {metric: {"mean", "std"}}, "inner_validation": {metric: {"mean", "std"}},
               "confusion_matrix": pooled counts, "confusion_matrix_percent": row percentages,
               "test_train_ratio": mean held-out / training source images,
               "roc": {curve name: {"fpr", "tpr", "auc", "thresholds"?}},
               "operating_point": evaluate.operating_point's dict (two classes: "threshold", "sensitivity", ..., how
                                  the threshold was chosen, and "degenerate": why it calls every smear positive, or
                                  None), "degenerate": [flag, ...]}     (None where undefined)

    `tasks` and `baselines` hold ArmResult in the JSON's shape and order (run_crossval writes everything by
    name); iterate them with `arms` and `baseline_arms`. Hand-built results may lack folds, metric, baselines
    and best: they read as empty.
    """

    folds: tuple[str, ...]
    metric: str | None
    tasks: Mapping[str, Mapping[str, Mapping[str, ArmResult]]] = field(repr=False)
    baselines: Mapping[str, Mapping[str, ArmResult]] = field(repr=False)
    best: Mapping[str, str]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrossvalResult:
        if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), Mapping):
            raise ResultsError(f"not cross-validation results: no 'tasks' in {json.dumps(data, default=str)[:80]}")
        tasks = {
            task: {
                backbone: {arm: ArmResult(task, backbone, arm, scores) for arm, scores in by_arm.items()}
                for backbone, by_arm in by_backbone.items()
            }
            for task, by_backbone in data["tasks"].items()
        }
        baselines = {
            task: {arm: ArmResult(task, BASELINE_MODEL, arm, scores) for arm, scores in _baseline_order(by_arm)}
            for task, by_arm in data.get("baselines", {}).items()
        }
        return cls(tuple(data.get("folds", ())), data.get("metric"), tasks, baselines, dict(data.get("best", {})))

    @classmethod
    def of(cls, crossval: CrossvalResult | Mapping[str, Any]) -> CrossvalResult:
        """`crossval` as a CrossvalResult: callers hand over either the type or the JSON's dict."""
        return crossval if isinstance(crossval, CrossvalResult) else cls.from_dict(crossval)

    @classmethod
    def load(cls, path: Path | str) -> CrossvalResult:
        return cls.from_dict(_read_json(path, "a cross-validation results file"))

    def to_dict(self) -> dict:
        """The crossval JSON (the schema above), as run_crossval writes it."""
        return {
            "folds": list(self.folds),
            "metric": self.metric,
            "tasks": self.tasks_tree(),
            "baselines": self.baselines_tree(),
            "best": dict(self.best),
        }

    def tasks_tree(self, leaf: Callable[[ArmResult], Any] = _scores) -> dict:
        """{task: {backbone: {arm: leaf(arm)}}}: the JSON's tasks, or another view of each arm in their shape."""
        return {
            task: {
                backbone: {arm: leaf(result) for arm, result in by_arm.items()}
                for backbone, by_arm in by_backbone.items()
            }
            for task, by_backbone in self.tasks.items()
        }

    def baselines_tree(self, leaf: Callable[[ArmResult], Any] = _scores) -> dict:
        """{task: {arm: leaf(arm)}}: the JSON's baselines, or another view of each baseline in their shape."""
        return {task: {arm: leaf(result) for arm, result in by_arm.items()} for task, by_arm in self.baselines.items()}

    @property
    def task_names(self) -> tuple[str, ...]:
        """The tasks with transfer-learning results."""
        return tuple(self.tasks)

    def backbones(self, task: str | None = None) -> list[str]:
        """The backbones scored on `task` (None: on any task), in the results' order."""
        tasks = self.tasks.values() if task is None else [self.tasks.get(task, {})]
        return list(dict.fromkeys(backbone for by_backbone in tasks for backbone in by_backbone))

    def arms(
        self, task: str | None = None, backbone: str | None = None, *, baselines: bool = False
    ) -> Iterator[ArmResult]:
        """Task by task (only `task`, if given): its transfer-learning arms (only `backbone`'s, if given)
        by backbone, then, with baselines=True, its baselines; in the results' order."""
        if task is not None:
            names = [task]
        else:  # with baselines: a task scored by baselines alone too
            names = [*self.tasks, *(name for name in self.baselines if baselines and name not in self.tasks)]
        for name in names:
            for key, by_arm in self.tasks.get(name, {}).items():
                if backbone is None or key == backbone:
                    yield from by_arm.values()
            if baselines:
                yield from self.baseline_arms(name)

    def baseline_arms(self, task: str) -> list[ArmResult]:
        return list(self.baselines.get(task, {}).values())

    def arm(self, task: str, backbone: str, arm: str) -> ArmResult:
        """One arm's results; backbone BASELINE_MODEL names a baseline. KeyError where it was not scored."""
        if backbone == BASELINE_MODEL:
            return self.baselines[task][arm]
        return self.tasks[task][backbone][arm]

    def best_arm(self, task: str, arm: str) -> ArmResult:
        """`arm` of the backbone `best` names for `task`: what the KFP UI draws."""
        return self.arm(task, self.best[task], arm)

    def kfp_metrics(
        self, metrics: tuple[str, ...] = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")
    ) -> dict[str, float]:
        """The scalars the KFP UI lists: {task}_{backbone}_{arm}_{metric} (mean over folds, 4 decimals; left
        out where undefined) and {task}_{backbone}_{arm}_degenerate (1.0 if flagged), baselines included
        (backbone "baseline")."""
        values = {}
        for result in self.arms(baselines=True):
            name = f"{result.task}_{result.backbone}_{result.arm}"
            for metric in metrics:
                mean = result.cv_mean(metric)
                if mean is not None:
                    values[f"{name}_{metric}"] = round(mean, 4)
            values[f"{name}_degenerate"] = float(bool(result.degenerate))
        return values


@dataclass(frozen=True)
class SummaryRow:
    """One arm's line of summary.json: `result` is its ARM object (see RunSummary)."""

    task: str
    model: str  # the backbone, or BASELINE_MODEL
    arm: str
    result: Mapping[str, Any] = field(repr=False)

    @property
    def is_baseline(self) -> bool:
        return self.arm in BASELINE_ARMS

    @property
    def mean(self) -> dict[str, float | None]:
        return self.result["mean"]

    @property
    def std(self) -> dict[str, float | None]:
        return self.result["std"]

    @property
    def folds(self) -> list[dict]:
        return self.result["folds"]

    @property
    def degenerate(self) -> list[str]:
        return self.result.get("degenerate", [])

    @property
    def operating_point(self) -> dict | None:
        return self.result.get("operating_point")

    @property
    def degenerate_operating_point(self) -> str | None:
        return (self.operating_point or {}).get("degenerate")


SUMMARY_SCHEMA = "leukemia-mtl/summary/2"


@dataclass(frozen=True)
class RunSummary:
    """summary.json: a run's numbers in a fixed schema (run_report.run_summary writes it beside the report).

    Schema "leukemia-mtl/summary/2":
        schema, profile, folds (fold ids), backbones, imagenet (bool: did stage 1 start from ImageNet?),
        limitations and methods (what this run could not do, and how it was scored, in words),
        tasks: {"detection" | "fab": {backbone: {"mtl" | "ctl": ARM}}}
        baselines: {"detection" | "fab": {"colour" | "majority" | "features": ARM}}
            ARM = {"folds": [{"fold_id", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
                              "f1_macro", "auc_macro", "inner_validation": {metric: value} | None}],
                   "mean": {metric: value}, "std": {metric: value}, "inner_validation_mean": {metric: value},
                   "operating_point": {...}, "degenerate": [flag, ...]}        (None where undefined)
        ttest: [{"task", "backbone", "metric", "first", "second", "folds", "first_scores", "second_scores",
                 "tests": [{"test", "statistic", "df", "p_value", "mean_difference", "ci_low", "ci_high", ...}], "note"}]
        headline: {task: {"released": {"backbone", "arm", "operating_point", "degenerate"}, "colour": {...}, "majority": {...},
                   "features": {...} (where scored)}}; a binary operating_point's "degenerate" says why its threshold calls
                   every smear positive (None, or absent in older summaries, where it does not)
        expectations: [{"check", "task", "metric", "backbone", "arm", "value", "threshold", "met"}]
        release: {"version" (None if refused), "refused", "gate": {"passed", "reasons", ...}, "selection", "published_to"}
        tuning (only where the run searched, tune.trials > 0): [{"fold_id", "backbone", "trials", "best_inner_score",
                 "best_params", "profile_inner_score"}]

    `rows` iterates ARM with its task, model and arm. Older summaries read too (schema 1 has no baselines,
    headline, expectations or release: they read as empty).
    """

    schema: str
    profile: str | None
    folds: list[str]
    backbones: list[str]
    imagenet: bool | None
    limitations: list[str]
    methods: list[str]
    tasks: dict = field(repr=False)
    baselines: dict = field(repr=False)
    ttest: list[dict] = field(repr=False)
    headline: dict = field(repr=False)
    expectations: list[dict] = field(repr=False)
    release: dict | None = field(repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), Mapping):
            raise ResultsError(f"not a run summary: no 'tasks' in {json.dumps(data, default=str)[:80]}")
        return cls(
            schema=data.get("schema", ""),
            profile=data.get("profile"),
            folds=data.get("folds", []),
            backbones=data.get("backbones", []),
            imagenet=data.get("imagenet"),
            limitations=data.get("limitations", []),
            methods=data.get("methods", []),
            tasks=data["tasks"],
            baselines=data.get("baselines", {}),
            ttest=data.get("ttest", []),
            headline=data.get("headline", {}),
            expectations=data.get("expectations", []),
            release=data.get("release"),
        )

    @classmethod
    def of(cls, summary: RunSummary | Mapping[str, Any]) -> RunSummary:
        return summary if isinstance(summary, RunSummary) else cls.from_dict(summary)

    @classmethod
    def load(cls, path: Path | str) -> RunSummary:
        return cls.from_dict(_read_json(path, "a run summary"))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def task_names(self) -> list[str]:
        """Every task with a row, by name."""
        return sorted({*self.tasks, *self.baselines})

    def rows(self, task: str | None = None) -> Iterator[SummaryRow]:
        """Task by task (by name; only `task`, if given): its transfer-learning arms by backbone, multistage
        first, then its baselines in BASELINE_ARMS' order: the order a table of them reads in."""
        for name in self.task_names if task is None else [task]:
            for backbone, by_arm in self.tasks.get(name, {}).items():
                for arm, result in sorted(by_arm.items(), key=lambda item: item[0] != MTL):
                    yield SummaryRow(name, backbone, arm, result)
            for arm, result in _baseline_order(self.baselines.get(name, {})):
                yield SummaryRow(name, BASELINE_MODEL, arm, result)
