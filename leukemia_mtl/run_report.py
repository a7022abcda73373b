"""One self-contained HTML report per run, and summary.json, its numbers in a fixed schema.

The report opens with what matters to a screening decision: the released detection model's
sensitivity, specificity, PPV, NPV and AUC with confidence intervals (pooled over the held-out
folds), beside the majority class and the colour-histogram baseline, any degenerate predictions,
the release gate and the profile's learning checks. Then how the scores were kept honest, the
data, every stage, the paper's tables and the tests.

The page comes from leukemia_mtl/templates (jinja2, autoescaped, through leukemia_mtl.report): every
string from the data is shown as text; only report's own pieces and our stage pages' bodies are HTML.

summary.json (schema "leukemia-mtl/summary/2") is written by `run_summary` through
leukemia_mtl.results.RunSummary, whose docstring is the schema and which its readers load it with.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from markupsafe import Markup

from leukemia_mtl import report
from leukemia_mtl.bundles import EXPLANATIONS_FILE
from leukemia_mtl.config import Profile, parse_expectation
from leukemia_mtl.data.shortcuts import Shortcut
from leukemia_mtl.evaluate import confusion_figure, describe_threshold, roc_figure
from leukemia_mtl.formatting import NOT_AVAILABLE, UNBROKEN, interval, mean_std
from leukemia_mtl.io_utils import atomic_write_json, atomic_write_text
from leukemia_mtl.model_card import describe_weights_source
from leukemia_mtl.paper import EPOCHS as PAPER_EPOCHS
from leukemia_mtl.paper import FOLDS as PAPER_FOLDS
from leukemia_mtl.paper import INPUT_SIZE as PAPER_INPUT_SIZE
from leukemia_mtl.results import SUMMARY_SCHEMA as SCHEMA
from leukemia_mtl.results import ArmResult, CrossvalResult, RunSummary
from leukemia_mtl.stages import (
    ARM_NAMES,
    BASELINE_ARMS,
    FEATURES,
    KIND_OF_ARM,
    MTL,
    TASK_NAMES,
    TRAINING_STAGES,
    TRANSFER_ARMS,
)
from leukemia_mtl.tune import STUDY_FILE, study_parts

SUMMARY_KEYS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
OPERATING_KEYS = ("sensitivity", "specificity", "ppv", "npv", "auc")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _mean_std(summary: dict, metric: str) -> str:
    return mean_std(summary[metric]["mean"], summary[metric]["std"], 4)


def _with_interval(entry: dict | None) -> str:
    return interval(entry, separator=UNBROKEN)  # an interval is not broken


def _arm_summary(result: ArmResult) -> dict:
    """An arm's ARM object of summary.json (see RunSummary)."""
    return {
        "folds": [
            {"fold_id": f["fold_id"], **{k: f[k] for k in SUMMARY_KEYS}, "inner_validation": f.get("inner_validation")}
            for f in result.folds
        ],
        "mean": {k: result.cv_mean(k) for k in SUMMARY_KEYS},
        "std": {k: result.cv_std(k) for k in SUMMARY_KEYS},
        "inner_validation_mean": {k: v["mean"] for k, v in result.inner_validation.items()},
        "operating_point": result.operating_point,
        "degenerate": result.degenerate,
    }


def expectations_of(crossval: CrossvalResult, profile: Profile) -> list[dict]:
    """The profile's learning checks, on the multistage arm's cross-validated mean, per backbone."""
    checks = []
    for text in profile.evaluate.expectations:
        task, metric, threshold = parse_expectation(text)
        for result in sorted((r for r in crossval.arms(task) if r.arm == MTL), key=lambda r: r.backbone):
            value = result.cv_mean(metric)
            checks.append(
                {
                    "check": text,
                    "task": task,
                    "metric": metric,
                    "backbone": result.backbone,
                    "arm": MTL,
                    "value": value,
                    "threshold": threshold,
                    "met": value is not None and value >= threshold,
                }
            )
        if task not in crossval.task_names:
            checks.append(
                {
                    "check": text,
                    "task": task,
                    "metric": metric,
                    "backbone": None,
                    "arm": MTL,
                    "value": None,
                    "threshold": threshold,
                    "met": False,
                }
            )
    return checks


def headline_of(crossval: CrossvalResult, release: dict | None) -> dict:
    """Per task: the released configuration's pooled operating point, beside the two baselines'."""
    headline = {}
    for task in crossval.task_names:
        pick = (release or {}).get("selection", {}).get(task)
        if pick is None:
            continue
        result = crossval.arm(task, pick["backbone"], pick["arm"])
        entry = {
            "released": {
                "backbone": pick["backbone"],
                "arm": pick["arm"],
                "operating_point": result.operating_point,
                "degenerate": result.degenerate,
            }
        }
        for baseline in crossval.baseline_arms(task):
            entry[baseline.arm] = {"operating_point": baseline.operating_point, "degenerate": baseline.degenerate}
        headline[task] = entry
    return headline


