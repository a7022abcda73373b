"""Stain normalisation (issue 17): shifted stains come out closer to the target, the backdrop stays
black, the target is learnt from a fold's training images only, and bad settings or stored targets
are refused with one clear error."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from leukemia_mtl.config import PROFILES, ConfigError, get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.synth import _rng, render_smear
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.stain import (
    STAIN_METHODS,
    StainError,
    StainTarget,
    fit_target,
    lab_statistics,
    normalise,
    normalise_batch,
    shift_stain,
    target_from_dict,
)
from leukemia_mtl.train.data import StageArrays, make_folds, prepare_training_data, square

# another lab's stain in optical density: a stronger red-absorbing (blue-purple) dye, less green, more blue
SHIFT = (1.3, 0.85, 1.15)


def _isolated_cells(n_smears: int, seed: int) -> list[np.ndarray]:
    """White cells of generated smears, isolated on black and squared to 71 px, as stage 2-3 and predict see them."""
    cells = []
    for index in range(n_smears):
        rgb, mask, _ = render_smear(_rng(seed, 1, index), ("normal", "L1", "L2", "L3")[index % 4], 480, 360)
        count, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8))
        for k in range(1, count):
            x, y, w, h, area = stats[k]
            if area > 200:
                inside = labels[y : y + h, x : x + w] == k
                cells.append(square(np.where(inside[..., None], rgb[y : y + h, x : x + w], 0).astype(np.uint8), 71))
    return cells


@pytest.fixture(scope="module")
def cells():
    """Training cells (the target's) and other smears' cells, unshifted and shifted."""
    train, other = _isolated_cells(4, seed=3), np.stack(_isolated_cells(4, seed=4))
    return train, other, np.stack([shift_stain(image, SHIFT) for image in other])


def _distance(fitted: StainTarget, target: StainTarget) -> float:
    """How far the stain measured on some images is from `target`, in the target's own terms."""
    if target.method == "reinhard":  # CIELAB units
        return float(
            np.abs(np.subtract(fitted.lab_mean, target.lab_mean)).sum()
            + np.abs(np.subtract(fitted.lab_std, target.lab_std)).sum()
        )
    return float(
        np.abs(np.subtract(fitted.stain_matrix, target.stain_matrix)).sum()
        + np.abs(np.log(np.divide(fitted.max_concentrations, target.max_concentrations))).sum()
    )


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_stain_shifted_cells_come_out_closer_to_the_target(cells, method):
    train, other, shifted = cells
    target = fit_target(train, method, seed=0)
    normalised, unchanged = normalise_batch(shifted, target)
    assert unchanged == 0
    before, after = _distance(fit_target(shifted, method), target), _distance(fit_target(normalised, method), target)
    assert after < 0.5 * before, (before, after)

    # and the same cells in two stains come out nearer each other than they went in
    def gap(a, b):
        return float(np.abs(a.astype(int) - b.astype(int)).mean())

    assert gap(normalised, normalise_batch(other, target)[0]) < 0.6 * gap(shifted, other)


def test_reinhard_moves_lab_statistics_onto_the_target(cells):
    train, _, shifted = cells
    target = fit_target(train, "reinhard")
    mean, std = lab_statistics(normalise_batch(shifted, target)[0])
    shifted_mean, _ = lab_statistics(shifted)
    assert np.abs(mean - target.lab_mean).max() < 0.5 * np.abs(shifted_mean - target.lab_mean).max()
    assert np.abs(std - target.lab_std).max() < 3.0  # CIELAB units


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_the_black_backdrop_stays_black_and_cells_stay_cells(cells, method):
    train, _, shifted = cells
    normalised, _ = normalise_batch(shifted, fit_target(train, method))
    backdrop = ~shifted.any(axis=-1)
    assert backdrop.any() and (normalised[backdrop] == 0).all()
    assert normalised[~backdrop].any(axis=-1).all()  # and no cell pixel turns into backdrop
    assert normalised.dtype == np.uint8 and normalised.shape == shifted.shape


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_an_image_with_too_little_stain_is_returned_unchanged_and_counted(cells, method):
    train, _, shifted = cells
    target = fit_target(train, method)
    black = np.zeros_like(shifted[0])
    speck = black.copy()
    speck[30:33, 30:33] = (60, 20, 90)  # nine stained pixels: nothing to measure a stain on
    batch, unchanged = normalise_batch(np.stack([shifted[0], black, speck]), target)
    assert unchanged == 2
    assert (batch[1] == black).all() and (batch[2] == speck).all() and not (batch[0] == shifted[0]).all()
    assert (normalise(speck, target) == speck).all()


def test_fitting_is_seeded_and_uses_foreground_pixels_only(cells):
    train, _, _ = cells
    assert fit_target(train, "macenko", seed=1) == fit_target(train, "macenko", seed=1)
    padded = [cv2.copyMakeBorder(image, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=(0, 0, 0)) for image in train]
    assert fit_target(padded, "reinhard").lab_mean == pytest.approx(fit_target(train, "reinhard").lab_mean)


def test_none_is_every_profiles_default_and_changes_nothing(cells):
    train, _, shifted = cells
    assert STAIN_METHODS[0] == "none"
    assert all(profile.preprocess.stain == "none" for profile in PROFILES.values())
    assert fit_target(train, "none") is None
    image = shifted[0]
    assert normalise(image, None) is image
    batch, unchanged = normalise_batch(shifted, None)
    assert batch is shifted and unchanged == 0


def test_an_unknown_stain_setting_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"'preprocess.stain' must be one of none, reinhard, macenko, got 'vahadane'"):
        get_profile("demo", {"preprocess.stain": "vahadane"})
    assert get_profile("demo", {"preprocess.stain": "macenko"}).preprocess.stain == "macenko"
    with pytest.raises(StainError, match="must be one of none, reinhard, macenko"):
        fit_target([], "Reinhard")


