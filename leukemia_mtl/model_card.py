"""The model card a release carries (MODEL_CARD.md, and `model_card` in its manifest).

Whoever loads a release months later, away from the run that made it, needs on one page what it is
for, what it is not for, what it saw, how well it did where it was not tuned, at which threshold,
and what the run that made it could not do (after Mitchell et al. 2019, "Model Cards for Model
Reporting"). Every figure comes from the cross-validation the release was selected by: pooled
held-out folds, with intervals.
"""

from __future__ import annotations

from leukemia_mtl.config import Profile
from leukemia_mtl.evaluate import describe_threshold
from leukemia_mtl.formatting import interval, number
from leukemia_mtl.paper import EPOCHS as PAPER_EPOCHS
from leukemia_mtl.paper import FOLDS as PAPER_FOLDS
from leukemia_mtl.paper import INPUT_SIZE as PAPER_INPUT_SIZE
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.stages import SCORED_TASKS

RESEARCH_USE = (
    "Research use only. Not a medical device and not validated for diagnosis: every answer is a suggestion "
    "for a qualified haematologist, who makes the call from the smear itself."
)
INTENDED_USE = (
    "Screening aid for research laboratories: ranks peripheral blood-smear images (and single white-cell "
    "images) by how likely they show acute lymphoblastic leukaemia (ALL), and, for those called ALL, suggests "
    "the FAB type (L1, L2, L3), so that a haematologist looks at the likely positives first."
)
OUT_OF_SCOPE = [
    "diagnosis or treatment decisions without a haematologist's review of the smear;",
    "other leukaemias (AML, CLL, CML) or other diseases: the model knows only normal vs ALL (and L1-L3), and calls "
    "anything abnormal one of them;",
    "bone-marrow aspirates, other stains, magnifications or cameras than the training images' (check the pixel size "
    "and the stain setting below), and images without a white cell;",
    "FAB typing as a clinical classification: WHO classifies ALL by immunophenotype and genetics; FAB is morphology.",
]


def _interval(entry: dict | None) -> dict | None:
    if not entry or entry.get("value") is None:
        return None
    return {k: entry.get(k) for k in ("value", "low", "high") if k in entry}


def _performance(crossval: CrossvalResult, task: str, pick: dict, confidence: float) -> dict:
    result = crossval.arm(task, pick["backbone"], pick["arm"])
    point = result.operating_point
    out = {
        "backbone": pick["backbone"],
        "arm": pick["arm"],
        "fold_model": pick["fold_id"],
        "metric": pick["metric"],
        "cv_mean": pick["cv_mean"],
        "cv_std": pick["cv_std"],
        "folds": len(result.folds),
        "confidence": confidence,
        "degenerate": list(result.degenerate),
    }
    if point.get("kind") == "binary":
        out.update({k: _interval(point[k]) for k in ("sensitivity", "specificity", "ppv", "npv", "auc")})
        out.update(
            threshold=point["threshold"],
            target_sensitivity=point.get("target_sensitivity"),
            threshold_chosen_on=point.get("threshold_chosen_on"),
            counts=point["counts"],
        )
    else:
        out.update(
            accuracy=_interval(point["accuracy"]),
            balanced_accuracy=point["balanced_accuracy"],
            f1_macro=point["f1_macro"],
        )
    out["baselines"] = {baseline.arm: baseline.cv_mean(pick["metric"]) for baseline in crossval.baseline_arms(task)}
    return out


def _data(data_summary: dict | None) -> dict:
    if not data_summary:
        return {"source": "not recorded", "synthetic": None, "datasets": {}}
    synthetic = "synthetic" in (data_summary.get("smears"), data_summary.get("cells"))
    datasets = {
        name: {
            "layout": d.get("layout"),
            "class_counts": d.get("class_counts", {}),
            "origin": data_summary.get("origins", {}).get(name),
        }
        for name, d in data_summary.get("datasets", {}).items()
    }
    return {
        "source": data_summary.get("source"),
        "synthetic": synthetic,
        "images": data_summary.get("images"),
        "datasets": datasets,
    }


def describe_weights_source(source: dict) -> str:
    if not source.get("imagenet"):
        return "random initialisation (no ImageNet weights)"
    if source.get("source") == "package":
        return (
            f"ImageNet, from the package {source['package']} {source['version']} (file {source['file']}, sha256 "
            f"{source['sha256'][:16]}..., licence {source['licence']}): {source['origin']}"
        )
    return f"ImageNet, Keras' file {source.get('file')} ({source.get('source')})"


def limitations(profile: Profile, *, imagenet: bool, synthetic: bool | None, folds: int, gate: dict) -> list[str]:
    """What the run behind this release could not do, in words."""
    notes = []
    if not gate.get("passed", False):
        notes.append("It FAILED its release gate: " + "; ".join(gate.get("reasons", [])) + ".")
    if synthetic:
        notes.append(
            "Trained and scored on synthetic images from the built-in generator, not on real smears: the "
            "figures say the pipeline works, not how well it screens patients."
        )
    elif synthetic is None:
        notes.append("The training data's origin was not recorded.")
    if not imagenet:
        notes.append("No ImageNet weights: its backbones started from random initialisation, not the paper's transfer.")
    if folds < PAPER_FOLDS:
        notes.append(f"Scored by {folds}-fold cross-validation (the paper: {PAPER_FOLDS}): wide intervals.")
    if profile.train.epochs < PAPER_EPOCHS or profile.model.input_size < PAPER_INPUT_SIZE:
        notes.append(
            f"{profile.train.epochs} epoch{'s' if profile.train.epochs != 1 else ''} per stage at "
            f"{profile.model.input_size} px (the paper: "
            f"{PAPER_EPOCHS} at {PAPER_INPUT_SIZE} px)."
        )
    if profile.preprocess.stain == "none":
        notes.append(
            "No stain normalisation (preprocess.stain=none): smears stained unlike the training images may be "
            "misread; check a few against a haematologist's reading first."
        )
    notes.append(
        "Not tested on any external cohort: the only evidence is cross-validation on the training data's own "
        "source, where scanner, stain and patients are alike."
    )
    return notes