def run_summary(
    crossval: CrossvalResult,
    ttest: dict,
    release: dict | None,
    evaluations: dict[str, list[dict]],
    profile: Profile,
    limitations: list[str],
    methods: list[str] | None = None,
) -> dict:
    """summary.json's object (RunSummary's schema)."""
    return RunSummary(
        schema=SCHEMA,
        profile=profile.name,
        folds=list(crossval.folds),
        backbones=sorted(crossval.backbones()),
        imagenet=all(e["summary"]["imagenet"] for entries in evaluations.values() for e in entries),
        limitations=limitations,
        methods=methods or [],
        tasks=crossval.tasks_tree(_arm_summary),
        baselines=crossval.baselines_tree(_arm_summary),
        ttest=[
            {
                k: c[k]
                for k in (
                    "task",
                    "backbone",
                    "metric",
                    "first",
                    "second",
                    "folds",
                    "first_scores",
                    "second_scores",
                    "tests",
                    "note",
                )
            }
            for c in ttest["comparisons"]
        ],
        headline=headline_of(crossval, release),
        expectations=expectations_of(crossval, profile),
        release=None
        if release is None
        else {
            "version": release["version"],
            "refused": bool(release.get("refused")),
            "gate": release.get("gate"),
            "selection": release["selection"],
            "published_to": release.get("published_to"),
        },
    ).to_dict()


def load_evaluations(groups: dict[str, list[Path | str]]) -> dict[str, list[dict]]:
    """{stage display name: [{summary, history, info, dir}]} from finetune evaluation folders (info: the
    model's classifier.json; dir: where its explanations.png lies, read only for the released models)."""
    loaded = {}
    for name, dirs in groups.items():
        loaded[name] = [
            {
                "summary": json.loads((Path(d) / "summary.json").read_text()),
                "history": json.loads((Path(d) / "history.json").read_text()),
                "info": json.loads((Path(d) / "classifier.json").read_text()),
                "dir": str(d),
            }
            for d in dirs
        ]
    return loaded


RELEASED_ROLES = (
    ("detection", "detection (stage 3 or classical)"),
    ("fab", "FAB type (stage 3 or classical)"),
    ("cells", "cell scorer (stage 2)"),
)


def _released_evaluations(evaluations: dict[str, list[dict]], release: dict) -> list[tuple[str, dict, dict]]:
    """(role, its selection, its evaluation entry) of every released model the run's evaluations hold."""
    found = []
    for role, _ in RELEASED_ROLES:
        pick = (release.get("selection") or {}).get(role)
        if not pick:
            continue
        stage = pick.get("stage") or KIND_OF_ARM.get(pick["arm"])
        task = "blast" if role == "cells" else role
        for entries in evaluations.values():
            for entry in entries:
                s = entry["summary"]
                key = tuple(s.get(k) for k in ("stage", "task", "backbone", "fold_id"))
                if key == (stage, task, pick["backbone"], pick["fold_id"]) and entry.get("dir"):
                    found.append((role, pick, entry))
    return found


def _explanations_section(
    evaluations: dict[str, list[dict]], release: dict | None, profile: Profile
) -> report.Section | None:
    """Grad-CAM of the released models on their fold's held-out images: where each found its evidence."""
    if release is None:
        return None
    parts = [
        report.paragraph(
            "Grad-CAM heat maps (leukemia_mtl/explain.py) of the released models, on the held-out images of the fold each "
            f"was trained in: per class, the {profile.evaluate.explain_examples} image(s) the model was most and least sure "
            "of, each beside its heat map for its true class (red: the regions that raised that class's score). A model "
            "that looks at the black backdrop or the image's edge, not at the cell, has not learnt the cells. "
            "predict --explain draws the same maps for new images."
        )
    ]
    labels = dict(RELEASED_ROLES)
    shown = 0
    for role, pick, entry in _released_evaluations(evaluations, release):
        path = Path(entry["dir"]) / EXPLANATIONS_FILE
        if not path.is_file():
            continue
        shown += 1
        parts.append(
            report.subsection(
                f"{labels[role]}: {pick['backbone']}, fold {pick['fold_id']}",
                report.png_img(path.read_bytes(), f"Grad-CAM of the released {role} model"),
            )
        )
    if not shown:
        parts.append(
            report.paragraph(
                "No heat maps: the released models' folds held out no image, or evaluate.explain_examples is 0."
            )
        )
    return report.section("Explanations (Grad-CAM)", *parts)


