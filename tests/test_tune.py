"""The hyperparameter search (leukemia_mtl.tune): nested in the folds, so no trial ever reads an evaluation-fold
image. The proof is an instrumented fold: every evaluation-group file (smear, single-cell image, crop, isolated
smear) replaced by bytes no decoder takes, so that reading one fails; the search on it must run and give the
same trials and scores, to the last digit, as on the intact fold."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import BACKBONE, TINY
from leukemia_mtl.config import ConfigError, get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.layout import DATA_DIR
from leukemia_mtl.segment.stage import read_crops_manifest
from leukemia_mtl.train.data import prepare_training_data
from leukemia_mtl.tune import FoldData, TuneError, prepare, profile_values, search

REPO = Path(__file__).resolve().parents[1]
# TINY with enough smears that each class keeps an inner validation group in a fold's training part; the
# objective is one cheap stage (the classical detection model), two trials of which the second is TPE's
TUNE = {**TINY, "synth.n_smears": 16, "tune.arms": ["ctl"], "tune.tasks": ["detection"], "tune.startup_trials": 1}
POISON = b"not an image: a trial that reads the evaluation fold fails here"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    ingested, cells, split = prepare("synthetic", "synthetic", out, "demo", TUNE)
    return out, ingested, cells, split


def _poisoned_copy(ingested: Path, cells: Path, split: dict, fold: int, target: Path) -> tuple[Path, Path, int]:
    """Copies of the ingested images and segment's crops with every evaluation-group file of `fold` poisoned."""
    shutil.copytree(ingested, target / "ingest")
    shutil.copytree(cells, target / "cells")
    eval_groups = set(split["folds"][fold]["eval_groups"])
    alias = split["group_alias"]
    poisoned = 0
    profile = get_profile("demo", TUNE)
    for dataset in load_datasets(target / "ingest" / DATA_DIR, profile.data, check=False):
        for record in dataset.records:
            group = f"{dataset.name}/{record.group}"
            if alias.get(group, group) in eval_groups:
                record.path.write_bytes(POISON)
                isolated = target / "cells" / "isolated" / dataset.name / f"{record.image_id}.png"
                for path in (isolated,) if isolated.is_file() else ():
                    path.write_bytes(POISON)
                    poisoned += 1
                poisoned += 1
    for row in read_crops_manifest(target / "cells"):
        if alias.get(row["group"], row["group"]) in eval_groups:
            (target / "cells" / row["crop"]).write_bytes(POISON)
            poisoned += 1
    return target / "ingest", target / "cells", poisoned


def _trials(summary: dict) -> list:
    return [(t["number"], t["state"], t["params"], t["value"], t["stages"]) for t in summary["trials"]]


@pytest.mark.slow
def test_no_trial_reads_an_evaluation_fold_image(prepared, tmp_path):
    _out, ingested, cells, split = prepared
    intact = search(FoldData(ingested, cells, split, 0), BACKBONE, "demo", TUNE, tmp_path / "intact", trials=2)

    poisoned_ingest, poisoned_cells, count = _poisoned_copy(ingested, cells, split, 0, tmp_path / "poisoned")
    assert count >= 8  # smears, their crops, single-cell images: the fold's evaluation part is unreadable
    with pytest.raises(Exception):  # noqa: B017 (any failure shows the read) the control: building the fold as training does reads them, and fails
        prepare_training_data(
            poisoned_ingest, poisoned_cells, split, 0, tmp_path / "control", get_profile("demo", TUNE)
        )

    poisoned = search(
        FoldData(poisoned_ingest, poisoned_cells, split, 0), BACKBONE, "demo", TUNE, tmp_path / "run", trials=2
    )
    assert _trials(poisoned) == _trials(intact)  # same trials, same scores: nothing of the evaluation part reached them
    assert [t["state"] for t in intact["trials"]] == ["complete", "complete"]
    assert intact["trials"][0]["params"] == profile_values(get_profile("demo", TUNE))  # trial 0: the profile's own
    assert intact["trials"][1]["params"] != intact["trials"][0]["params"]
    assert intact["nested"] and intact["best"]["value"] == max(t["value"] for t in intact["trials"])
    assert intact["best_overrides"] == {**TUNE, **intact["best"]["params"]}
    page = (tmp_path / "intact" / "tuning.html").read_text()
    assert "never read" in page and "<img" in page and "every trial" in page


@pytest.mark.slow
def test_a_fold_without_an_inner_split_is_refused_before_any_trial(prepared, tmp_path):
    _, ingested, cells, split = prepared
    with pytest.raises(TuneError, match="no inner validation split.*evaluation fold"):
        search(
            FoldData(ingested, cells, split, 0),
            BACKBONE,
            "demo",
            {**TUNE, "train.validation_fraction": 0.0},
            tmp_path,
            trials=1,
        )
    with pytest.raises(ConfigError, match="tune.arms"):
        get_profile("demo", {"tune.arms": ["both"]})
    with pytest.raises(ConfigError, match="tune.learning_rate"):
        get_profile("demo", {"tune.learning_rate": [0.1, 0.001]})


@pytest.mark.slow
def test_the_cli_runs_one_katib_trial_and_prints_its_objective(prepared):
    out, _, _, _ = prepared  # `tune` reuses the prepared images (same inputs and data settings)
    sets = [arg for key, value in TUNE.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    katib = ["--set", "train.learning_rate=0.001", "--set", "model.dropout=0.1"]  # as Katib's trial Job sets them
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "leukemia_mtl",
            "tune",
            "--smears",
            "synthetic",
            "--cells",
            "synthetic",
            "--output",
            str(out),
            "--trial",
            *sets,
            *katib,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reusing" in result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert 0.0 <= float(lines["objective"]) <= 1.0 and float(lines["classical_detection"]) == float(lines["objective"])
    trial = json.loads((out / f"fold0-{BACKBONE}" / "trial.json").read_text())
    assert trial["params"]["train.learning_rate"] == 0.001 and trial["params"]["model.dropout"] == 0.1
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "leukemia_mtl",
            "tune",
            "--smears",
            "synthetic",
            "--output",
            str(out),
            "--trial",
            "--trials",
            "3",
            *sets,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: --trial")


def test_the_tune_commands_arguments_are_checked_before_any_work(synthetic_copy, tmp_path, capsys):
    """A fold the split cannot have, an unknown backbone, no trials, or an output inside the data: one line each,
    before ingest and the ROI step run (nothing is written)."""
    from leukemia_mtl import cli

    smears = str(synthetic_copy / "ALL_IDB1")
    cases = {
        ("--fold", "99", "--output", str(tmp_path / "a")): "--fold 99: the profile's split has folds 0 to 1",
        ("--backbone", "ResNet", "--output", str(tmp_path / "b")): "--backbone ResNet: unknown; choose one of",
        ("--trials", "0", "--output", str(tmp_path / "c")): "--trials 0: a search needs at least 1 trial",
        ("--output", str(synthetic_copy / "ALL_IDB1" / "search")): "lies inside the input folder",
    }
    for arguments, words in cases.items():
        assert cli.main(["tune", "--smears", smears, *arguments]) == 1
        err = capsys.readouterr().err
        assert words in err and err.count("error:") == 1 and "Traceback" not in err, (arguments, err)
    assert (
        not any((tmp_path / name).exists() for name in "abc") and not (synthetic_copy / "ALL_IDB1" / "search").exists()
    )
