"""One self-contained HTML report per run, and summary.json, its numbers in a fixed schema.

The report opens with what matters to a screening decision: the released detection model's
sensitivity, specificity, PPV, NPV and AUC with confidence intervals (pooled over the held-out
folds), beside the majority class and the colour-histogram baseline, any degenerate predictions,
the release gate and the profile's learning checks. Then how the scores were kept honest, the
data, every stage, the paper's tables and the tests.

summary.json (schema "leukemia-mtl/summary/2"):
    profile, folds (fold ids), backbones, imagenet (bool: did stage 1 start from ImageNet?),
    limitations and methods (what this run could not do, and how it was scored, in words),
    tasks: {"detection" | "fab": {backbone: {"mtl" | "ctl": ARM}}}
    baselines: {"detection" | "fab": {"colour" | "majority": ARM}}
        ARM = {"folds": [{"fold_id", "accuracy", "balanced_accuracy", "precision_macro", "recall_macro",
                          "f1_macro", "auc_macro", "inner_validation": {metric: value} | None}],
               "mean": {metric: value}, "std": {metric: value}, "inner_validation_mean": {metric: value},
               "operating_point": {...}, "degenerate": [flag, ...]}        (None where undefined)
    ttest: [{"task", "backbone", "metric", "first", "second", "folds", "first_scores", "second_scores",
             "tests": [{"test", "statistic", "df", "p_value", "mean_difference", "ci_low", "ci_high", ...}], "note"}]
    headline: {task: {"released": {"backbone", "arm", "operating_point", "degenerate"}, "colour": {...}, "majority": {...}}}
    expectations: [{"check", "task", "metric", "backbone", "arm", "value", "threshold", "met"}]
    release: {"version" (None if refused), "refused", "gate": {"passed", "reasons", ...}, "selection", "published_to"}
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from leukemia_mtl import report
from leukemia_mtl.config import Profile, parse_expectation
from leukemia_mtl.evaluate import ARM_NAMES, BASELINE_ARMS, TASK_NAMES, confusion_figure, roc_figure
from leukemia_mtl.io_utils import atomic_write_json, atomic_write_text

SCHEMA = "leukemia-mtl/summary/2"
SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
PAPER_PROFILE_EPOCHS = 160
PAPER_FOLDS = 10
OPERATING_KEYS = ("sensitivity", "specificity", "ppv", "npv", "auc")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _mean_std(summary: dict, metric: str) -> str:
    entry = summary[metric]
    return "n/a" if entry["mean"] is None else f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def _with_interval(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    if entry.get("low") is None:
        return f"{entry['value']:.3f}"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _arm_summary(result: dict) -> dict:
    return {
        "folds": [{"fold_id": f["fold_id"], **{k: f[k] for k in SUMMARY_KEYS}, "inner_validation": f.get("inner_validation")}
                  for f in result["folds"]],
        "mean": {k: result["summary"][k]["mean"] for k in SUMMARY_KEYS},
        "std": {k: result["summary"][k]["std"] for k in SUMMARY_KEYS},
        "inner_validation_mean": {k: v["mean"] for k, v in result.get("inner_validation", {}).items()},
        "operating_point": result["operating_point"],
        "degenerate": result["degenerate"],
    }


def expectations_of(crossval: dict, profile: Profile) -> list[dict]:
    """The profile's learning checks, on the multistage arm's cross-validated mean, per backbone."""
    checks = []
    for text in profile.evaluate.expectations:
        task, metric, threshold = parse_expectation(text)
        for backbone, by_arm in sorted(crossval["tasks"].get(task, {}).items()):
            if "mtl" not in by_arm:
                continue
            value = by_arm["mtl"]["summary"][metric]["mean"]
            checks.append({"check": text, "task": task, "metric": metric, "backbone": backbone, "arm": "mtl",
                           "value": value, "threshold": threshold, "met": value is not None and value >= threshold})
        if task not in crossval["tasks"]:
            checks.append({"check": text, "task": task, "metric": metric, "backbone": None, "arm": "mtl",
                           "value": None, "threshold": threshold, "met": False})
    return checks


def headline_of(crossval: dict, release: dict | None) -> dict:
    """Per task: the released configuration's pooled operating point, beside the two baselines'."""
    headline = {}
    for task in crossval["tasks"]:
        pick = (release or {}).get("selection", {}).get(task)
        if pick is None:
            continue
        result = crossval["tasks"][task][pick["backbone"]][pick["arm"]]
        entry = {"released": {"backbone": pick["backbone"], "arm": pick["arm"], "operating_point": result["operating_point"],
                              "degenerate": result["degenerate"]}}
        for arm, baseline in crossval.get("baselines", {}).get(task, {}).items():
            entry[arm] = {"operating_point": baseline["operating_point"], "degenerate": baseline["degenerate"]}
        headline[task] = entry
    return headline


def run_summary(crossval: dict, ttest: dict, release: dict | None, evaluations: dict[str, list[dict]],
                profile: Profile, limitations: list[str], methods: list[str] | None = None) -> dict:
    tasks = {task: {backbone: {arm: _arm_summary(result) for arm, result in by_arm.items()}
                    for backbone, by_arm in by_backbone.items()} for task, by_backbone in crossval["tasks"].items()}
    baselines = {task: {arm: _arm_summary(result) for arm, result in by_arm.items()}
                 for task, by_arm in crossval.get("baselines", {}).items()}
    return {
        "schema": SCHEMA,
        "profile": profile.name,
        "folds": crossval["folds"],
        "backbones": sorted({b for by_backbone in crossval["tasks"].values() for b in by_backbone}),
        "imagenet": all(e["summary"]["imagenet"] for entries in evaluations.values() for e in entries),
        "limitations": limitations,
        "methods": methods or [],
        "tasks": tasks,
        "baselines": baselines,
        "ttest": [{k: c[k] for k in ("task", "backbone", "metric", "first", "second", "folds", "first_scores", "second_scores",
                                     "tests", "note")} for c in ttest["comparisons"]],
        "headline": headline_of(crossval, release),
        "expectations": expectations_of(crossval, profile),
        "release": None if release is None else {
            "version": release["version"], "refused": bool(release.get("refused")), "gate": release.get("gate"),
            "selection": release["selection"], "published_to": release.get("published_to")},
    }


def load_evaluations(groups: dict[str, list[Path | str]]) -> dict[str, list[dict]]:
    """{stage display name: [{summary, history}]} from finetune evaluation folders."""
    loaded = {}
    for name, dirs in groups.items():
        loaded[name] = [{"summary": json.loads((Path(d) / "summary.json").read_text()),
                         "history": json.loads((Path(d) / "history.json").read_text())} for d in dirs]
    return loaded


def limitations_of(evaluations: dict[str, list[dict]], data_summary: dict, crossval: dict, profile: Profile) -> list[str]:
    """What a reader must know before comparing this run with the paper."""
    notes = []
    if not all(e["summary"]["imagenet"] for entries in evaluations.values() for e in entries):
        notes.append("No ImageNet weights: stage 1 and the classical baseline started from random initialisation "
                     f"(model.weights={profile.model.weights!r}), so this is not the paper's transfer from ImageNet.")
    if "synthetic" in (data_summary.get("smears"), data_summary.get("cells")):
        notes.append("Synthetic data: the images come from the built-in generator, not ALL-IDB; the numbers say the "
                     "pipeline works, not how well it screens real smears.")
    cells = data_summary.get("datasets", {}).get("cells", {})
    if cells.get("layout") == "allidb2" and data_summary.get("cells") not in (None, "synthetic"):
        notes.append("ALL-IDB2's single-cell images are cut from ALL-IDB1's smears with no link back to them, so stages 1-2 "
                     "may have seen cells of a smear that stage 3 evaluates on; the split cannot keep them apart.")
    folds = len(crossval["folds"])
    if folds < PAPER_FOLDS:
        notes.append(f"{folds} folds instead of the paper's {PAPER_FOLDS}: fewer paired scores, so the tests have little power.")
    if profile.train.epochs < PAPER_PROFILE_EPOCHS:
        notes.append(f"{profile.train.epochs} epochs per stage instead of the paper's {PAPER_PROFILE_EPOCHS}, "
                     f"at {profile.model.input_size} px instead of 299.")
    if profile.train.frozen_fraction > 0:
        notes.append(f"Only the top {1 - profile.train.frozen_fraction:.0%} of each backbone's layers were fine-tuned "
                     f"(train.frozen_fraction={profile.train.frozen_fraction}); the paper tunes them all.")
    if profile.train.stage3_images == "cells":
        notes.append("Stage 3 sees a smear through its isolated white cells (one crop per cell, one magnification) and "
                     "averages their probabilities; the paper squares the whole isolated smear to the input, where at "
                     f"{profile.model.input_size} px a white cell would be a few pixels wide (train.stage3_images).")
    return notes


def methods_of(evaluations: dict[str, list[dict]], segment_metrics: dict, crossval: dict, profile: Profile) -> list[str]:
    """How the scores were made, in words: what is held out, what chooses, what is balanced."""
    notes = ["Augmentation ran after the split, on training images only (the paper augmented before splitting, which "
             "puts copies of one image on both sides of a fold)."]
    validated = [e["summary"] for entries in evaluations.values() for e in entries if e["summary"].get("val_images")]
    if profile.train.validation_fraction > 0 and validated:
        notes.append(f"The evaluation folds only score. Inside each fold's training part an inner validation split "
                     f"({profile.train.validation_fraction:.0%} of its smears or images, grouped and stratified) decides early "
                     f"stopping (patience {profile.train.early_stopping_patience}) and the kept epoch, and the release picks "
                     f"its backbone, arm and fold model by mean inner-validation {profile.evaluate.release_metric}.")
    else:
        notes.append("The evaluation folds only score. The data was too small for an inner validation split in some "
                     "stages: those trained every epoch without early stopping, and the release picked by fold order.")
    if profile.train.balanced_class_weights:
        weights = {e["summary"]["task"]: e["summary"].get("class_weights") for entries in evaluations.values()
                   for e in entries if e["summary"].get("class_weights")}
        detection = weights.get("detection")
        shown = f" (detection, one fold: {', '.join(f'{c} x{w:.2f}' for c, w in detection.items())})" if detection else ""
        notes.append("Every task trains on its own labels balanced: scikit-learn's balanced class weights over the task's "
                     f"training labels{shown}, after augmentation balanced the FAB classes.")
    calibrated = [e["summary"].get("batchnorm_calibration") or {} for entries in evaluations.values() for e in entries]
    if any(c.get("before") for c in calibrated):
        notes.append("Randomly initialised backbones had their batch-norm statistics set from training images before "
                     "training (their defaults make the activations vanish) and, for the layers that trained, again after "
                     "(population statistics of the final weights). Evaluation images took no part.")
    train_smears, heldout = segment_metrics.get("train_smears"), segment_metrics.get("heldout_smears")
    if train_smears:
        measured = (f"Its Dice against ground truth on the {int(segment_metrics.get('truth_smears') or 0)} held-out smears "
                    f"with masks: {_fmt(segment_metrics.get('unet_dice'))} (the ROI step's: {_fmt(segment_metrics.get('roi_dice'))})."
                    if segment_metrics.get("unet_dice") is not None else
                    f"No held-out smear has a ground-truth mask; against the ROI masks it learnt from, on the {int(heldout or 0)} "
                    f"held-out smears: Dice {_fmt(segment_metrics.get('unet_vs_roi_dice'))}.")
        notes.append(f"The U-Net was trained once, before the split, on {int(train_smears)} smears' white-cell masks (no "
                     f"class labels); every smear is in one evaluation fold, so {int(train_smears)} of the evaluated smears "
                     f"were segmented by a network that had seen their masks, though never their classes. {measured}")
    notes.append("Beside every arm: the training majority class, and a colour histogram "
                 f"({profile.evaluate.colour_bins}x{profile.evaluate.colour_bins}x{profile.evaluate.colour_bins} RGB) with "
                 "logistic regression, fitted on the same folds' training smears: what a model gets that has learnt "
                 "nothing about cells.")
    return notes


def _curves_figure(evaluations: dict[str, list[dict]]) -> bytes | None:
    """Mean training and validation loss and accuracy per stage and backbone over folds (paper Fig. 9); validation is
    each fold's inner validation split."""
    names = [n for n, entries in evaluations.items() if entries]
    if not names:
        return None
    fig, axes = report.new_figure(len(names), 2, (9, 2.4 * len(names)))
    for row, name in enumerate(names):
        by_backbone: dict[str, list[dict]] = {}
        for entry in evaluations[name]:
            by_backbone.setdefault(entry["summary"]["backbone"], []).append(entry["history"])
        for col, metric in enumerate(("loss", "accuracy")):
            ax = axes[row][col]
            for backbone, histories in sorted(by_backbone.items()):
                for prefix, style, label in (("", "-o", "training"), ("val_", "--o", "inner validation")):
                    series = [h.get(prefix + metric, []) for h in histories if h.get(prefix + metric)]
                    if not series:
                        continue
                    length = min(len(s) for s in series)
                    mean = np.mean([s[:length] for s in series], axis=0)
                    ax.plot(range(1, length + 1), mean, style, markersize=3, label=f"{backbone} {label}")
            ax.set_title(f"{name}: mean {metric} over {len(evaluations[name]) // max(1, len(by_backbone))} folds", fontsize=9)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
    return report.figure_png(fig, dpi=75)


