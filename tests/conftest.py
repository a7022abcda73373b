"""Shared fixtures: tiny synthetic ALL-IDB data, a tiny profile, and a real S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request
from pathlib import Path

import pytest

from leukemia_mtl.config import get_profile
from leukemia_mtl.data.synth import generate

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
# The same settings as command-line arguments, for tests that run `pipeline.py --run-local`
BACKBONE = TINY["model.backbones"][0]  # the demo's, with ImageNet weights from its package (offline)
TINY_CLI_SETS = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
PLANTED_ACCESS_KEY = "AKIAPLANTEDACCESS0001"
PLANTED_SECRET_KEY = "planted-secret-Zq8x7Vb3nM2kL9"


@pytest.fixture(scope="session")
def tiny_profile():
    return get_profile("demo", TINY)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory, tiny_profile) -> Path:
    """Generated once per session; tests that modify data copy it first (see `synthetic_copy`)."""
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, tiny_profile.synth, seed=7, progress=False)
    return root


@pytest.fixture
def synthetic_copy(synthetic_root, tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(synthetic_root, target)
    return target


@pytest.fixture
def s3_server():
    """moto's S3 server speaking the real protocol on 127.0.0.1, on a free port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    server.endpoint = f"http://{host}:{port}"
    # moto keeps its buckets in process-wide memory: start every test from an empty server
    urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST"), timeout=10).close()
    server.stopped = False
    yield server
    if not server.stopped:
        server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """Environment naming the test server, with planted credentials that must never leak."""
    env = {
        "MINIO_ENDPOINT": s3_server.endpoint,
        "MINIO_ACCESS_KEY": PLANTED_ACCESS_KEY,
        "MINIO_SECRET_KEY": PLANTED_SECRET_KEY,
    }
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "MINIO_SECURE", "MINIO_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


# Enough training to learn white cells on tiny smears in well under a minute on 2 cores.
SEGMENT_STAGE = {
    **TINY,
    "synth.n_smears": 12, "synth.n_crops": 4,
    "segment.epochs": 8, "segment.patches_per_image": 40, "segment.holdout_fraction": 0.25,
    "segment.base_filters": 16,
    # the generator's own pixel sizes (ALL-IDB1's field drawn at 480 px; crops at ALL-IDB2's scale): these tests
    # are about segmenting and learning, the estimate has its own (test_preprocess, BENCHMARKS.md)
    "data.pixel_size_um": round(0.09 * 2592 / 480, 4), "data.cells_pixel_size_um": 0.09,
}


@pytest.fixture(scope="session")
def stage_run(tmp_path_factory):
    """ingest -> preprocess -> segment through the library, once per session."""
    from leukemia_mtl.data.ingest import ingest
    from leukemia_mtl.preprocess import run_preprocess_stage
    from leukemia_mtl.segment.stage import run_segment_stage

    root = tmp_path_factory.mktemp("segment_stage")
    profile = get_profile("demo", SEGMENT_STAGE)
    ingest("synthetic", "synthetic", root / "ingest", profile, progress=False)
    run_preprocess_stage(root / "ingest", root / "roi", root / "roi.html", profile)
    summary = run_segment_stage(root / "ingest", root / "roi", root / "model", root / "cells", root / "segment.html", profile, progress=False)
    return root, profile, summary


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The whole DAG on tiny data, once per session: 2 folds x 1 backbone x 6 trainings."""
    import time

    import pipeline

    out = tmp_path_factory.mktemp("demo_run")
    started = time.time()
    outputs = pipeline.run_local("demo", "synthetic", "synthetic", out, dict(TINY))
    return out, outputs, time.time() - started