def _model_card_section(release: dict | None) -> report.Section | None:
    """The release's model card (MODEL_CARD.md in the bundle), as the report shows it."""
    card = (release or {}).get("model_card")
    if not card:
        return None
    parts = [
        report.paragraph(card["research_use"]),
        report.subsection(
            "Intended use",
            report.paragraph(card["intended_use"]),
            report.paragraph("Not for:"),
            report.bullets(card["out_of_scope"]),
        ),
    ]
    data = card["data"]
    rows = [
        [name, d["layout"], d["origin"], ", ".join(f"{c} {n}" for c, n in d["class_counts"].items())]
        for name, d in data["datasets"].items()
    ]
    parts.append(
        report.subsection(
            "Data it saw",
            report.paragraph(f"Source: {data['source']}" + (" (synthetic images)" if data["synthetic"] else "")),
            report.grid(
                ["input", "layout", "from", "images per class"],
                rows,
                "what the released models were trained and scored on",
            ),
        )
    )
    performance = []
    point = card["operating_point"]
    if point.get("threshold") is not None:
        performance.append(
            report.paragraph(
                f"Operating point: ALL if {describe_threshold(point)}; predict uses it unless given --threshold."
            )
        )
    detection, fab = card["performance"].get("detection"), card["performance"].get("fab")
    if detection:
        performance.append(
            report.grid(
                ["", "sensitivity", "specificity", "PPV", "NPV", "AUC"],
                [
                    ["detection"]
                    + [_with_interval(detection.get(k)) for k in ("sensitivity", "specificity", "ppv", "npv", "auc")]
                ],
                f"cross-validated, pooled held-out folds, {int(detection['confidence'] * 100)}% intervals",
            )
        )
    if fab:
        performance.append(
            report.grid(
                ["", "accuracy", "balanced accuracy", "macro F1"],
                [
                    [
                        "FAB type",
                        _with_interval(fab.get("accuracy")),
                        _fmt(fab.get("balanced_accuracy"), 3),
                        _fmt(fab.get("f1_macro"), 3),
                    ]
                ],
                "cross-validated, pooled held-out folds",
            )
        )
    parts.append(report.subsection("Cross-validated performance", *performance))
    parts.append(report.subsection("What the run could not do", report.bullets(card["limitations"])))
    return report.section(f"Model card ({card['version'] or 'refused release'})", *parts)


def _stain_section(evaluations: dict[str, list[dict]], profile: Profile) -> report.Section:
    """Which stain normalisation the models were trained with, and the targets fitted per fold and stage."""
    method = profile.preprocess.stain
    if method == "none":
        return report.section(
            "Stain normalisation",
            report.paragraph(
                "preprocess.stain = none: images are used in their own stain, as the paper does. Smears from a lab whose "
                "stain differs may be misread (BENCHMARKS.md measures a shift; reinhard and macenko are the options)."
            ),
        )
    rows = []
    for name, entries in evaluations.items():
        for entry in entries:
            target = entry.get("info", {}).get("stain")
            if not target:
                continue
            values = (
                f"L*a*b* mean {', '.join(f'{v:.1f}' for v in target['lab_mean'])}; spread "
                f"{', '.join(f'{v:.1f}' for v in target['lab_std'])}"
                if target["method"] == "reinhard"
                else f"max concentrations {', '.join(f'{v:.2f}' for v in target['max_concentrations'])}"
            )
            rows.append(
                [
                    name,
                    entry["summary"]["backbone"],
                    entry["summary"]["fold_id"],
                    target["method"],
                    target["images"],
                    target["pixels"],
                    values,
                ]
            )
    return report.section(
        "Stain normalisation",
        report.paragraph(
            f"preprocess.stain = {method}: every stage's images were mapped onto a target fitted on that fold's training "
            "images only (the inner validation and evaluation images were normalised with it, never fitted on); each model "
            "carries its target, and predict applies it."
        ),
        report.grid(
            ["stage", "backbone", "fold", "method", "images fitted on", "pixels", "target"],
            rows,
            "the fitted stain targets, per model",
        ),
    )


def limitations_of(
    evaluations: dict[str, list[dict]], data_summary: dict, crossval: CrossvalResult, profile: Profile
) -> list[str]:
    """What a reader must know before comparing this run with the paper."""
    notes = []
    if not all(e["summary"]["imagenet"] for entries in evaluations.values() for e in entries):
        notes.append(
            "No ImageNet weights: stage 1 and the classical baseline started from random initialisation "
            f"(model.weights={profile.model.weights!r}), so this is not the paper's transfer from ImageNet."
        )
    for shortcut in data_summary.get("shortcuts", []):
        if shortcut["flagged"]:
            notes.append(
                f"SHORTCUT IN THE DATA: {Shortcut(**{k: v for k, v in shortcut.items() if k != 'flagged'}).sentence()}. "
                "A model can learn that instead of the cells, and its cross-validated scores would not hold for "
                "images from another camera or lab; read every score here, and the paper's 99.60 % on ALL-IDB1 "
                "(whose two cameras follow its classes), against it."
            )
    if "synthetic" in (data_summary.get("smears"), data_summary.get("cells")):
        notes.append(
            "Synthetic data: the images come from the built-in generator, not ALL-IDB; the numbers say the "
            "pipeline works, not how well it screens real smears."
        )
    cells = data_summary.get("datasets", {}).get("cells", {})
    if cells.get("layout") == "allidb2" and data_summary.get("cells") not in (None, "synthetic"):
        notes.append(
            "ALL-IDB2's single-cell images are cut from ALL-IDB1's smears with no link back to them, so stages 1-2 "
            "may have seen cells of a smear that stage 3 evaluates on; the split cannot keep them apart."
        )
    folds = len(crossval.folds)
    if folds < PAPER_FOLDS:
        notes.append(
            f"{folds} folds instead of the paper's {PAPER_FOLDS}: fewer paired scores, so the tests have little power."
        )
    if profile.train.epochs < PAPER_EPOCHS:
        notes.append(
            f"{profile.train.epochs} epoch{'s' if profile.train.epochs != 1 else ''} per stage instead of the paper's {PAPER_EPOCHS}, "
            f"at {profile.model.input_size} px instead of {PAPER_INPUT_SIZE}."
        )
    if profile.train.frozen_fraction > 0:
        notes.append(
            f"Only the top {1 - profile.train.frozen_fraction:.0%} of each backbone's layers were fine-tuned "
            f"(train.frozen_fraction={profile.train.frozen_fraction}); the paper tunes them all."
        )
    if profile.train.stage3_images == "cells":
        notes.append(
            "Stage 3 sees a smear through its isolated white cells (one crop per cell, one magnification) and "
            "averages their probabilities; the paper squares the whole isolated smear to the input, where at "
            f"{profile.model.input_size} px a white cell would be a few pixels wide (train.stage3_images). Chosen "
            "by measurement with ImageNet weights on generated smears (BENCHMARKS.md, stage 3's input): cells at "
            "71 px gave FAB macro F1 0.94 against 0.40 for the isolated smear and 0.25-0.63 for the whole field "
            "at 71-224 px, which detected ALL as well or better (balanced accuracy 0.92-0.96 against 0.88)."
        )
    else:
        notes.append(
            f"Stage 3 sees each smear as {profile.train.stage3_images!r} (train.stage3_images) squared to "
            f"{profile.model.input_size} px; the profiles' default, isolated cells, told the FAB types apart best "
            "on generated smears (BENCHMARKS.md, stage 3's input)."
        )
    return notes