def test_too_little_stain_to_fit_a_target_names_where():
    with pytest.raises(StainError, match=r"stage2, fold r0f1: 1 image\(s\) hold 0 stained pixels"):
        fit_target([np.zeros((71, 71, 3), np.uint8)], "macenko", where="stage2, fold r0f1")


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_a_target_round_trips_through_json(cells, method):
    target = fit_target(cells[0], method)
    stored = json.loads(json.dumps(target.to_dict()))
    assert StainTarget.from_dict(stored) == target
    assert target_from_dict(stored, "classifier.json") == target and target_from_dict(None) is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: "not a dict", "must be a JSON object"),
        (lambda d: {**d, "method": "vahadane"}, "method must be one of reinhard, macenko"),
        (lambda d: {k: v for k, v in d.items() if k != "lab_std"}, "missing lab_std"),
        (lambda d: {**d, "extra": 1}, "unknown extra"),
        (lambda d: {**d, "lab_mean": [1.0, 2.0]}, "'lab_mean' must be 3 finite numbers"),
        (lambda d: {**d, "lab_std": [1.0, float("nan"), 1.0]}, "'lab_std' must be 3 finite numbers"),
        (lambda d: {**d, "lab_std": [1.0, 0.0, 1.0]}, "'lab_std' must be above 0"),
        (lambda d: {**d, "lab_mean": ["1", "2", "3"]}, "'lab_mean' must be 3 finite numbers"),
        (lambda d: {**d, "images": "12"}, "'images' must be a whole number above 0"),
    ],
)
def test_a_malformed_target_is_refused_naming_the_file_and_field(cells, change, message):
    stored = fit_target(cells[0], "reinhard").to_dict()
    with pytest.raises(StainError, match=message) as caught:
        target_from_dict(change(stored), "release/model/detection/classifier.json")
    assert str(caught.value).startswith("release/model/detection/classifier.json: ")
    assert isinstance(caught.value, LeukemiaMtlError)


def test_a_malformed_macenko_matrix_is_refused(cells):
    stored = fit_target(cells[0], "macenko").to_dict()
    with pytest.raises(StainError, match=r"'stain_matrix' must be 3 x 2 finite numbers"):
        StainTarget.from_dict({**stored, "stain_matrix": stored["stain_matrix"][:2]}, "classifier.json")


