"""Settings and constants the tests (and bench/predict_stream.py) share. Import them from here: conftest.py
holds the fixtures and hooks, which pytest finds by itself, and imports what it needs from here too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Small enough to keep the suite fast, large enough that every class and cell type appears.
TINY = {
    "synth.n_smears": 8,
    "synth.smear_width": 480,
    "synth.smear_height": 360,
    "synth.n_crops": 6,
    # a small U-Net that still learns: the pipeline tests check wiring, test_segment the science
    "segment.epochs": 6,
    "segment.patches_per_image": 40,
    "segment.base_filters": 8,
    # the fastest backbone to build, at its smallest input, one epoch: the DAG's wiring, not its science
    "model.backbones": ["MobileNetV2"],
    "model.input_size": 71,
    "augment.target_per_class": 8,
    "train.epochs": 1,
    "train.warmup_epochs": 0,
    "split.folds": 2,
    # one epoch learns too little to beat the baselines: release anyway, flagged, so predict has a model
    "evaluate.release_gate": "flag",
}
BACKBONE = TINY["model.backbones"][0]  # the demo's, with ImageNet weights from its package (offline)
# The same settings as command-line arguments, for tests that run `pipeline.py --run-local`
TINY_CLI_SETS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
PLANTED_ACCESS_KEY = "AKIAPLANTEDACCESS0001"
PLANTED_SECRET_KEY = "planted-secret-Zq8x7Vb3nM2kL9"


# Enough training to learn white cells on tiny smears in well under a minute on 2 cores.
SEGMENT_STAGE = {
    **TINY,
    "synth.n_smears": 12,
    "synth.n_crops": 4,
    "segment.epochs": 8,
    "segment.patches_per_image": 40,
    "segment.holdout_fraction": 0.25,
    "segment.base_filters": 16,
    # the generator's own pixel sizes (ALL-IDB1's field drawn at 480 px; crops at ALL-IDB2's scale): these tests
    # are about segmenting and learning, the estimate has its own (test_preprocess, BENCHMARKS.md)
    "data.pixel_size_um": round(0.09 * 2592 / 480, 4),
    "data.cells_pixel_size_um": 0.09,
}


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m leukemia_mtl ARGS` from the repository's root, as a user runs it: its exit status and text output."""
    return subprocess.run(
        [sys.executable, "-m", "leukemia_mtl", *args], cwd=REPO, capture_output=True, text=True, **kwargs
    )


def fold_predictions(
    task: str,
    arm: str,
    k: int,
    labels,
    probabilities,
    *,
    classes,
    sources=None,
    train_sources: int | None = None,
    backbone: str = "Xception",
    model_dir: str = "/m",
    **optional,
):
    """Fold k of repeat 0 (fold_id "r0f{k}") as evaluate.FoldPredictions, for tests that build predictions by hand.
    Unless given, its held-out images come from sources "s{k}{i}", one each, and it trained on twice as many sources;
    `optional` gives the inner validation split's val_labels and val_probabilities, where a test has one."""
    from leukemia_mtl.evaluate import FoldPredictions

    if sources is None:
        sources = np.array([f"s{k}{i}" for i in range(len(labels))])
    if train_sources is None:
        train_sources = 2 * len(labels)

    return FoldPredictions(
        task=task,
        arm=arm,
        backbone=backbone,
        fold_id=f"r0f{k}",
        repeat=0,
        fold=k,
        classes=classes,
        labels=labels,
        probabilities=probabilities,
        sources=sources,
        train_sources=train_sources,
        model_dir=model_dir,
        **optional,
    )


def classifier_info(**changes):
    """A bundles.ClassifierInfo for tests that save or forge a classifier: a stage-1 blast-vs-normal Xception at
    71 px with a sigmoid head and no ImageNet weights, but for the fields `changes` gives."""
    from leukemia_mtl.bundles import ClassifierInfo

    fields = {
        "backbone": "Xception",
        "input_size": 71,
        "classes": ["normal", "ALL"],
        "head": "sigmoid",
        "stage": "stage1",
        "task": "blast",
        "weights": "none",
        "imagenet": False,
    }
    return ClassifierInfo(**{**fields, **changes})


def finetune_stage(stage: str, task: str, data_dir, model_dir: Path, profile, previous_dir: Path | None = None):
    """train.stage.run_finetune_stage on the tests' backbone, writing its figure next to its model: MODEL_DIR.html."""
    from leukemia_mtl.train.stage import run_finetune_stage

    return run_finetune_stage(
        stage,
        task=task,
        backbone=BACKBONE,
        data_dir=data_dir,
        previous_dir=previous_dir,
        model_dir=model_dir,
        figure_html=model_dir.with_suffix(".html"),
        profile=profile,
    )


def run_demo(smears: str, cells: str, output_dir: Path, **options) -> dict:
    """pipeline.run_local on the demo profile at the TINY settings; `options` as run_local takes them (until, runner...)."""
    import pipeline

    return pipeline.run_local(
        profile="demo", smears=smears, cells=cells, output_dir=output_dir, overrides=dict(TINY), **options
    )


def answer_probabilities(prediction: dict) -> list[float]:
    """Every probability an answer holds: P(ALL) (a cell's P(blast)), the FAB type's, each cell's P(blast)."""
    fab = list((prediction["fab"] or {}).get("probabilities", {}).values())
    return [prediction["all_probability"], *fab, *(c["blast_probability"] for c in prediction["cells"])]


def assert_same_answer(answer: dict, expected: dict, tolerance: float = 1e-5) -> None:
    """The same answer to the printed precision (issue 35): the models called in other batches or compiled may move
    a probability in its sixth decimal, never what is printed or decided. `image`, `overlay`, `explanation` are
    where the answer came from, not what it says, and are left out."""
    import pytest

    from leukemia_mtl.predict import csv_row, format_prediction

    got, want = answer_probabilities(answer), answer_probabilities(expected)
    assert len(got) == len(want)
    assert got == pytest.approx(want, abs=tolerance)
    plain = lambda p: {**p, "image": "", "overlay": None, "explanation": None}  # noqa: E731
    assert format_prediction(plain(answer)) == format_prediction(plain(expected))
    assert csv_row("x", plain(answer), None, "v") == csv_row("x", plain(expected), None, "v")
    rounded = lambda p: {  # noqa: E731  every field but the probabilities, exactly
        k: v for k, v in plain(p).items() if k not in ("all_probability", "fab", "cells")
    }
    assert rounded(answer) == rounded(expected)
    assert [{**c, "blast_probability": None} for c in answer["cells"]] == [
        {**c, "blast_probability": None} for c in expected["cells"]
    ]
    assert (answer["fab"] or {}).get("type") == (expected["fab"] or {}).get("type")
    assert (answer["fab"] or {}).get("note") == (expected["fab"] or {}).get("note")