def starting_weights_sentence(evaluations: dict[str, list[dict]]) -> str:
    """Where every backbone of the run started from: package, version, file, digest and licence where they are known."""
    sources = {}
    for entries in evaluations.values():
        for e in entries:
            source = e["summary"].get("weights_source") or {}
            if source and not e["summary"]["stage"].startswith(("stage2", "stage3")):  # later stages carry stage 1's
                sources[e["summary"]["backbone"]] = source
    if not sources:
        return "Starting weights: not recorded by the stages of this run."
    return (
        "Starting weights (stage 1 and the classical arm; stages 2-3 continue from the stage before): "
        + "; ".join(f"{backbone}: {describe_weights_source(source)}" for backbone, source in sorted(sources.items()))
        + "."
    )


def methods_of(
    evaluations: dict[str, list[dict]], segment_metrics: dict, crossval: CrossvalResult, profile: Profile
) -> list[str]:
    """How the scores were made, in words: what is held out, what chooses, what is balanced."""
    notes = [
        starting_weights_sentence(evaluations),
        "Augmentation ran after the split, on training images only (the paper augmented before splitting, which "
        "puts copies of one image on both sides of a fold).",
    ]
    validated = [e["summary"] for entries in evaluations.values() for e in entries if e["summary"].get("val_images")]
    if profile.train.validation_fraction > 0 and validated:
        notes.append(
            f"The evaluation folds only score. Inside each fold's training part an inner validation split "
            f"({profile.train.validation_fraction:.0%} of its smears or images, grouped and stratified) decides early "
            f"stopping (patience {profile.train.early_stopping_patience}) and the kept epoch, and the release picks "
            f"its backbone, arm and fold model by mean inner-validation {profile.evaluate.release_metric}."
        )
    else:
        notes.append(
            "The evaluation folds only score. The data was too small for an inner validation split in some "
            "stages: those trained every epoch without early stopping, and the release picked by fold order."
        )
    if profile.train.balanced_class_weights:
        weights = {
            e["summary"]["task"]: e["summary"].get("class_weights")
            for entries in evaluations.values()
            for e in entries
            if e["summary"].get("class_weights")
        }
        detection = weights.get("detection")
        shown = (
            f" (detection, one fold: {', '.join(f'{c} x{w:.2f}' for c, w in detection.items())})" if detection else ""
        )
        notes.append(
            "Every task trains on its own labels balanced: scikit-learn's balanced class weights over the task's "
            f"training labels{shown}, after augmentation balanced the FAB classes."
        )
    calibrated = [e["summary"].get("batchnorm_calibration") or {} for entries in evaluations.values() for e in entries]
    if any(c.get("before") for c in calibrated):
        notes.append(
            "Randomly initialised backbones had their batch-norm statistics set from training images before "
            "training (their defaults make the activations vanish) and, for the layers that trained, again after "
            "(population statistics of the final weights). Evaluation images took no part."
        )
    train_smears, heldout = segment_metrics.get("train_smears"), segment_metrics.get("heldout_smears")
    if train_smears:
        measured = (
            f"Its Dice against ground truth on the {int(segment_metrics.get('truth_smears') or 0)} held-out smears "
            f"with masks: {_fmt(segment_metrics.get('unet_dice'))} (the ROI step's: {_fmt(segment_metrics.get('roi_dice'))})."
            if segment_metrics.get("unet_dice") is not None
            else f"No held-out smear has a ground-truth mask; against the ROI masks it learnt from, on the {int(heldout or 0)} "
            f"held-out smears: Dice {_fmt(segment_metrics.get('unet_vs_roi_dice'))}."
        )
        notes.append(
            f"The U-Net was trained once, before the split, on {int(train_smears)} smears' white-cell masks (no "
            f"class labels); every smear is in one evaluation fold, so {int(train_smears)} of the evaluated smears "
            f"were segmented by a network that had seen their masks, though never their classes. {measured}"
        )
    notes.append(
        "Beside every arm: the training majority class, and a colour histogram "
        f"({profile.evaluate.colour_bins}x{profile.evaluate.colour_bins}x{profile.evaluate.colour_bins} RGB) with "
        "logistic regression, fitted on the same folds' training smears: what a model gets that has learnt "
        "nothing about cells."
    )
    if any(result.arm == FEATURES for result in crossval.arms(baselines=True)):
        notes.append(
            f"And {profile.model.backbones[0]}'s frozen ImageNet features of the whole smear (globally pooled, at "
            f"{profile.evaluate.features_size} px), standardised, with the same logistic regression: what ImageNet "
            "features get without the method's stages."
        )
    return notes