# --- the target is a learned parameter: fitted on a fold's training images only ---------------------------------


def _shift_files(ingest, cells_dir, split, groups: set[str]) -> int:
    """Rewrite every image of `groups` (raw single-cell images, segment's crops) in another stain."""
    from leukemia_mtl.data.images import read_image
    from leukemia_mtl.io_utils import write_image
    from leukemia_mtl.segment.stage import read_crops_manifest

    alias = split["group_alias"]
    paths = [
        record.path
        for dataset in load_datasets(ingest / "data", get_profile("demo").data, check=False)
        if dataset.single_cell
        for record in dataset.records
        if alias.get(f"{dataset.name}/{record.group}", f"{dataset.name}/{record.group}") in groups
    ]
    paths += [
        cells_dir / row["crop"]
        for row in read_crops_manifest(cells_dir)
        if alias.get(row["group"], row["group"]) in groups
    ]
    for path in paths:
        write_image(path, shift_stain(read_image(path, max_pixels=10**8).rgb, SHIFT), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return len(paths)


@pytest.fixture(scope="module")
def fold_targets(stage_run, tmp_path_factory):
    """Fold 0's per-stage targets on the segment-stage fixture's data: as it is, with its held-out (validation and
    evaluation) images in another stain, and with its training images in another stain."""
    from helpers import SEGMENT_STAGE

    root, _, _ = stage_run
    profile = get_profile("demo", {**SEGMENT_STAGE, "preprocess.stain": "reinhard", "augment.target_per_class": 0})
    split = make_folds(load_datasets(root / "ingest" / "data", profile.data, check=False), profile)
    fold = split["folds"][0]
    results = {}
    for variant in ("as is", "held-out shifted", "training shifted"):
        work = tmp_path_factory.mktemp("stain_fold")
        shutil.copytree(root / "ingest", work / "ingest")
        shutil.copytree(root / "cells", work / "cells")
        if variant != "as is":
            validation = set(results["as is"][0]["validation_groups"])
            held_out = set(fold["eval_groups"]) | validation
            groups = held_out if variant == "held-out shifted" else set(fold["train_groups"]) - validation
            assert _shift_files(work / "ingest", work / "cells", split, groups) > 0
        summary = prepare_training_data(work / "ingest", work / "cells", split, 0, work / "out", profile)
        results[variant] = (summary, StageArrays.load(work / "out" / "stage3.npz"))
    return results


@pytest.mark.slow
def test_the_fold_target_is_fitted_on_training_images_only(fold_targets):
    baseline, _ = fold_targets["as is"]
    held_out, _ = fold_targets["held-out shifted"]
    training, _ = fold_targets["training shifted"]
    for stage in ("stage1", "stage2", "stage3"):
        target = baseline["stages"][stage]["stain"]
        assert target["method"] == "reinhard" and target["images"] > 0
        assert held_out["stages"][stage]["stain"] == target, stage  # validation and evaluation images: no part in it
        assert training["stages"][stage]["stain"] != target, stage
        assert baseline["stages"][stage]["stain_unchanged"] == {"fit": 0, "validation": 0, "eval": 0}


@pytest.mark.slow
def test_every_image_of_a_stage_is_mapped_onto_the_fold_target(fold_targets):
    summary, arrays = fold_targets["held-out shifted"]
    _, unshifted = fold_targets["as is"]
    target = StainTarget.from_dict(summary["stages"]["stage3"]["stain"])
    assert len(arrays.x_eval) and len(arrays.x_val)
    for part in ("x_eval", "x_val"):  # shifted going in, back near the training stain coming out
        mean, _ = lab_statistics(getattr(arrays, part))
        assert np.abs(mean - target.lab_mean).max() < 3.0, part
        assert np.abs(getattr(arrays, part).astype(int) - getattr(unshifted, part).astype(int)).mean() < 6.0, part