def _arm_rows(crossval: dict, task: str) -> list[tuple[str, str, dict]]:
    """(model, arm, result) for every arm of `task`: the transfer-learning arms, then the baselines."""
    rows = [(backbone, arm, by_arm[arm]) for backbone, by_arm in sorted(crossval["tasks"][task].items())
            for arm in ("mtl", "ctl") if arm in by_arm]
    rows += [("baseline", arm, result) for arm, result in crossval.get("baselines", {}).get(task, {}).items()]
    return rows


def _performance_table(crossval: dict, task: str, caption: str) -> str:
    metrics = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
    rows = [[model, ARM_NAMES[arm]] + [_mean_std(result["summary"], m) for m in metrics]
            + ["; ".join(result["degenerate"]) or "-"] for model, arm, result in _arm_rows(crossval, task)]
    return report.grid(["model", "arm", "accuracy", "balanced accuracy", "precision", "recall", "F1-score", "AUC",
                        "degenerate predictions"], rows, caption)


def _fold_table(crossval: dict, task: str, metric: str) -> str:
    rows = []
    for model, arm, result in _arm_rows(crossval, task):
        for f in result["folds"]:
            inner = (f.get("inner_validation") or {}).get(metric)
            rows.append([model, arm, f["fold_id"], f["images"], _fmt(f["accuracy"]), _fmt(f["balanced_accuracy"]),
                         _fmt(f["f1_macro"]), _fmt(f["auc_macro"]), _fmt(f["auc_micro"]), _fmt(inner)])
    return report.grid(["model", "arm", "fold", "images", "accuracy", "balanced accuracy", "F1", "AUC (macro)", "AUC (micro)",
                        f"inner-validation {metric}"], rows)