def _curves_figure(evaluations: dict[str, list[dict]], warmup_epochs: int = 0) -> bytes | None:
    """Mean training and validation loss and accuracy per stage and backbone over folds (paper Fig. 9); validation is
    each fold's inner validation split. Every stage starts with the profile's `warmup_epochs` head-only epochs."""
    names = [n for n, entries in evaluations.items() if entries]
    if not names:
        return None
    fig, axes = report.new_figure(len(names), 2, (10, 2.9 * len(names)))
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
                    ax.plot(range(1, length + 1), mean, style, label=f"{backbone} {label}")
            folds = len(evaluations[name]) // max(1, len(by_backbone))
            report.set_title(ax, f"{name}: mean {metric} over {folds} fold{'s' if folds != 1 else ''}")
            report.epoch_axis(ax, warmup_epochs)
            ax.set_ylabel(metric)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
    return report.figure_png(fig)


def _arm_rows(crossval: CrossvalResult, task: str) -> list[ArmResult]:
    """Every arm of `task` a table shows: the transfer-learning arms by backbone (multistage first), then the
    baselines (their backbone: "baseline")."""
    order = TRANSFER_ARMS
    rows = sorted((r for r in crossval.arms(task) if r.arm in order), key=lambda r: (r.backbone, order.index(r.arm)))
    return rows + crossval.baseline_arms(task)


def _performance_table(crossval: CrossvalResult, task: str, caption: str) -> str:
    metrics = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "auc_macro")
    rows = [
        [result.backbone, ARM_NAMES[result.arm]]
        + [_mean_std(result.summary, m) for m in metrics]
        + ["; ".join(result.degenerate) or "-"]
        for result in _arm_rows(crossval, task)
    ]
    return report.grid(
        [
            "model",
            "arm",
            "accuracy",
            "balanced accuracy",
            "precision",
            "recall",
            "F1-score",
            "AUC",
            "degenerate predictions",
        ],
        rows,
        caption,
    )


def _fold_table(crossval: CrossvalResult, task: str, metric: str, caption: str) -> str:
    rows = []
    for result in _arm_rows(crossval, task):
        for f in result.folds:
            inner = (f.get("inner_validation") or {}).get(metric)
            rows.append(
                [
                    result.backbone,
                    result.arm,
                    f["fold_id"],
                    f["images"],
                    _fmt(f["accuracy"]),
                    _fmt(f["balanced_accuracy"]),
                    _fmt(f["f1_macro"]),
                    _fmt(f["auc_macro"]),
                    _fmt(f["auc_micro"]),
                    _fmt(inner),
                ]
            )
    return report.grid(
        [
            "model",
            "arm",
            "fold",
            "images",
            "accuracy",
            "balanced accuracy",
            "F1",
            "AUC (macro)",
            "AUC (micro)",
            f"inner-validation {metric}",
        ],
        rows,
        caption,
    )


def _per_class_table(result: ArmResult, caption: str) -> str:
    """Per-class precision, recall and F1 of the pooled folds (from the per-fold values' mean)."""
    rows = []
    for name in result.classes:
        values = {k: [f["per_class"][name][k] for f in result.folds] for k in ("precision", "recall", "f1")}
        auc = [f["auc"][name] for f in result.folds if f["auc"].get(name) is not None]
        rows.append(
            [name] + [_fmt(float(np.mean(v))) for v in values.values()] + [_fmt(float(np.mean(auc))) if auc else "-"]
        )
    return report.grid(["class", "precision", "recall", "F1", "AUC"], rows, caption)


def _confusion_table(result: ArmResult, caption: str) -> str:
    """Counts with row percentages, the layout of the paper's Table IV."""
    classes = result.classes
    rows = [
        [truth] + [f"{count} ({percent:.2f}%)" for count, percent in zip(counts, percents)]
        for truth, counts, percents in zip(classes, result.confusion_matrix, result.confusion_matrix_percent)
    ]
    return report.grid(["true \\ predicted"] + list(classes), rows, caption)


def _tests_table(tests: list[dict], caption: str = "") -> str:
    rows = [
        [
            t["test"],
            _fmt(t["statistic"]),
            _fmt(t["df"], 2),
            _fmt(t["p_value"]),
            _fmt(t["mean_difference"]),
            f"[{_fmt(t['ci_low'])},\u00a0{_fmt(t['ci_high'])}]",
            f"{_fmt(t['effect_size'], 3)} ({t['effect_size_name']})",
            t["note"],
        ]
        for t in tests
    ]
    return report.grid(
        ["test", "statistic", "df", "p", "mean difference", "95% CI", "effect size", "note"], rows, caption
    )


