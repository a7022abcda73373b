"""Does the method learn, and does it learn only from what it may see?

- an instrumented fold: every image that reaches Keras' fit (training and validation data) and the
  batch-norm calibration is recorded; none is an evaluation image, and the release's choice does
  not move when the evaluation scores do;
- a negative control: the stage training the pipeline runs, on labels that carry no information
  (each true class's images spread evenly over the classes), scores at chance;
  on the true labels, clearly above. If learning breaks (labels shuffled, a carry-over broken,
  predictions that ignore the input) this file fails.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from leukemia_mtl.config import get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.train.data import StageArrays, make_folds, prepare_training_data

keras = pytest.importorskip("keras")

from helpers import finetune_stage, fold_predictions  # noqa: E402
from leukemia_mtl.evaluate import fold_metrics  # noqa: E402
from leukemia_mtl.train import finetune  # noqa: E402


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def _images_of(dataset) -> list[np.ndarray]:
    """Every image a tf.data pipeline yields (x, y[, weights]) batches of; none where it yields the frozen
    layers' features instead (several tensors, or maps that are not RGB images)."""
    images = []
    for batch in dataset:
        x = batch[0]
        if isinstance(x, (tuple, list)) or np.asarray(x).ndim != 4 or np.asarray(x).shape[-1] != 3:
            continue
        images.extend(np.asarray(x).astype(np.uint8))
    return images


@pytest.fixture(scope="module")
def learning_data(stage_run, tmp_path_factory):
    """One fold of the segment-stage fixture's data, with the demo's training recipe."""
    from helpers import SEGMENT_STAGE

    root, _, _ = stage_run
    profile = get_profile("demo", {**SEGMENT_STAGE, "train.epochs": 3, "augment.target_per_class": 16})
    split = make_folds(load_datasets(root / "ingest" / "data", profile.data, check=False), profile)
    out = tmp_path_factory.mktemp("learning_data")
    prepare_training_data(root / "ingest", root / "cells", split, 0, out, profile)
    return out, split, profile