def _per_class_table(result: dict) -> str:
    """Per-class precision, recall and F1 of the pooled folds (from the per-fold values' mean)."""
    rows = []
    for name in result["classes"]:
        values = {k: [f["per_class"][name][k] for f in result["folds"]] for k in ("precision", "recall", "f1")}
        auc = [f["auc"][name] for f in result["folds"] if f["auc"].get(name) is not None]
        rows.append([name] + [_fmt(float(np.mean(v))) for v in values.values()] + [_fmt(float(np.mean(auc))) if auc else "-"])
    return report.grid(["class", "precision", "recall", "F1", "AUC"], rows)


def _confusion_table(result: dict, caption: str) -> str:
    """Counts with row percentages, the layout of the paper's Table IV."""
    classes = result["classes"]
    rows = [[truth] + [f"{count} ({percent:.2f}%)" for count, percent in zip(counts, percents)]
            for truth, counts, percents in zip(classes, result["confusion_matrix"], result["confusion_matrix_percent"])]
    return report.grid(["true \\ predicted"] + list(classes), rows, caption)


def _tests_table(tests: list[dict]) -> str:
    rows = [[t["test"], _fmt(t["statistic"]), _fmt(t["df"], 2), _fmt(t["p_value"]), _fmt(t["mean_difference"]),
             f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]", f"{_fmt(t['effect_size'], 3)} ({t['effect_size_name']})", t["note"]]
            for t in tests]
    return report.grid(["test", "statistic", "df", "p", "mean difference", "95% CI", "effect size", "note"], rows)