def _headline_section(
    summary: dict, crossval: CrossvalResult, release: dict | None, profile: Profile
) -> report.Section:
    parts = []
    for task, entry in summary["headline"].items():
        released = entry["released"]
        rows = [(f"released: {released['backbone']}, {ARM_NAMES[released['arm']]}", released)]
        rows += [(ARM_NAMES[arm], entry[arm]) for arm in BASELINE_ARMS if arm in entry]
        point = released["operating_point"]
        if point["kind"] == "binary":
            grid = report.grid(
                ["model", "sensitivity", "specificity", "PPV", "NPV", "AUC", "degenerate predictions"],
                [
                    [name]
                    + [_with_interval(e["operating_point"][k]) for k in OPERATING_KEYS]
                    + ["; ".join([*e["degenerate"], *filter(None, [e["operating_point"].get("degenerate")])]) or "-"]
                    for name, e in rows
                ],
                f"{TASK_NAMES[task]}: every held-out smear once, {point['positive']} if "
                f"P({point['positive']}) >= {_fmt(point['threshold'], 3)}"
                + (
                    f" ({describe_threshold(point)}; each baseline at its own threshold for the same "
                    "sensitivity, chosen on the evaluation folds: the baselines have no inner split, so "
                    "their figures are optimistic)"
                    if "target_sensitivity" in point
                    else ""
                )
                + f"; {int(profile.evaluate.confidence * 100)}% "
                "Wilson intervals, bootstrap interval for the AUC (none where every resample gives one value)",
            )
        else:
            grid = report.grid(
                ["model", "accuracy", "balanced accuracy", "macro F1", "degenerate predictions"],
                [
                    [
                        name,
                        _with_interval(e["operating_point"]["accuracy"]),
                        _fmt(e["operating_point"]["balanced_accuracy"], 3),
                        _fmt(e["operating_point"]["f1_macro"], 3),
                        "; ".join(e["degenerate"]) or "-",
                    ]
                    for name, e in rows
                ],
                f"{TASK_NAMES[task]}: every held-out smear once",
            )
        parts.append(grid)
    flagged = [
        f"{result.task} {result.backbone} {result.arm}: {flag}"
        for result in crossval.arms()
        for flag in result.degenerate
    ]
    if flagged:
        parts.append(
            report.paragraph(
                "DEGENERATE PREDICTIONS (a model that says the same for every image has learnt "
                "nothing, whatever its accuracy):"
            )
        )
        parts.append(report.bullets(flagged))
    if release is not None:
        gate = release.get("gate") or {}
        if release.get("refused"):
            parts.append(
                report.paragraph(
                    "RELEASE REFUSED: no model was released or published. " + "; ".join(gate.get("reasons", []))
                )
            )
        elif gate and not gate.get("passed"):
            parts.append(
                report.paragraph(
                    "RELEASE FLAGGED (evaluate.release_gate=flag): released although it fails the gate. "
                    + "; ".join(gate.get("reasons", []))
                )
            )
        elif gate:
            parts.append(
                report.paragraph(
                    f"Release gate passed: every released model beats every baseline scored "
                    f"on cross-validated {gate.get('metric')}, at an operating point that is not degenerate."
                )
            )
    if summary["expectations"]:
        parts.append(
            report.grid(
                ["learning check", "backbone", "cross-validated mean", "met"],
                [
                    [c["check"], c["backbone"] or "-", _fmt(c["value"]), "met" if c["met"] else "NOT MET"]
                    for c in summary["expectations"]
                ],
                "the profile's learning checks (multistage arm)",
            )
        )
    parts.append(
        report.paragraph(
            "These are cross-validated estimates for the released configuration: nothing was chosen on "
            "the evaluation folds, and the released model is one of the fold models they describe."
        )
    )
    return report.section("Headline: the released model beside the trivial baselines", *parts)


def _tuning_section(studies: list[dict]) -> report.Section:
    """Every (fold, backbone)'s search: its trials, the best beside the profile's own settings, the importances."""
    parts = [report.subsection(f"Fold {s['fold_id']}, {s['backbone']}", *study_parts(s)) for s in studies]
    return report.section("Hyperparameter search (nested in the folds)", *parts)


def _warnings_section(roi_html: str, segment_html: str) -> report.Section | None:
    """The stage pages' warnings (no cell found in a dataset's images, a pixel scale that had to be assumed) lead."""
    # our own pages' paragraphs, autoescaped when they were written: trusted HTML
    warnings = [Markup(w) for w in re.findall(r"<p\b[^>]*>WARNING: .*?</p>", roi_html + segment_html, flags=re.S)]
    return report.section("Warnings from the ROI and segment steps", *warnings) if warnings else None


def _data_section(data_summary: dict, split: dict) -> report.Section:
    datasets = [
        [name, info["layout"], " ".join(f"{c}={n}" for c, n in info["class_counts"].items())]
        for name, info in data_summary.get("datasets", {}).items()
    ]
    folds = [[f["id"], len(f["train_groups"]), len(f["eval_groups"])] for f in split["folds"]]
    return report.section(
        "Data and split",
        report.paragraph(f"Source: {data_summary.get('source', '?')}; {data_summary.get('images', '?')} images."),
        report.grid(["dataset", "layout", "classes"], datasets, "images per dataset and class"),
        report.paragraph(
            f"{split['repeats']} x {split['folds_per_repeat']}-fold cross-validation, stratified by class and "
            "grouped by source image (patient where named); crops and augmented copies follow their source. "
            f"{len(split['group_alias'])} groups of byte-identical duplicate files were merged."
        ),
        report.grid(["fold", "training groups", "evaluation groups"], folds, "groups on each side of each fold"),
    )


