"""The ImageNet-features baseline (leukemia_mtl/baselines.py): frozen ImageNet features of the whole smear with
logistic regression, scored on the colour baseline's folds and units, near chance on permuted labels, left out
(and said so) without ImageNet weights; and what the run's summary prints of it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from leukemia_mtl.config import ConfigError, get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.ingest import ingest
from leukemia_mtl.data.synth import generate
from leukemia_mtl.train.data import make_folds

REPO = Path(__file__).resolve().parent.parent
# DenseNet121's ImageNet weights come from an installed package (offline); small images keep it fast
FEATURES = {
    "model.weights": "imagenet",
    "model.backbones": ["DenseNet121"],
    "model.input_size": 64,
    "evaluate.features_size": 64,
}
# more smears than the shared fixture's 8: a negative control needs enough held-out smears for chance to show
DATA = {"synth.n_smears": 48, "synth.smear_width": 240, "synth.smear_height": 180, "synth.n_crops": 0, "split.folds": 4}
SKIPPED = {"features": "model.weights='none': no ImageNet features"}


def _baselines(smears: Path, root: Path, profile) -> tuple[dict, dict]:
    from leukemia_mtl.baselines import run_baselines

    ingest(str(smears), "none", root / "ingest", profile, progress=False)
    split = make_folds(load_datasets(root / "ingest" / "data", profile.data, check=False), profile)
    return split, run_baselines(root / "ingest", split, root / "baselines", profile)


def _scored(root: Path) -> dict:
    from leukemia_mtl.baselines import evaluation_dirs
    from leukemia_mtl.evaluate import cross_validate, load_fold_predictions

    scored = cross_validate([load_fold_predictions(d) for d in evaluation_dirs(root / "baselines")])
    return {
        task: {arm: result for by_arm in by_backbone.values() for arm, result in by_arm.items()}
        for task, by_backbone in scored.items()
    }


@pytest.fixture(scope="module")
def features_runs(tmp_path_factory):
    """The baselines with ImageNet features on 48 generated smears, once with their labels and once with the
    images permuted among the files (each file keeps its label, so labels and pixels no longer belong together)."""
    profile = get_profile("demo", {**FEATURES, **DATA})
    root = tmp_path_factory.mktemp("features_baseline")
    generate(root / "synthetic", profile.synth, seed=11, progress=False)
    runs = {}
    for name in ("labelled", "permuted"):
        smears = root / name / "smears"
        shutil.copytree(root / "synthetic" / "ALL_IDB1", smears)
        if name == "permuted":
            paths = sorted(smears.glob("*.jpg"))
            pixels = [p.read_bytes() for p in paths]
            for path, source in zip(paths, np.random.default_rng(3).permutation(len(paths))):
                path.write_bytes(pixels[source])
        split, summary = _baselines(smears, root / name, profile)
        runs[name] = (root / name, split, summary)
    return profile, runs


def _npz(folder: Path) -> dict:
    with np.load(folder / "predictions.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_the_features_arm_is_scored_on_the_colour_baselines_folds_and_units(features_runs):
    _profile, runs = features_runs
    root, split, summary = runs["labelled"]
    assert summary["arms"] == ["colour", "majority", "features"] and summary["skipped"] == {}
    assert summary["features_backbone"] == "DenseNet121 ImageNet features (64 px) + logistic regression"
    assert summary["features_size"] == 64 and summary["folds"] == ["r0f0", "r0f1", "r0f2", "r0f3"]
    assert len(summary["evaluations"]) == 2 * 3 * 4  # tasks x arms x folds
    for task in ("detection", "fab"):
        for fold in split["folds"]:
            colour = root / "baselines" / f"{task}_colour_{fold['id']}"
            features = root / "baselines" / f"{task}_features_{fold['id']}"
            info = json.loads((features / "classifier.json").read_text())
            assert info["backbone"] == summary["features_backbone"] and info["arm"] == "features"
            assert info["features"].startswith("DenseNet121 ImageNet features, global average pooling (1024 values)")
            assert info["classes"] == json.loads((colour / "classifier.json").read_text())["classes"]
            assert json.loads((features / "summary.json").read_text()) == json.loads(
                (colour / "summary.json").read_text()
            )
            ours, theirs = _npz(features), _npz(colour)
            for key in ("labels", "sources", "groups"):  # the same smears, in the same order, with the same truth
                assert ours[key].tolist() == theirs[key].tolist(), key
            assert ours["probabilities"].shape == theirs["probabilities"].shape
            np.testing.assert_allclose(ours["probabilities"].sum(axis=1), 1.0)
    scored = _scored(root)
    assert scored["detection"]["features"]["summary"]["auc_macro"]["mean"] > 0.9  # with its labels, it learns
    assert [f["fold_id"] for f in scored["fab"]["features"]["folds"]] == [
        f["fold_id"] for f in scored["fab"]["colour"]["folds"]
    ]


@pytest.mark.slow
def test_on_permuted_labels_the_features_arm_is_near_chance(features_runs):
    """The negative control: the same smears, the same code, labels that say nothing about the pixels."""
    _, runs = features_runs
    scored = _scored(runs["permuted"][0])
    detection, fab = scored["detection"]["features"], scored["fab"]["features"]
    assert abs(detection["summary"]["balanced_accuracy"]["mean"] - 0.5) < 0.15
    assert abs(detection["operating_point"]["auc"]["value"] - 0.5) < 0.2  # pooled over the 48 held-out smears
    assert abs(fab["summary"]["balanced_accuracy"]["mean"] - 0.25) < 0.15  # four classes
    labelled = _scored(runs["labelled"][0])["detection"]["features"]
    assert labelled["operating_point"]["auc"]["value"] - detection["operating_point"]["auc"]["value"] > 0.3


def test_without_imagenet_weights_the_features_arm_is_left_out_and_says_why(synthetic_copy, tmp_path):
    """model.weights='none': two baselines as before, the third named with its reason; nothing breaks."""
    from leukemia_mtl.baselines import evaluation_dirs

    profile = get_profile("demo", {"split.folds": 2, "model.weights": "none"})
    _, summary = _baselines(synthetic_copy / "ALL_IDB1", tmp_path, profile)
    assert summary["arms"] == ["colour", "majority"] and summary["skipped"] == SKIPPED
    assert summary["features_backbone"] is None and summary["features_size"] is None
    assert len(evaluation_dirs(tmp_path / "baselines")) == 2 * 2 * 2
    assert set(_scored(tmp_path)["detection"]) == {"colour", "majority"}
    assert json.loads((tmp_path / "baselines" / "summary.json").read_text())["skipped"] == SKIPPED


def test_tensorflow_is_imported_only_when_the_features_arm_runs():
    code = (
        "import sys; from leukemia_mtl.baselines import features_extractor; from leukemia_mtl.config import get_profile; "
        "model, backbone, why = features_extractor(get_profile('demo', {'model.weights': 'none'})); "
        "assert model is None and backbone == '' and why == " + repr(SKIPPED["features"]) + ", why; "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), 'TensorFlow imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_a_features_size_the_backbone_cannot_take_is_one_clear_error():
    from leukemia_mtl.baselines import BaselineError, features_extractor

    # Xception needs 71 px; Keras' own ImageNet file is not needed to find that out
    profile = get_profile(
        "demo", {"model.weights": "imagenet", "model.backbones": ["Xception"], "evaluate.features_size": 64}
    )
    with pytest.raises(
        BaselineError,
        match=r"'evaluate.features_size' is 64 px; Xception, the first of model.backbones, "
        r"needs at least 71",
    ):
        features_extractor(profile)
    with pytest.raises(ConfigError, match="'evaluate.features_size' must be at least 32, got 16"):
        get_profile("demo", {"evaluate.features_size": 16})
    assert get_profile("demo").evaluate.features_size == 224


def _snapshot(tmp_path: Path) -> Path:
    snapshot = tmp_path / "demo-run"
    shutil.copytree(REPO / "docs" / "demo-run", snapshot)
    return snapshot


def test_the_printed_summary_shows_the_features_baseline_and_a_degenerate_operating_point(tmp_path):
    """A degenerate released operating point written over the committed demo snapshot (which has the features arm
    and no degenerate point): the table, the t-test lines and the headline show both."""
    from runners.readme import demo_lines

    committed = demo_lines(REPO / "docs" / "demo-run")
    assert any(line.startswith("    features baseline: sensitivity") for line in committed)
    assert not any("DEGENERATE" in line for line in committed)

    snapshot = _snapshot(tmp_path)
    summary = json.loads((snapshot / "summary.json").read_text())
    flag = "P(ALL) >= 0.0000 calls every smear ALL (all 12 smears it was chosen on score P(ALL) >= 0.0000)"
    for task in ("detection", "fab"):
        summary["baselines"][task]["features"] = summary["baselines"][task]["colour"]
        summary["headline"][task]["features"] = summary["headline"][task]["colour"]
    summary["headline"]["detection"]["released"]["operating_point"] = {
        **summary["headline"]["detection"]["released"]["operating_point"],
        "threshold": 0.0,
        "degenerate": flag,
    }
    summary["ttest"].append({**summary["ttest"][1], "first": "features"})
    (snapshot / "summary.json").write_text(json.dumps(summary))
    lines = demo_lines(snapshot)
    assert sum(line.split()[:3] == ["detection", "baseline", "features"] for line in lines) == 1  # the table
    assert sum(line.split()[:3] == ["fab", "baseline", "features"] for line in lines) == 1
    assert any(line.startswith("  mtl - features balanced_accuracy, detection") for line in lines)
    headline = lines.index(next(line for line in lines if line.startswith("  headline, detection")))
    assert lines[headline].startswith("  headline, detection (pooled held-out smears, at P(ALL) >= 0.0000")
    assert lines[headline + 2] == f"    DEGENERATE OPERATING POINT: {flag}"
    assert [line.split(":")[0] for line in lines[headline + 3 : headline + 6]] == [
        "    colour baseline",
        "    majority baseline",
        "    features baseline",
    ]
    fab = lines.index(next(line for line in lines if line.startswith("  headline, fab")))
    assert lines[fab + 4].startswith("    features baseline: accuracy") and "DEGENERATE" not in "".join(
        lines[fab : fab + 5]
    )
