"""One self-contained HTML report per run, and summary.json, its numbers in a fixed schema.

summary.json (schema "leukemia-mtl/summary/1"):
    profile, folds (fold ids), backbones, imagenet (bool: did stage 1 start from ImageNet?),
    limitations (what this run could not do, in words),
    tasks: {"detection" | "fab": {backbone: {"mtl" | "ctl": {
        "folds": [{"fold_id", "accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro"}],
        "mean": {metric: value}, "std": {metric: value}}}}}   (None where undefined)
    ttest: [{"task", "backbone", "metric", "folds", "ctl", "mtl", "tests": [{"test", "statistic",
             "df", "p_value", "mean_difference", "ci_low", "ci_high", "effect_size", ...}]}]
    release: {"version", "selection", "published_to"}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leukemia_mtl import report
from leukemia_mtl.config import Profile
from leukemia_mtl.evaluate import ARM_NAMES, TASK_NAMES, confusion_figure, roc_figure
from leukemia_mtl.io_utils import atomic_write_json, atomic_write_text

SCHEMA = "leukemia-mtl/summary/1"
SUMMARY_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
PAPER_PROFILE_EPOCHS = 160
PAPER_FOLDS = 10


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _mean_std(summary: dict, metric: str) -> str:
    entry = summary[metric]
    return "n/a" if entry["mean"] is None else f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def run_summary(crossval: dict, ttest: dict, release: dict | None, evaluations: dict[str, list[dict]],
                profile: Profile, limitations: list[str]) -> dict:
    tasks = {}
    for task, by_backbone in crossval["tasks"].items():
        for backbone, by_arm in by_backbone.items():
            for arm, result in by_arm.items():
                tasks.setdefault(task, {}).setdefault(backbone, {})[arm] = {
                    "folds": [{"fold_id": f["fold_id"], **{k: f[k] for k in SUMMARY_KEYS}} for f in result["folds"]],
                    "mean": {k: result["summary"][k]["mean"] for k in SUMMARY_KEYS},
                    "std": {k: result["summary"][k]["std"] for k in SUMMARY_KEYS},
                }
    return {
        "schema": SCHEMA,
        "profile": profile.name,
        "folds": crossval["folds"],
        "backbones": sorted({b for by_backbone in crossval["tasks"].values() for b in by_backbone}),
        "imagenet": all(e["summary"]["imagenet"] for entries in evaluations.values() for e in entries),
        "limitations": limitations,
        "tasks": tasks,
        "ttest": [{k: c[k] for k in ("task", "backbone", "metric", "folds", "ctl", "mtl", "tests", "note")}
                  for c in ttest["comparisons"]],
        "release": None if release is None else {"version": release["version"], "selection": release["selection"],
                                                  "published_to": release.get("published_to")},
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
    notes.append("Unlike the paper, augmentation ran after the split on training images only, so these scores are "
                 "not inflated by copies of one image on both sides of a fold.")
    return notes


def _curves_figure(evaluations: dict[str, list[dict]]) -> bytes | None:
    """Mean training and validation loss and accuracy per stage and backbone over folds (paper Fig. 9)."""
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
                for prefix, style, label in (("", "-o", "training"), ("val_", "--o", "validation")):
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


def _performance_table(crossval: dict, task: str, caption: str) -> str:
    rows = []
    for backbone, by_arm in sorted(crossval["tasks"][task].items()):
        for arm in ("mtl", "ctl"):
            if arm in by_arm:
                summary = by_arm[arm]["summary"]
                rows.append([backbone, ARM_NAMES[arm]] + [_mean_std(summary, m) for m in
                                                          ("accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")])
    return report.grid(["model", "arm", "accuracy", "precision", "recall", "F1-score", "AUC (macro)"], rows, caption)


def _fold_table(crossval: dict, task: str) -> str:
    rows = []
    for backbone, by_arm in sorted(crossval["tasks"][task].items()):
        for arm, result in by_arm.items():
            for f in result["folds"]:
                rows.append([backbone, arm, f["fold_id"], f["images"], _fmt(f["accuracy"]), _fmt(f["precision_macro"]),
                             _fmt(f["recall_macro"]), _fmt(f["f1_macro"]), _fmt(f["auc_macro"]), _fmt(f["auc_micro"])])
    return report.grid(["model", "arm", "fold", "images", "accuracy", "precision", "recall", "F1", "AUC macro", "AUC micro"], rows)


def _per_class_table(result: dict) -> str:
    """Per-class precision, recall and F1 of the pooled folds (from the per-fold values' mean)."""
    rows = []
    for name in result["classes"]:
        values = {k: [f["per_class"][name][k] for f in result["folds"]] for k in ("precision", "recall", "f1")}
        auc = [f["auc"][name] for f in result["folds"] if f["auc"][name] is not None]
        rows.append([name] + [_fmt(float(np.mean(v))) for v in values.values()] + [_fmt(float(np.mean(auc))) if auc else "n/a"])
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


def build_report(*, profile: Profile, data_summary: dict, split: dict, roi_metrics: dict, roi_html: str,
                 segment_metrics: dict, segment_html: str, evaluations: dict[str, list[dict]], crossval: dict, ttest: dict,
                 release: dict | None, html_path: Path | str, summary_path: Path | str) -> dict:
    """Write the HTML report and summary.json; returns the summary."""
    limitations = limitations_of(evaluations, data_summary, crossval, profile)
    summary = run_summary(crossval, ttest, release, evaluations, profile, limitations)
    sections = [report.section("What this run could not do", report.bullets(limitations))]

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

    for task, table_name in (("detection", "Table II"), ("fab", "Table III")):
        if task not in crossval["tasks"]:
            continue
        parts = [_performance_table(crossval, task, f"{len(crossval['folds'])}-fold cross-validated {TASK_NAMES[task]} "
                                                    f"(mean ± SD over folds; the paper's {table_name})"),
                 report.subsection("Per fold", _fold_table(crossval, task))]
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
                                              f"ROC per class with micro and macro averages, {title} (the paper's Fig. 10)")
                parts.append(report.subsection(
                    title, figures,
                    _confusion_table(result, "confusion matrix over all folds, counts and row percentages (the paper's Table IV)"),
                    _per_class_table(result)))
        sections.append(report.section(f"Cross-validation: {TASK_NAMES[task]}", *parts))

    test_parts = [report.paragraph(
        f"Per-fold {ttest['metric']} of classical (ctl) and multistage (mtl) transfer learning on the same folds. "
        "Read the corrected resampled t-test: the others treat overlapping training sets as independent.")]
    for comparison in ttest["comparisons"]:
        pairs = [[f, _fmt(c), _fmt(m), _fmt(m - c)] for f, c, m in zip(comparison["folds"], comparison["ctl"], comparison["mtl"])]
        test_parts.append(report.subsection(
            f"{TASK_NAMES[comparison['task']]}, {comparison['backbone']} (Table V layout)",
            report.grid(["fold", "classical", "multistage", "difference"], pairs),
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
    sections.append(report.section("Classical vs multistage transfer learning", *test_parts))

    if release is not None:
        rows = [[role, pick["backbone"], pick["arm"], pick["fold_id"],
                 f"{pick['cv_mean']:.4f} ± {pick['cv_std']:.4f}" if "cv_mean" in pick else "-"]
                for role, pick in release["selection"].items()]
        sections.append(report.section(
            "Released model",
            report.paragraph(f"Version {release['version']}" + (f", published to {release['published_to']}" if release.get("published_to") else "")
                             + f". Selected by mean cross-validated {profile.evaluate.release_metric}; the fold model with the best "
                               "held-out score. Its expected performance is the cross-validated mean, not that fold's score."),
            report.grid(["role", "backbone", "arm", "fold", "cross-validated"], rows),
        ))
    atomic_write_text(Path(html_path), report.page(f"Leukemia MTL run report ({profile.name} profile)", *sections))
    atomic_write_json(Path(summary_path), summary)
    return summary