def _headline_section(summary: dict, release: dict | None, profile: Profile) -> str:
    parts = []
    for task, entry in summary["headline"].items():
        released = entry["released"]
        rows = [(f"released: {released['backbone']}, {ARM_NAMES[released['arm']]}", released)]
        rows += [(ARM_NAMES[arm], entry[arm]) for arm in BASELINE_ARMS if arm in entry]
        point = released["operating_point"]
        if point["kind"] == "binary":
            grid = report.grid(["model", "sensitivity", "specificity", "PPV", "NPV", "AUC", "degenerate predictions"],
                               [[name] + [_with_interval(e["operating_point"][k]) for k in OPERATING_KEYS]
                                + ["; ".join(e["degenerate"]) or "-"] for name, e in rows],
                               f"{TASK_NAMES[task]}: every held-out smear once, {point['positive']} if "
                               f"P({point['positive']}) >= {point['threshold']}; {int(profile.evaluate.confidence * 100)}% "
                               "Wilson intervals, bootstrap interval for the AUC (none where every resample gives one value)")
        else:
            grid = report.grid(["model", "accuracy", "balanced accuracy", "macro F1", "degenerate predictions"],
                               [[name, _with_interval(e["operating_point"]["accuracy"]), _fmt(e["operating_point"]["balanced_accuracy"], 3),
                                 _fmt(e["operating_point"]["f1_macro"], 3), "; ".join(e["degenerate"]) or "-"] for name, e in rows],
                               f"{TASK_NAMES[task]}: every held-out smear once")
        parts.append(grid)
    flagged = [f"{task} {backbone} {arm}: {flag}" for task, by_backbone in summary["tasks"].items()
               for backbone, by_arm in by_backbone.items() for arm, result in by_arm.items() for flag in result["degenerate"]]
    if flagged:
        parts.append(report.paragraph("DEGENERATE PREDICTIONS (a model that says the same for every image has learnt "
                                      "nothing, whatever its accuracy):"))
        parts.append(report.bullets(flagged))
    if release is not None:
        gate = release.get("gate") or {}
        if release.get("refused"):
            parts.append(report.paragraph("RELEASE REFUSED: no model was released or published. " + "; ".join(gate.get("reasons", []))))
        elif gate and not gate.get("passed"):
            parts.append(report.paragraph("RELEASE FLAGGED (evaluate.release_gate=flag): released although it fails the gate. "
                                          + "; ".join(gate.get("reasons", []))))
        elif gate:
            parts.append(report.paragraph(f"Release gate passed: every released model beats the majority class and the colour "
                                          f"baseline on cross-validated {gate.get('metric')}."))
    if summary["expectations"]:
        parts.append(report.grid(["learning check", "backbone", "cross-validated mean", "met"],
                                 [[c["check"], c["backbone"] or "-", _fmt(c["value"]), "met" if c["met"] else "NOT MET"]
                                  for c in summary["expectations"]], "the profile's learning checks (multistage arm)"))
    parts.append(report.paragraph("These are cross-validated estimates for the released configuration: nothing was chosen on "
                                  "the evaluation folds, and the released model is one of the fold models they describe."))
    return report.section("Headline: the released model beside the trivial baselines", *parts)


