"""Does stain normalisation help when one fold's smears come from another lab's stain? (issue 17)

    python bench/stain_shift.py [--methods none reinhard macenko] [--gains 1.4 0.8 1.2] [--output-dir runs/bench-stain]

Generates the demo's data (the demo profile's sizes and seed), computes the pipeline's split of it with
`make_folds` (ingested as the pipeline ingests it), and writes a copy in which the smears and single-cell
images of fold r0f0's evaluation groups only are in another stain (leukemia_mtl.stain.shift_stain: each
channel's optical density times --gains). The split depends on labels and groups alone, so the pipeline puts
the same groups in that fold; this is checked. Then runs the demo pipeline (--no-cache, pixel size given as
the generator's, so the nucleus-based scale estimate does not move with the stain) on the unshifted data
with no normalisation, and on the shifted data once per --methods. Prints the white cells segment found in
shifted and unshifted smears, and per fold the multistage arm's detection and FAB accuracy and balanced
accuracy, as a table.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leukemia_mtl.config import REFERENCE_PIXEL_SIZE_UM, REFERENCE_WIDTH, get_profile  # noqa: E402
from leukemia_mtl.data.datasets import load_datasets  # noqa: E402
from leukemia_mtl.data.images import read_image  # noqa: E402
from leukemia_mtl.data.ingest import DATA_DIR, ingest  # noqa: E402
from leukemia_mtl.data.synth import generate  # noqa: E402
from leukemia_mtl.io_utils import write_image  # noqa: E402
from leukemia_mtl.results import RunSummary  # noqa: E402
from leukemia_mtl.stain import shift_stain  # noqa: E402
from leukemia_mtl.train.data import make_folds  # noqa: E402

SHIFTED_FOLD = "r0f0"
ROLES = {"smears": "ALL_IDB1", "cells": "ALL_IDB2"}


def split_of(data: Path, profile) -> dict:
    """The split the pipeline's split step makes of `data` (ingested as its ingest step does)."""
    with tempfile.TemporaryDirectory() as scratch:
        ingest(str(data / ROLES["smears"]), str(data / ROLES["cells"]), Path(scratch), profile, progress=False)
        datasets = load_datasets(Path(scratch) / DATA_DIR, profile.data, check=False)
        split = make_folds(datasets, profile)
        for dataset in datasets:  # group -> the user's file, relative to the data folder
            split.setdefault("files", {}).update(
                {
                    f"{dataset.name}/{r.rel_path}": (f"{dataset.name}/{r.group}", ROLES[dataset.name])
                    for r in dataset.records
                }
            )
    return split


def make_data(out: Path, gains: tuple[float, float, float], profile) -> tuple[Path, Path, set[str]]:
    unshifted, shifted = out / "data" / "unshifted", out / "data" / "shifted"
    if not (unshifted / "synth.json").is_file():
        generate(unshifted, profile.synth, profile.seed, progress=False)
    split = split_of(unshifted, profile)
    fold = next(f for f in split["folds"] if f["id"] == SHIFTED_FOLD)
    eval_groups = set(fold["eval_groups"])
    shutil.rmtree(shifted, ignore_errors=True)
    shutil.copytree(unshifted, shifted)
    alias = split["group_alias"]
    for name, (group, folder) in split["files"].items():
        if alias.get(group, group) in eval_groups:
            path = shifted / folder / name.split("/", 1)[1]
            jpeg = (
                [cv2.IMWRITE_JPEG_QUALITY, profile.synth.jpeg_quality]
                if path.suffix.lower() in (".jpg", ".jpeg")
                else None
            )
            write_image(path, shift_stain(read_image(path, max_pixels=10**9).rgb, gains), jpeg)
    again = next(f for f in split_of(shifted, profile)["folds"] if f["id"] == SHIFTED_FOLD)
    if set(again["eval_groups"]) != eval_groups:
        sys.exit("the split of the shifted data differs from the unshifted data's: the comparison would not hold")
    return unshifted, shifted, eval_groups


