"""Whole runs: a run killed in the middle of a training task resumes from the cached finished
tasks; the same seed gives the same summary.json byte for byte on CPU; another seed other splits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import PLANTED_ACCESS_KEY, PLANTED_SECRET_KEY, TINY, TINY_CLI_SETS

REPO = Path(__file__).resolve().parents[1]


# Planted credentials in the runs' environment: they must never surface (the last test scans)
PLANTED_ENV = {
    "MINIO_ENDPOINT": "http://127.0.0.1:9",
    "MINIO_ACCESS_KEY": PLANTED_ACCESS_KEY,
    "MINIO_SECRET_KEY": PLANTED_SECRET_KEY,
}


def _run_local(out: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "pipeline.py", "--run-local", "--output-dir", str(out), *TINY_CLI_SETS],
        cwd=REPO,
        text=True,
        start_new_session=True,
        env={**os.environ, **PLANTED_ENV},
        **popen,
    )


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
    """A second run of the tests' DAG in its own folder, killed (SIGKILL, the whole process group)
    while a stage-2 training task runs, then started again with the same command."""
    out = tmp_path_factory.mktemp("killed")
    with open(out / "first.log", "w") as log:
        first = _run_local(out, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 900
        while not list((out / "pipeline_root").glob("*/for-loop-*/finetune-from-previous")):
            assert first.poll() is None, (out / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "no training task started in 15 minutes"
            time.sleep(0.5)
        time.sleep(3)  # inside the task: its process has started and is importing or training
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    (killed_run,) = (out / "pipeline_root").glob("leukemia-mtl-*")
    second = _run_local(out, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = second.communicate(timeout=900)
    assert second.returncode == 0, stderr[-3000:]
    return (
        out,
        killed_run,
        json.loads((out / "outputs.json").read_text()),
        stdout + stderr + (out / "first.log").read_text(),
    )


@pytest.mark.slow  # kills a DAG run mid-training and resumes it; reruns the demo
def test_a_run_killed_mid_training_resumes_from_the_cached_tasks(killed_then_resumed):
    out, killed_run, outputs, _ = killed_then_resumed
    (resumed_run,) = set((out / "pipeline_root").glob("leukemia-mtl-*")) - {killed_run}
    for name in ("dataset", "roi", "segmenter", "cells", "split"):  # finished before the kill: served from the cache
        assert outputs[name]["path"].startswith(str(killed_run) + "/"), name
    for name in ("crossval", "summary"):  # after the kill: run again
        assert outputs[name]["path"].startswith(str(resumed_run) + "/"), name
    trained_again = list(resumed_run.glob("for-loop-*/finetune-from-previous*"))
    assert trained_again, "the killed training task was not run again"
    killed_task = [d for d in killed_run.glob("for-loop-*/finetune-from-previous*") if not (d / "model").exists()]
    assert killed_task  # the task that died left no model, and nothing took its partial folder for a result


@pytest.mark.slow  # kills a DAG run mid-training and resumes it; reruns the demo
def test_the_same_seed_gives_the_same_summary_byte_for_byte(demo_run, killed_then_resumed):
    """demo_run ran the DAG in this process; the killed-and-resumed run computed every task again in
    other processes and another folder (nothing is shared between the two caches)."""
    first, _, _ = demo_run
    second, _, _, _ = killed_then_resumed
    assert (second / "summary.json").read_bytes() == (first / "summary.json").read_bytes()


def test_another_seed_gives_other_splits_and_the_same_seed_the_same(synthetic_root):
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.datasets import load_datasets
    from leukemia_mtl.train.data import make_folds

    def eval_groups(seed: int) -> list[list[str]]:
        profile = get_profile("demo", {**TINY, "seed": seed})
        split = make_folds(load_datasets(synthetic_root, profile.data, check=False), profile)
        return [sorted(f["eval_groups"]) for f in split["folds"]]

    assert eval_groups(0) == eval_groups(0)
    assert eval_groups(0) != eval_groups(1) != eval_groups(2)


@pytest.mark.slow  # kills a DAG run mid-training and resumes it; reruns the demo
def test_no_credential_reaches_logs_reports_or_artifacts(killed_then_resumed, tmp_path):
    """The runs above had planted MinIO credentials in their environment (PLANTED_ENV): neither
    value may appear in any log, report, summary, artifact or compiled pipeline."""
    out, _, _, logs = killed_then_resumed
    result = subprocess.run(
        [
            sys.executable,
            "pipeline.py",
            "--compile",
            "--output",
            str(tmp_path / "p.yaml"),
            "--minio-secret",
            "minio-creds",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **PLANTED_ENV},
    )
    assert result.returncode == 0, result.stderr
    texts = {"logs": logs + result.stdout + result.stderr, "compiled": (tmp_path / "p.yaml").read_text()}
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".html", ".csv", ".txt", ".log", ".yaml", ".md", ""):
            texts[str(path)] = path.read_text(errors="replace")
    assert len(texts) > 20
    for where, text in texts.items():
        assert PLANTED_SECRET_KEY not in text and PLANTED_ACCESS_KEY not in text, where