def _stage_page_section(heading: str, stage_html: str) -> report.Section:
    """A stage's own page (its metrics table, notes and figures), embedded once: the page already holds the
    stage's metrics, so they are not tabled again here."""
    return report.section(heading, report.body_of(stage_html))


def _crossval_section(crossval: CrossvalResult, task: str, table_name: str, metric: str) -> report.Section:
    parts = [
        _performance_table(
            crossval,
            task,
            f"{len(crossval.folds)}-fold cross-validated {TASK_NAMES[task]} "
            f"(mean ± SD over folds; the paper's {table_name}; baselines last)",
        ),
        report.subsection(
            "Per fold", _fold_table(crossval, task, metric, f"{TASK_NAMES[task]}, every arm on every fold")
        ),
    ]
    for result in sorted(crossval.arms(task), key=lambda r: (r.backbone, r.arm != MTL)):  # multistage first
        title = f"{result.backbone}, {ARM_NAMES[result.arm]}"
        images = [
            report.png_img(
                confusion_figure(result.classes, result.confusion_matrix, f"{title}: pooled confusion"),
                f"confusion matrix {title}",
            )
        ]
        if result.roc:
            order = [k for k in list(result.classes) + ["micro-average", "macro-average"] if k in result.roc]
            curves = {
                k: {**result.roc[k], "fpr": np.array(result.roc[k]["fpr"]), "tpr": np.array(result.roc[k]["tpr"])}
                for k in order
            }
            what = "per class with micro and macro averages" if len(result.classes) > 2 else "of " + result.classes[-1]
            images.append(
                report.png_img(
                    roc_figure(curves, f"{title}: ROC (Fig. 10)"), f"ROC {what}, {title} (the paper's Fig. 10)"
                )
            )
        parts.append(
            report.subsection(
                title,
                report.figures(*images),
                _confusion_table(
                    result,
                    f"{title}: confusion matrix over all folds (each image's most probable class, "
                    "not the operating point), counts and row percentages "
                    "(the paper's Table IV)",
                ),
                _per_class_table(result, f"{title}: per class, mean over folds"),
            )
        )
    return report.section(f"Cross-validation: {TASK_NAMES[task]}", *parts)


def _ttest_section(ttest: dict) -> report.Section:
    parts = [
        report.paragraph(
            f"Per-fold {ttest['metric']} of two arms on the same folds: classical (ctl) against multistage (mtl) transfer "
            "learning, and each against the colour-histogram baseline. Read the corrected resampled t-test: the others "
            "treat overlapping training sets as independent."
        )
    ]
    for comparison in ttest["comparisons"]:
        first, second = comparison["first"], comparison["second"]
        name = f"{TASK_NAMES[comparison['task']]}, {comparison['backbone']}: {second} - {first}"
        pairs = [
            [f, _fmt(a), _fmt(b), _fmt(b - a) if a is not None and b is not None else "n/a"]
            for f, a, b in zip(comparison["folds"], comparison["first_scores"], comparison["second_scores"])
        ]
        parts.append(
            report.subsection(
                f"{name} (Table V layout)",
                report.grid(
                    ["fold", ARM_NAMES[first], ARM_NAMES[second], "difference"],
                    pairs,
                    f"{name}: per-fold {ttest['metric']}",
                ),
                _tests_table(comparison["tests"], f"{name}: paired tests")
                if comparison["tests"]
                else report.paragraph(comparison["note"]),
            )
        )
    paper = ttest["paper_table_v"]
    parts.append(
        report.subsection(
            "The paper's own Table V, re-tested",
            report.paragraph(
                f"The paper claims t = {paper['claimed']['t']} and p = {paper['claimed']['p']} with "
                f"{paper['claimed']['df']} degrees of freedom. These cannot both hold: t = {paper['claimed']['t']} "
                f"gives p = {paper['p_of_claimed_t']:.3f}, and p = {paper['claimed']['p']} needs |t| = "
                f"{paper['t_for_claimed_p']:.2f}. Its ten runs give:"
            ),
            _tests_table(paper["tests"], "the paper's ten runs: paired tests"),
        )
    )
    return report.section("Classical vs multistage transfer learning, and both vs the colour baseline", *parts)


def _release_section(release: dict, profile: Profile) -> report.Section:
    rows = [
        [
            role,
            pick["backbone"],
            pick["arm"],
            pick["fold_id"],
            pick.get("chosen_by", "-"),
            _fmt(pick.get("inner_mean")),
            mean_std(pick["cv_mean"], pick["cv_std"], 4) if pick.get("cv_mean") is not None else "-",
        ]
        for role, pick in release["selection"].items()
    ]
    version = "none (refused)" if release.get("refused") else release["version"]
    return report.section(
        "Released model",
        report.paragraph(
            f"Version {version}"
            + (f", published to {release['published_to']}" if release.get("published_to") else "")
            + f". Chosen on the folds' inner validation splits by mean {profile.evaluate.release_metric} "
            "(backbone and arm), then the fold model with the best inner-validation value; the evaluation "
            "folds chose nothing. Its expected performance is the cross-validated mean."
        ),
        report.grid(
            ["role", "backbone", "arm", "fold", "chosen by", "inner-validation mean", "cross-validated"],
            rows,
            "the released models, one per task",
        ),
    )