def run_pipeline(data: Path, method: str, out: Path, profile) -> float:
    smear_um = REFERENCE_PIXEL_SIZE_UM * REFERENCE_WIDTH / profile.synth.smear_width  # the generator's own scales
    command = [
        sys.executable,
        "pipeline.py",
        "--run-local",
        "--no-cache",
        "--smears",
        str(data / ROLES["smears"]),
        "--cells",
        str(data / ROLES["cells"]),
        "--pixel-size",
        f"smears={smear_um:.4f},cells={REFERENCE_PIXEL_SIZE_UM}",
        "--output-dir",
        str(out),
        "--set",
        f"preprocess.stain={method}",
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return time.perf_counter() - started


def cells_found(out: Path, eval_groups: set[str]) -> str:
    """White cells segment isolated per smear, in the shifted fold's smears and the others."""
    manifest = next((out / "pipeline_root").glob("*/segment/cells/crops.csv"))
    rows = [r for r in csv.DictReader(manifest.open()) if r["dataset"] == "smears"]
    per_smear = Counter(r["group"] for r in rows)
    shifted = [per_smear.get(g, 0) for g in eval_groups if g.startswith("smears/")]
    others = sum(per_smear.values()) - sum(shifted)
    n_others = len({r["group"] for r in rows} - eval_groups) or 1
    return (
        f"cells found: {sum(shifted)} in the {len(shifted)} smears of {SHIFTED_FOLD} "
        f"({sum(shifted) / max(len(shifted), 1):.1f} per smear), {others} in the others ({others / n_others:.1f} per smear)"
    )


def fold_scores(out: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Per (task, fold): the multistage arm's scores, of the first backbone (the demo trains one)."""
    summary = RunSummary.load(out / "summary.json")
    scores = {}
    for task in summary.tasks:
        row = next(r for r in summary.rows(task) if r.arm == "mtl")
        for fold in row.folds:
            scores[(task, fold["fold_id"])] = {
                "accuracy": fold["accuracy"],
                "balanced_accuracy": fold["balanced_accuracy"],
            }
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", nargs="+", default=["none", "reinhard", "macenko"])
    parser.add_argument(
        "--gains",
        nargs=3,
        type=float,
        default=[1.4, 0.8, 1.2],
        help="optical-density gains (red, green, blue) of the other lab's stain",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench-stain"))
    parser.add_argument("--table-only", action="store_true", help="only print the table of the runs already there")
    args = parser.parse_args()
    out = args.output_dir if args.output_dir.is_absolute() else REPO / args.output_dir
    profile = get_profile("demo")
    if args.table_only:
        unshifted, shifted = out / "data" / "unshifted", out / "data" / "shifted"
        eval_groups = set(
            next(f for f in split_of(unshifted, profile)["folds"] if f["id"] == SHIFTED_FOLD)["eval_groups"]
        )
    else:
        unshifted, shifted, eval_groups = make_data(out, tuple(args.gains), profile)
    print(
        f"stain shift: optical density x {tuple(args.gains)} on the {len(eval_groups)} groups of {SHIFTED_FOLD}'s "
        f"evaluation part ({sorted(eval_groups)[:3]} ...)",
        flush=True,
    )
    runs = [("unshifted", "none", unshifted)] + [("shifted", method, shifted) for method in args.methods]
    results = {}
    for data_name, method, data in runs:
        run_dir = out / f"{data_name}-{method}"
        if args.table_only and not (run_dir / "summary.json").is_file():
            continue
        seconds = 0.0 if args.table_only else run_pipeline(data, method, run_dir, profile)
        results[(data_name, method)] = fold_scores(run_dir)
        print(
            f"{data_name} data, preprocess.stain={method}: {seconds:.0f} s; {cells_found(run_dir, eval_groups)}",
            flush=True,
        )
    folds = sorted({fold for scores in results.values() for _, fold in scores})
    print(
        f"\nmultistage arm (Xception), per evaluation fold: accuracy / balanced accuracy ({SHIFTED_FOLD}: its evaluation "
        "images shifted, trained on unshifted ones; the other fold: trained on those shifted images, scored on unshifted ones)"
    )
    header = f"{'data':<10} {'stain':<9}" + "".join(
        f" {task + ' ' + fold + (' (shifted)' if fold == SHIFTED_FOLD else ''):>24}"
        for task in ("detection", "fab")
        for fold in folds
    )
    print(header)
    for (data_name, method), scores in results.items():
        cells = "".join(
            f" {scores[(task, fold)]['accuracy']:.3f} / {scores[(task, fold)]['balanced_accuracy']:.3f}".rjust(25)
            for task in ("detection", "fab")
            for fold in folds
        )
        print(f"{data_name:<10} {method:<9}{cells}")


if __name__ == "__main__":
    main()
