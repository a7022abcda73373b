"""What a person reads after a local run: where things are, and the headline numbers."""

from __future__ import annotations

import json
from pathlib import Path

from leukemia_mtl.evaluate import describe_threshold
from leukemia_mtl.formatting import interval, mean_std, number
from leukemia_mtl.results import RunSummary
from leukemia_mtl.stages import BASELINE_ARMS, MAJORITY

STABLE_COPIES = {"report": "report.html", "summary": "summary.json"}  # in --output-dir after a whole run


def describe_run(outputs: dict, output_dir: Path | None = None) -> list[str]:
    """What a person wants to read after a local run: where things are and the headline numbers."""
    lines = []
    summary_of = json.loads((Path(outputs["dataset"]["path"]) / "dataset.json").read_text())
    for dataset, info in summary_of["datasets"].items():
        lines.append(f"  {dataset}: " + " ".join(f"{c}={n}" for c, n in info["class_counts"].items()))
    roi = json.loads((Path(outputs["roi"]["path"]) / "summary.json").read_text())
    lines += [f"  WARNING: {warning}" for warning in roi.get("warnings", [])]
    if roi.get("mean_iou") is not None:
        lines.append(f"  ROI vs ground-truth WBC masks: IoU {roi['mean_iou']:.3f}, recall {roi['mean_recall']:.3f}")
    if "cells" in outputs:
        seg = json.loads((Path(outputs["cells"]["path"]) / "summary.json").read_text())
        if seg.get("unet_dice") is not None:
            lines.append(
                f"  held-out smears: U-Net Dice {seg['unet_dice']:.3f} vs threshold ROI Dice {seg['roi_dice']:.3f} "
                f"(against ground truth); {seg['crops']} isolated cell crops"
            )
        elif seg.get("unet_vs_roi_dice") is not None:
            lines.append(
                f"  held-out smears (no ground truth): U-Net against the ROI masks it learnt from, Dice "
                f"{seg['unet_vs_roi_dice']:.3f}; {seg['crops']} isolated cell crops"
            )
        if seg.get("isolation"):
            lines.append(f"  cells isolated with the {seg['isolation']} mask: {seg.get('isolation_reason', '')}")
        lines += [
            f"  WARNING: {name}: no white cell found in {count} images"
            for name, count in seg.get("without_cells", {}).items()
            if count
        ]
    if "summary" not in outputs:
        lines += [f"  {name:14s} {outputs[name]['path']}" for name in outputs]
        return lines
    summary = RunSummary.load(outputs["summary"]["path"])
    lines.append(
        f"  {len(summary.folds)}-fold cross-validation (mean ± SD over the evaluation folds, which only score):"
    )
    lines.append(
        f"    {'task':10s} {'model':18s} {'arm':8s} {'accuracy':>16s} {'balanced acc.':>16s} {'macro F1':>16s} {'AUC':>16s}"
    )
    for row in summary.rows():  # per task: multistage first, then classical, then the baselines
        cells_text = [
            mean_std(row.mean[m], row.std[m]) for m in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")
        ]
        lines.append(f"    {row.task:10s} {row.model:18s} {row.arm:8s} " + " ".join(f"{c:>16s}" for c in cells_text))
        for flag in row.degenerate:
            lines.append(f"      DEGENERATE: {flag}")
    for comparison in summary.ttest:
        if comparison["tests"]:
            test = comparison["tests"][0]
            p_value = f"p = {test['p_value']:.3g}" if test["p_value"] is not None else f"p undefined: {test['note']}"
            lines.append(
                f"  {comparison['second']} - {comparison['first']} {comparison['metric']}, {comparison['task']} "
                f"{comparison['backbone']}: {test['mean_difference']:+.3f} (corrected resampled t-test, {p_value})"
            )
    for task, entry in summary.headline.items():
        point = entry["released"]["operating_point"]
        if point["kind"] == "binary":

            def text(e):
                p = e["operating_point"]
                return ", ".join(f"{k} {interval(p[k])}" for k in ("sensitivity", "specificity", "ppv", "npv", "auc"))
        else:

            def text(e):
                p = e["operating_point"]
                return f"accuracy {interval(p['accuracy'])}, balanced accuracy {p['balanced_accuracy']:.3f}, macro F1 {p['f1_macro']:.3f}"

        at = f", at {describe_threshold(point)}" if point["kind"] == "binary" and "target_sensitivity" in point else ""
        lines.append(f"  headline, {task} (pooled held-out smears{at}):")
        lines.append(
            f"    released {entry['released']['backbone']} {entry['released']['arm']}: {text(entry['released'])}"
        )
        if point.get("degenerate"):  # a threshold that calls every smear ALL: its sensitivity means nothing
            lines.append(f"    DEGENERATE OPERATING POINT: {point['degenerate']}")
        for arm in BASELINE_ARMS:  # summaries from before the features baseline have colour and majority only
            if arm in entry:  # the majority class calls every smear one thing by design: no flag to print
                flagged = arm != MAJORITY and entry[arm]["operating_point"].get("degenerate")
                lines.append(
                    f"    {arm} baseline: {text(entry[arm])}" + (" (DEGENERATE operating point)" if flagged else "")
                )
    for check in summary.expectations:
        value = number(check["value"])
        lines.append(
            f"  learning check {check['check']} ({check['backbone']} multistage, cross-validated mean {value}): "
            + ("met" if check["met"] else "NOT MET")
        )
    release = summary.release
    if release and release["refused"]:
        lines.append("  RELEASE REFUSED: " + "; ".join(release["gate"]["reasons"]))
    elif release:
        lines.append(
            f"  released model {release['version']}: {outputs['release']['path']}"
            + (f" (published to {release['published_to']})" if release["published_to"] else "")
        )
        if release["gate"] and not release["gate"]["passed"]:
            lines.append("  RELEASE FLAGGED, it fails the gate: " + "; ".join(release["gate"]["reasons"]))
    for note in summary.limitations:
        lines.append(f"  note: {note}")
    for name, copy in STABLE_COPIES.items():  # run_local's copies, else the artifacts themselves
        lines.append(f"  {name}: {output_dir.resolve() / copy if output_dir else outputs[name]['path']}")
    return lines