def build_report(*, profile: Profile, data_summary: dict, split: dict, roi_metrics: dict, roi_html: str,
                 segment_metrics: dict, segment_html: str, evaluations: dict[str, list[dict]], crossval: dict, ttest: dict,
                 release: dict | None, html_path: Path | str, summary_path: Path | str) -> dict:
    """Write the HTML report and summary.json; returns the summary."""
    limitations = limitations_of(evaluations, data_summary, crossval, profile)
    methods = methods_of(evaluations, segment_metrics, crossval, profile)
    summary = run_summary(crossval, ttest, release, evaluations, profile, limitations, methods)
    sections = [_headline_section(summary, release, profile)]
    # the stage pages' warnings (no cell found in a dataset's images, a pixel scale that had to be assumed) lead
    warnings = re.findall(r"<p>WARNING: .*?</p>", roi_html + segment_html, flags=re.S)
    if warnings:
        sections.append(report.section("Warnings from the ROI and segment steps", *warnings))
    sections += [report.section("How these scores were made", report.bullets(methods)),
                report.section("What this run could not do", report.bullets(limitations))]

    datasets = [[name, info["layout"], " ".join(f"{c}={n}" for c, n in info["class_counts"].items())]
                for name, info in data_summary.get("datasets", {}).items()]
    folds = [[f["id"], len(f["train_groups"]), len(f["eval_groups"])] for f in split["folds"]]
    sections.append(report.section(
        "Data and split",
        report.paragraph(f"Source: {data_summary.get('source', '?')}; {data_summary.get('images', '?')} images."),
        report.grid(["dataset", "layout", "classes"], datasets),
        report.paragraph(f"{split['repeats']} x {split['folds_per_repeat']}-fold cross-validation, stratified by class and "
                         "grouped by source image (patient where named); crops and augmented copies follow their source. "
                         f"{len(split['group_alias'])} groups of byte-identical duplicate files were merged."),
        report.grid(["fold", "training groups", "evaluation groups"], folds),
    ))
    sections.append(report.section("Preprocessing (RGB offsets, monochrome, threshold)", report.table(roi_metrics), report.body_of(roi_html)))
    sections.append(report.section("Segmentation (residual U-Net, blue-channel isolation)", report.table(segment_metrics),
                                   report.body_of(segment_html)))
    curves = _curves_figure(evaluations)
    if curves is not None:
        sections.append(report.section("Training curves (paper Fig. 9)", report.png_img(curves, "mean loss and accuracy per stage")))

    metric = crossval.get("metric", profile.evaluate.release_metric)
    for task, table_name in (("detection", "Table II"), ("fab", "Table III")):
        if task not in crossval["tasks"]:
            continue
        parts = [_performance_table(crossval, task, f"{len(crossval['folds'])}-fold cross-validated {TASK_NAMES[task]} "
                                                    f"(mean ± SD over folds; the paper's {table_name}; baselines last)"),
                 report.subsection("Per fold", _fold_table(crossval, task, metric))]
        for backbone, by_arm in sorted(crossval["tasks"][task].items()):
            for arm, result in sorted(by_arm.items(), key=lambda kv: kv[0] != "mtl"):
                title = f"{backbone}, {ARM_NAMES[arm]}"
                figures = report.png_img(confusion_figure(result["classes"], result["confusion_matrix"],
                                                          f"{title}: pooled confusion"), f"confusion matrix {title}")
                if result["roc"]:
                    order = [k for k in list(result["classes"]) + ["micro-average", "macro-average"] if k in result["roc"]]
                    figures += report.png_img(roc_figure({k: {**result["roc"][k], "fpr": np.array(result["roc"][k]["fpr"]),
                                                              "tpr": np.array(result["roc"][k]["tpr"])} for k in order},
                                                         f"{title}: ROC (Fig. 10)"),
                                              f"ROC {'per class with micro and macro averages' if len(result['classes']) > 2 else 'of ' + result['classes'][-1]}, "
                                              f"{title} (the paper's Fig. 10)")
                parts.append(report.subsection(
                    title, figures,
                    _confusion_table(result, "confusion matrix over all folds, counts and row percentages (the paper's Table IV)"),
                    _per_class_table(result)))
        sections.append(report.section(f"Cross-validation: {TASK_NAMES[task]}", *parts))

    test_parts = [report.paragraph(
        f"Per-fold {ttest['metric']} of two arms on the same folds: classical (ctl) against multistage (mtl) transfer "
        "learning, and each against the colour-histogram baseline. Read the corrected resampled t-test: the others "
        "treat overlapping training sets as independent.")]
    for comparison in ttest["comparisons"]:
        first, second = comparison["first"], comparison["second"]
        pairs = [[f, _fmt(a), _fmt(b), _fmt(b - a) if a is not None and b is not None else "n/a"]
                 for f, a, b in zip(comparison["folds"], comparison["first_scores"], comparison["second_scores"])]
        test_parts.append(report.subsection(
            f"{TASK_NAMES[comparison['task']]}, {comparison['backbone']}: {second} - {first} (Table V layout)",
            report.grid(["fold", ARM_NAMES[first], ARM_NAMES[second], "difference"], pairs),
            _tests_table(comparison["tests"]) if comparison["tests"] else report.paragraph(comparison["note"]),
        ))
    paper = ttest["paper_table_v"]
    test_parts.append(report.subsection(
        "The paper's own Table V, re-tested",
        report.paragraph(f"The paper claims t = {paper['claimed']['t']} and p = {paper['claimed']['p']} with "
                         f"{paper['claimed']['df']} degrees of freedom. These cannot both hold: t = {paper['claimed']['t']} "
                         f"gives p = {paper['p_of_claimed_t']:.3f}, and p = {paper['claimed']['p']} needs |t| = "
                         f"{paper['t_for_claimed_p']:.2f}. Its ten runs give:"),
        _tests_table(paper["tests"]),
    ))
    sections.append(report.section("Classical vs multistage transfer learning, and both vs the colour baseline", *test_parts))

    if release is not None:
        rows = [[role, pick["backbone"], pick["arm"], pick["fold_id"], pick.get("chosen_by", "-"), _fmt(pick.get("inner_mean")),
                 f"{pick['cv_mean']:.4f} ± {pick['cv_std']:.4f}" if pick.get("cv_mean") is not None else "-"]
                for role, pick in release["selection"].items()]
        version = "none (refused)" if release.get("refused") else release["version"]
        sections.append(report.section(
            "Released model",
            report.paragraph(f"Version {version}" + (f", published to {release['published_to']}" if release.get("published_to") else "")
                             + f". Chosen on the folds' inner validation splits by mean {profile.evaluate.release_metric} "
                               "(backbone and arm), then the fold model with the best inner-validation value; the evaluation "
                               "folds chose nothing. Its expected performance is the cross-validated mean."),
            report.grid(["role", "backbone", "arm", "fold", "chosen by", "inner-validation mean", "cross-validated"], rows),
        ))
    atomic_write_text(Path(html_path), report.page(f"Leukemia MTL run report ({profile.name} profile)", *sections))
    atomic_write_json(Path(summary_path), summary)
    return summary
