"""Settings and constants the tests (and bench/predict_stream.py) share. Import them from here: conftest.py
holds the fixtures and hooks, which pytest finds by itself, and imports what it needs from here too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
