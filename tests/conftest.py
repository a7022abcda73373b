"""Shared fixtures: tiny synthetic ALL-IDB data, a tiny profile, and a real S3 server on 127.0.0.1. The settings
and constants they use live in helpers.py, which the tests import them from."""

from __future__ import annotations

import logging
import shutil
import urllib.request
from pathlib import Path

import pytest

from helpers import PLANTED_ACCESS_KEY, PLANTED_SECRET_KEY, SEGMENT_STAGE, TINY
from leukemia_mtl.config import get_profile
from leukemia_mtl.data.synth import generate


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
    urllib.request.urlopen(
        urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST"), timeout=10
    ).close()
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
    summary = run_segment_stage(
        root / "ingest", root / "roi", root / "model", root / "cells", root / "segment.html", profile, progress=False
    )
    return root, profile, summary


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The whole DAG on tiny data, once per session: 2 folds x 1 backbone x 6 trainings."""
    import time

    import pipeline

    out = tmp_path_factory.mktemp("demo_run")
    started = time.time()
    outputs = pipeline.run_local(
        profile="demo", smears="synthetic", cells="synthetic", output_dir=out, overrides=dict(TINY)
    )
    return out, outputs, time.time() - started