def build_report(
    *,
    profile: Profile,
    data_summary: dict,
    split: dict,
    roi_metrics: dict,
    roi_html: str,
    segment_metrics: dict,
    segment_html: str,
    evaluations: dict[str, list[dict]],
    crossval: CrossvalResult,
    ttest: dict,
    release: dict | None,
    html_path: Path | str,
    summary_path: Path | str,
    studies: list[dict] | None = None,
) -> dict:
    """Write the HTML report and summary.json; returns the summary.

    The report is the list of sections below, in reading order (templates/run_report.html shows them, with a
    list of contents); to add one, write a function that returns report.section(heading, *parts) and put its
    call at its place in the list. A None entry is left out. `roi_metrics` is shown by the embedded ROI page.
    `crossval` is the crossval step's results; `ttest` the ttest step's JSON.
    """
    limitations = limitations_of(evaluations, data_summary, crossval, profile)
    methods = methods_of(evaluations, segment_metrics, crossval, profile)
    if profile.tune.trials and not studies:
        limitations.insert(
            0,
            f"tune.trials is {profile.tune.trials}, but this run's DAG has no tune task (it was "
            "compiled with tune.trials 0): nothing was searched; compile or submit with "
            f"--set tune.trials={profile.tune.trials} to search.",
        )
    if studies:
        methods.insert(
            0,
            f"Training settings searched per fold and backbone ({len(studies[0]['trials'])} trials of "
            "Optuna's TPE each) on that fold's training part, every trial scored on its inner validation "
            "split: the cross-validated scores below are nested, an outer estimate of the searched procedure.",
        )
    summary = run_summary(crossval, ttest, release, evaluations, profile, limitations, methods)
    if studies:
        summary["tuning"] = [
            {
                "fold_id": s["fold_id"],
                "backbone": s["backbone"],
                "trials": len(s["trials"]),
                "best_inner_score": (s["best"] or {}).get("value"),
                "best_params": (s["best"] or {}).get("params"),
                "profile_inner_score": (s["profile_trial"] or {}).get("value"),
            }
            for s in studies
        ]
    curves = _curves_figure(evaluations, profile.train.warmup_epochs)
    metric = crossval.metric or profile.evaluate.release_metric
    sections = [
        _headline_section(summary, crossval, release, profile),
        _warnings_section(roi_html, segment_html),
        report.section("How these scores were made", report.bullets(methods)),
        report.section("What this run could not do", report.bullets(limitations)),
        _data_section(data_summary, split),
        _tuning_section(studies) if studies else None,
        _stage_page_section("Preprocessing (RGB offsets, monochrome, threshold)", roi_html),
        _stage_page_section("Segmentation (residual U-Net, blue-channel isolation)", segment_html),
        None
        if curves is None
        else report.section(
            "Training curves (paper Fig. 9)", report.png_img(curves, "mean loss and accuracy per stage, over folds")
        ),
        *(
            _crossval_section(crossval, task, table_name, metric)
            for task, table_name in (("detection", "Table II"), ("fab", "Table III"))
            if task in crossval.task_names
        ),
        _ttest_section(ttest),
        _explanations_section(evaluations, release, profile),
        _stain_section(evaluations, profile),
        _model_card_section(release),
        None if release is None else _release_section(release, profile),
    ]
    title = f"Leukemia MTL run report ({profile.name} profile)"
    atomic_write_text(Path(html_path), report.sectioned_page(title, [s for s in sections if s is not None]))
    atomic_write_json(Path(summary_path), summary)
    return summary


def run_report_task(
    *,
    data_summary,
    split,
    roi_metrics,
    roi_overlay,
    segment_metrics,
    segmentation,
    evaluations: dict,
    crossval,
    ttest,
    release_manifest,
    html,
    summary,
    profile: Profile,
    tuning=None,
) -> dict:
    """The report component's one call: every artifact the report reads in (`evaluations`: per training
    stage's key, its evaluation artifacts over the folds), the page and summary.json out."""

    def read(artifact) -> dict:
        return json.loads(Path(artifact.path).read_text())

    loaded = load_evaluations({stage.display: [a.path for a in evaluations[stage.key]] for stage in TRAINING_STAGES})
    result = build_report(
        profile=profile,
        data_summary=read(data_summary),
        split=read(split),
        roi_metrics=read(roi_metrics),
        roi_html=Path(roi_overlay.path).read_text(),
        segment_metrics=read(segment_metrics),
        segment_html=Path(segmentation.path).read_text(),
        evaluations=loaded,
        crossval=CrossvalResult.load(crossval.path),
        ttest=read(ttest),
        release=read(release_manifest),
        html_path=Path(html.path),
        summary_path=Path(summary.path),
        studies=[json.loads((Path(a.path) / STUDY_FILE).read_text()) for a in tuning or []],
    )
    summary.metadata.update({"schema": result["schema"], "imagenet": result["imagenet"]})
    return result