def build_model_card(
    *,
    version: str | None,
    profile: Profile,
    crossval: CrossvalResult,
    selection: dict,
    gate: dict,
    data_summary: dict | None,
    imagenet: bool,
    starting_weights: dict | None = None,
) -> dict:
    data = _data(data_summary)
    performance = {
        task: _performance(crossval, task, selection[task], profile.evaluate.confidence)
        for task in SCORED_TASKS
        if task in selection and task in crossval.task_names
    }
    detection = performance.get("detection", {})
    return {
        "version": version,
        "research_use": RESEARCH_USE,
        "intended_use": INTENDED_USE,
        "out_of_scope": OUT_OF_SCOPE,
        "data": data,
        "settings": {
            "profile": profile.name,
            "input_size": profile.model.input_size,
            "stain": profile.preprocess.stain,
            "pixel_size_um": profile.data.pixel_size_um or None,
            "stage3_images": profile.train.stage3_images,
        },
        "operating_point": {k: detection.get(k) for k in ("threshold", "target_sensitivity", "threshold_chosen_on")},
        "performance": performance,
        "gate": {"passed": gate.get("passed"), "reasons": gate.get("reasons", [])},
        "starting_weights": starting_weights or {},
        "limitations": limitations(
            profile, imagenet=imagenet, synthetic=data["synthetic"], folds=len(crossval.folds), gate=gate
        ),
    }


def _fmt(entry) -> str:
    """A card's figure: an interval entry as 'value [low, high]', a score to 3 decimals."""
    if entry is None or isinstance(entry, dict):
        return interval(entry)
    return number(entry) if isinstance(entry, float) else str(entry)


def card_markdown(card: dict) -> str:
    """The card as the MODEL_CARD.md a person reads."""
    lines = [
        f"# Model card: leukemia-mtl {card['version'] or '(refused: no model released)'}",
        "",
        f"**{card['research_use']}**",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "Not for:",
        "",
    ]
    lines += [f"- {item}" for item in card["out_of_scope"]]
    data = card["data"]
    lines += ["", "## Data it saw", "", f"Source: {data['source']}" + (" (SYNTHETIC)" if data["synthetic"] else ""), ""]
    for name, d in data["datasets"].items():
        counts = ", ".join(f"{c} {n}" for c, n in d["class_counts"].items())
        lines.append(f"- {name} ({d['layout']}, from {d['origin']}): {counts}")
    point = card["operating_point"]
    lines += [
        "",
        "## Cross-validated performance",
        "",
        f"Pooled held-out folds, {int(card['performance'].get('detection', {}).get('confidence', 0.95) * 100)} % intervals "
        "(Wilson; AUC: bootstrap).",
        "",
    ]
    if point.get("threshold") is not None:
        lines += [f"Operating point: {describe_threshold(point)}.", ""]
    detection = card["performance"].get("detection")
    if detection:
        lines += ["| detection | value [interval] |", "|---|---|"]
        lines += [f"| {k} | {_fmt(detection.get(k))} |" for k in ("sensitivity", "specificity", "ppv", "npv", "auc")]
        lines += [f"| {detection['metric']} (mean over {detection['folds']} folds) | {_fmt(detection['cv_mean'])} |"]
        lines += [
            f"| {arm} baseline's {detection['metric']} | {_fmt(v)} |" for arm, v in detection["baselines"].items()
        ]
        lines.append("")
    fab = card["performance"].get("fab")
    if fab:
        lines += [
            "| FAB type | value [interval] |",
            "|---|---|",
            f"| accuracy | {_fmt(fab.get('accuracy'))} |",
            f"| balanced accuracy | {_fmt(fab.get('balanced_accuracy'))} |",
            f"| macro F1 | {_fmt(fab.get('f1_macro'))} |",
        ]
        lines += [f"| {arm} baseline's {fab['metric']} | {_fmt(v)} |" for arm, v in fab["baselines"].items()]
        lines.append("")
    settings = card["settings"]
    lines += [
        "## Settings",
        "",
        f"Profile {settings['profile']}; input {settings['input_size']} px; stain normalisation "
        f"{settings['stain']}; stage 3 sees {settings['stage3_images']}; pixel size "
        + (
            f"{settings['pixel_size_um']} um"
            if settings["pixel_size_um"]
            else "estimated from the training images' nuclei"
        )
        + ".",
        "",
        "## Starting weights",
        "",
    ]
    for role, source in card.get("starting_weights", {}).items():
        lines.append(f"- {role} model: {describe_weights_source(source)}")
    lines += ["", "## What the run could not do", ""]
    lines += [f"- {note}" for note in card["limitations"]]
    return "\n".join(lines) + "\n"