@pytest.mark.slow
def test_an_instrumented_fold_feeds_no_evaluation_image_to_fit_callbacks_or_calibration(
    learning_data, tmp_path, monkeypatch
):
    data, split, profile = learning_data
    arrays = StageArrays.load(data / "stage3.npz")
    evaluation = {_digest(image) for image in arrays.x_eval}
    validation = {_digest(image) for image in arrays.x_val}
    assert evaluation and validation, "the fold needs evaluation images and an inner validation split"
    assert not set(arrays.groups_val.tolist()) & set(split["folds"][0]["eval_groups"])
    assert not set(arrays.groups_train.tolist()) & set(arrays.groups_val.tolist())

    seen = {"fit": set(), "validation": set(), "calibration": set(), "frozen features": set()}
    keras_fit, calibrate, features = keras.Model.fit, finetune.calibrate_batchnorm, finetune.frozen_features

    def recording_fit(model, x=None, *args, validation_data=None, **kwargs):
        seen["fit"].update(map(_digest, _images_of(x)))
        if validation_data is not None:  # what EarlyStopping and restore_best_weights read
            seen["validation"].update(map(_digest, _images_of(validation_data)))
        return keras_fit(model, x, *args, validation_data=validation_data, **kwargs)

    def recording_calibration(model, images, *args, **kwargs):
        seen["calibration"].update(map(_digest, images))
        return calibrate(model, images, *args, **kwargs)

    def recording_features(split, images, *args, **kwargs):  # what fit trains on where the frozen part is cached
        seen["frozen features"].update(map(_digest, images))
        return features(split, images, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    monkeypatch.setattr(finetune, "calibrate_batchnorm", recording_calibration)
    monkeypatch.setattr(finetune, "frozen_features", recording_features)
    summary = finetune_stage("classical", "fab", data, tmp_path / "m", profile)

    training = {_digest(image) for image in arrays.x_train}
    assert seen["calibration"] and (seen["fit"] or seen["frozen features"])  # the instruments saw the training
    if seen["frozen features"]:  # the demo's 90 % frozen backbone: fit sees the features of these images only
        assert summary.frozen_features and seen["frozen features"] == training | validation
        assert not seen["fit"] and not seen["validation"]
    else:
        assert seen["validation"] == validation  # the inner split, and only it, drives early stopping
    for where, digests in seen.items():
        assert not digests & evaluation, f"an evaluation image reached {where}"
    assert summary.val_images == len(set(arrays.units_val.tolist())) > 0 and summary.best_epoch is not None
    predictions = np.load(tmp_path / "m" / "predictions.npz")
    assert sorted(predictions["sources"].tolist()) == sorted(
        arrays.units_eval.tolist()
    )  # every evaluation smear scored


def test_the_release_choice_ignores_the_evaluation_folds_and_follows_inner_validation():
    from leukemia_mtl.evaluate import cross_validate
    from leukemia_mtl.release import select
    from leukemia_mtl.results import CrossvalResult

    classes = ("normal", "ALL")
    labels = np.array([0, 1, 1, 0, 1, 1])
    right, wrong = np.eye(2)[labels] * 0.8 + 0.1, np.eye(2)[1 - labels] * 0.8 + 0.1

    def fold(arm, k, evaluation, inner):
        return fold_predictions(
            "detection",
            arm,
            k,
            labels,
            evaluation,
            classes=classes,
            model_dir=f"/{arm}{k}",
            val_labels=labels,
            val_probabilities=inner,
        )

    # ctl is perfect on the evaluation folds and poor on its inner splits; mtl the other way round
    scored = cross_validate(
        [
            fold("ctl", 0, right, wrong),
            fold("ctl", 1, right, wrong),
            fold("mtl", 0, wrong, right),
            fold("mtl", 1, wrong, wrong),
        ]
    )
    pick = select(CrossvalResult.from_dict({"tasks": scored}), "balanced_accuracy")["detection"]
    assert (pick["arm"], pick["fold_id"], pick["chosen_by"]) == ("mtl", "r0f0", "inner validation")
    assert pick["cv_mean"] == 0.0  # reported as it is: the choice did not look at it


CONTROL_CELLS = {"train": 24, "val": 6, "eval": 20}  # per class; every image its own source, so its own unit


@pytest.fixture(scope="module")
def control_cells(tmp_path_factory):
    """Stage-1 arrays of independent single-cell images (mature lymphocytes vs L1-L3 blasts, drawn
    as ALL-IDB2 crops), with as many held-out images as a chance score needs to be told from a
    learnt one: a smear's cells share its stain, so a handful of held-out smears would not do."""
    from leukemia_mtl.data.synth import _rng, render_crop
    from leukemia_mtl.train.data import square

    parts = {}
    index = 0
    for part, per_class in CONTROL_CELLS.items():
        images, labels, sources = [], [], []
        for i in range(per_class):
            for label, cell_type in (("normal", "lymphocyte"), ("blast", ("L1", "L2", "L3")[i % 3])):
                rgb, _ = render_crop(_rng(11, 97, index), cell_type, 257)
                images.append(square(rgb, 71))
                labels.append(label)
                sources.append(f"cells/c{index:03d}")
                index += 1
        parts[part] = (np.stack(images), np.array(labels), np.array(sources))
    out = tmp_path_factory.mktemp("control_cells")
    (x, y, s), (xv, yv, sv), (xe, ye, se) = parts["train"], parts["val"], parts["eval"]
    StageArrays(
        classes=("normal", "blast"),
        x_train=x,
        y_train=y,
        groups_train=s,
        sources_train=s,
        augmented_train=np.zeros(len(x), bool),
        x_val=xv,
        y_val=yv,
        groups_val=sv,
        sources_val=sv,
        x_eval=xe,
        y_eval=ye,
        groups_eval=se,
        sources_eval=se,
        units_val=sv,
        unit_labels_val=yv,
        unit_groups_val=sv,
        units_eval=se,
        unit_labels_eval=ye,
        unit_groups_eval=se,
    ).save(out / "stage1.npz")
    (out / "summary.json").write_text(
        json.dumps({"fold_id": "r0f0", "repeat": 0, "fold": 0, "stages": {"stage1": {"train_source_images": len(x)}}})
    )
    return out


def _uninformative(data, tmp_path, seed: int):
    """A copy of the arrays whose training and validation labels say nothing about the truth: each
    true class's images are split at random, evenly, between the classes (a plain permutation of a
    few dozen labels agrees with the truth more, or less, than chance). Evaluation labels stay true."""
    copy = tmp_path / f"uninformative{seed}"
    shutil.copytree(data, copy)
    arrays = StageArrays.load(copy / "stage1.npz")
    rng = np.random.default_rng(seed)
    for labels in (arrays.y_train, arrays.y_val):
        truth = labels.copy()
        for label in arrays.classes:
            mine = rng.permutation(np.flatnonzero(truth == label))
            labels[mine] = [arrays.classes[i % len(arrays.classes)] for i in range(len(mine))]
        assert all((labels[truth == c] == "blast").mean() == 0.5 for c in arrays.classes)  # independent of the truth
    arrays.save(copy / "stage1.npz")
    return copy


def _held_out_scores(data, tmp_path, profile, name):
    """The stage training the pipeline runs (demo recipe); its held-out images, blast vs normal."""
    finetune_stage("stage1", "blast", data, tmp_path / name, profile)
    with np.load(tmp_path / name / "predictions.npz") as predictions:
        return fold_metrics(("normal", "blast"), predictions["labels"].astype(int), predictions["probabilities"])


@pytest.mark.slow
def test_negative_control_uninformative_labels_score_at_chance_true_labels_well_above(control_cells, tmp_path):
    """A model fitted to noise points its output along some direction of the images; where that
    direction meets the blast-vs-normal difference (the largest one in these images) its held-out
    AUC lands far from 0.5 either way (0.20-0.76 over five relabellings here). So the control is
    run four times: on average it must sit at chance, and none may come near the true labels' score
    (so one inverted control cannot hide a leaky one)."""
    profile = get_profile("demo")
    true = _held_out_scores(control_cells, tmp_path, profile, "true")
    controls = [
        _held_out_scores(_uninformative(control_cells, tmp_path, seed), tmp_path, profile, f"control{seed}")
        for seed in (1, 2, 3, 4)
    ]
    report = json.dumps(
        {
            "true": {k: true[k] for k in ("balanced_accuracy", "auc_macro", "images")},
            "uninformative": [{k: c[k] for k in ("balanced_accuracy", "auc_macro")} for c in controls],
        }
    )
    assert true["images"] == 2 * CONTROL_CELLS["eval"], report
    assert true["balanced_accuracy"] >= 0.8 and true["auc_macro"] >= 0.9, report
    assert np.mean([c["balanced_accuracy"] for c in controls]) <= 0.7, report
    assert np.mean([c["auc_macro"] for c in controls]) <= 0.7, report
    assert max(c["auc_macro"] for c in controls) <= true["auc_macro"] - 0.15, report


@pytest.mark.slow
def test_the_multistage_path_learns_stage_2_from_stage_1s_backbone_on_isolated_cells(learning_data, tmp_path):
    """Stage 1 on the raw single-cell images, then stage 2 from its backbone on the cells segment
    isolated: stage 2's held-out cells (several per held-out smear) must be told apart."""
    data, _, profile = learning_data
    finetune_stage("stage1", "blast", data, tmp_path / "s1", profile)
    summary = finetune_stage("stage2", "blast", data, tmp_path / "s2", profile, previous_dir=tmp_path / "s1")
    assert summary.carried_over == ["backbone"] and summary.val_images > 0
    with np.load(tmp_path / "s2" / "predictions.npz") as predictions:
        scores = fold_metrics(("normal", "blast"), predictions["labels"].astype(int), predictions["probabilities"])
    report = json.dumps({k: scores[k] for k in ("balanced_accuracy", "auc_macro", "images")})
    assert scores["images"] >= 30 and scores["balanced_accuracy"] >= 0.75 and scores["auc_macro"] >= 0.85, report
