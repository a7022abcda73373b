import re

import pytest

from leukemia_mtl.config import PROFILES, ConfigError, get_profile


def test_profiles_exist_and_demo_is_small_paper_is_allidb_sized():
    assert {"demo", "paper"} <= set(PROFILES)
    paper = get_profile("paper").synth
    assert (paper.smear_width, paper.smear_height) == (2592, 1944)
    assert get_profile("demo").synth.smear_width < paper.smear_width


def test_overrides_apply_by_dotted_key_without_touching_the_registry():
    tweaked = get_profile("demo", {"synth.n_smears": 5, "preprocess.threshold": 90, "preprocess.roi_margin": 10})
    assert tweaked.synth.n_smears == 5
    assert tweaked.preprocess.threshold == 90
    assert tweaked.preprocess.roi_margin == 10.0
    assert get_profile("demo").synth.n_smears != 5 or PROFILES["demo"].synth.n_smears == 5


def test_paper_offsets_and_threshold_are_the_defaults():
    prep = get_profile("demo").preprocess
    assert (prep.offset_red, prep.offset_green, prep.offset_blue, prep.threshold) == (88, 41, 20, 98)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"synth.nope": 1}, "unknown setting 'synth.nope'"),
        ({"synth.n_smears": "many"}, "must be int"),
        ({"synth": 3}, "is a section"),
        ({"seed.x": 1}, "is a value, not a section"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_profile("demo", overrides)


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known profiles: demo, paper"):
        get_profile("fast")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"evaluate.release_gate": "nope"}, "'evaluate.release_gate' must be one of refuse, flag"),
        ({"train.stage3_images": "tiles"}, "'train.stage3_images' must be one of cells, isolated, original"),
        ({"train.validation_fraction": -0.1}, "'train.validation_fraction' must be between 0.0 and 0.5"),
        (
            {"evaluate.release_metric": "precision_macro"},
            "'evaluate.release_metric' must be one of accuracy, balanced_accuracy",
        ),
        ({"evaluate.expectations": ["detecton.accuracy>=0.9"]}, "must read TASK.METRIC>=NUMBER"),
        ({"evaluate.expectations": ["fab.f1_macro>0.7"]}, "must read TASK.METRIC>=NUMBER"),
        ({"evaluate.colour_bins": 0}, "'evaluate.colour_bins' must be at least 2"),
    ],
)
def test_settings_that_fit_their_type_but_not_their_meaning_are_refused_up_front(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_profile("demo", overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"model.backbones": ["ResNet"]},
            "'model.backbones': unknown backbone 'ResNet'; choose from InceptionV3, Xception",
        ),
        ({"model.backbones": []}, "'model.backbones' names no backbone"),
        ({"model.backbones": ["Xception", "Xception"]}, "names a backbone twice"),
        ({"model.input_size": 10}, "'model.input_size' is 10 px; MobileNetV2 needs at least 32"),
        ({"model.backbones": ["InceptionV3"], "model.input_size": 71}, "InceptionV3 needs at least 75"),
        ({"split.folds": 1}, "'split.folds' must be at least 2, got 1"),
        ({"storage.attempts": 0}, "'storage.attempts' must be at least 1, got 0"),
        ({"train.learning_rate": 0.0}, "'train.learning_rate' must be above 0"),
        ({"train.frozen_fraction": 1.0}, "'train.frozen_fraction' must be between 0.0 and 0.99"),
        ({"data.negative_class": " "}, "'data.negative_class' is empty"),
    ],
)
def test_impossible_settings_are_refused_before_any_task(overrides, message, tmp_path, capsys):
    import json
    import time

    import pipeline

    with pytest.raises(ConfigError, match=re.escape(message)):
        get_profile("demo", overrides)
    started = time.perf_counter()  # from the CLI: one line, before any task (no pipeline_root, no ingest)
    sets = [f"--set={key}={json.dumps(value)}" for key, value in overrides.items()]
    assert pipeline.main(["--run-local", "--output-dir", str(tmp_path / "run"), *sets]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "run" / "pipeline_root").exists()
    assert time.perf_counter() - started < 5


def test_pixel_sizes_from_the_command_line():
    from leukemia_mtl.config import ConfigError, pixel_size_overrides

    assert pixel_size_overrides("0.09") == {"data.pixel_size_um": 0.09}
    assert pixel_size_overrides("smears=0.36, cells=0.09") == {
        "data.pixel_size_um": 0.36,
        "data.cells_pixel_size_um": 0.09,
    }
    for bad, message in (
        ("0", "not a pixel size"),
        ("wide", "not a pixel size"),
        ("crops=0.1", "smears=SIZE,cells=SIZE"),
    ):
        with pytest.raises(ConfigError, match=message):
            pixel_size_overrides(bad)
    assert get_profile("paper").data.pixel_size_um == 0.09  # ALL-IDB's, given
    assert get_profile("demo").data.pixel_size_um == 0.0  # estimated from the images
    assert get_profile("workstation").preprocess.threshold_method == "nuclear"


@pytest.mark.parametrize("parse, value", [("negative", "smears=a,smears=b"), ("pixel", "cells=0.1,cells=0.2")])
def test_a_per_input_option_that_names_one_input_twice_is_refused(parse, value):
    from leukemia_mtl.config import negative_class_overrides, pixel_size_overrides

    with pytest.raises(ConfigError, match="is given twice; give each input once"):
        (negative_class_overrides if parse == "negative" else pixel_size_overrides)(value)


def test_every_setting_has_a_one_line_doc():
    import dataclasses

    from leukemia_mtl.config import Profile

    def leaves(obj, prefix=""):
        for f in dataclasses.fields(obj):
            if dataclasses.is_dataclass(getattr(obj, f.name)):
                yield from leaves(getattr(obj, f.name), f"{prefix}{f.name}.")
            else:
                yield prefix + f.name, f

    missing = [key for key, f in leaves(Profile(name="x")) if not f.metadata.get("doc") or "\n" in f.metadata["doc"]]
    assert not missing, f"settings without a one-line doc (setting(..., doc=...)): {missing}"


def test_the_paper_profile_trains_as_the_paper_says():
    from leukemia_mtl import paper

    profile = get_profile("paper")
    assert (profile.split.folds, profile.train.epochs, profile.model.input_size) == (
        paper.FOLDS,
        paper.EPOCHS,
        paper.INPUT_SIZE,
    )


def test_the_configuration_reference_is_up_to_date():
    from pathlib import Path

    from leukemia_mtl.config import REFERENCE_COMMAND, reference_markdown

    reference = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert reference.exists() and reference.read_text(encoding="utf-8") == reference_markdown(), (
        f"docs/configuration.md is out of date with leukemia_mtl/config.py; regenerate it with `{REFERENCE_COMMAND}`"
    )
