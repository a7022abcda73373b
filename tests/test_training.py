"""Multistage transfer learning: the split, per-stage arrays, fitting and weight carry-over."""

from __future__ import annotations

import html
import json
import zipfile

import numpy as np
import pytest

from leukemia_mtl.config import TrainConfig, get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.synth import _rng, render_crop
from leukemia_mtl.train.data import StageArrays, make_folds, prepare_training_data, square

keras = pytest.importorskip("keras")

from leukemia_mtl.devices import devices_for_training  # noqa: E402
from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier  # noqa: E402
from leukemia_mtl.train.finetune import carry_over, encode_labels, fit_stage  # noqa: E402
from leukemia_mtl.train.stage import StageError, load_classifier, run_finetune_stage  # noqa: E402

NONE = ResolvedWeights(None, "random", False)


@pytest.fixture(scope="session")
def training_data(stage_run, tmp_path_factory):
    root, profile, _ = stage_run
    profile = get_profile("demo", {**json.loads(json.dumps(_overrides(profile)))})
    split = make_folds(load_datasets(root / "ingest" / "data", profile.data, check=False), profile)
    out = tmp_path_factory.mktemp("training_data")
    summary = prepare_training_data(root / "ingest", root / "cells", split, 0, out, profile)
    return out, split["folds"][0], summary, profile


def _overrides(profile):
    from conftest import SEGMENT_STAGE

    return SEGMENT_STAGE


def test_split_is_grouped_and_stratified(training_data):
    _, split, _, _ = training_data
    assert not set(split["train_groups"]) & set(split["eval_groups"])
    evaluation_smears = [g for g in split["eval_groups"] if g.startswith("smears/")]
    assert len(evaluation_smears) == 6  # one fold of 2 over 12 smears, 3 per class


def test_augmentation_never_receives_an_evaluation_image(training_data):
    out, split, summary, _ = training_data
    evaluation = set(split["eval_groups"])
    for stage in ("stage1", "stage2", "stage3"):
        arrays = StageArrays.load(out / f"{stage}.npz")
        assert not set(arrays.groups_train.tolist()) & evaluation, stage
        assert set(arrays.groups_eval.tolist()) <= evaluation, stage
        originals = set(arrays.sources_train[~arrays.augmented_train].tolist())
        copies = set(arrays.sources_train[arrays.augmented_train].tolist())
        assert copies <= originals, f"{stage}: a copy whose source is not a training image"
        assert not copies & set(arrays.sources_eval.tolist())
        counts = {c: int((arrays.y_train == c).sum()) for c in arrays.classes}
        assert len(set(counts.values())) == 1, f"{stage} not balanced: {counts}"
        assert arrays.x_train.dtype == np.uint8 and arrays.x_train.shape[1:] == (71, 71, 3)
    assert summary["stages"]["stage3"]["classes"] == ["normal", "L1", "L2", "L3"]
    assert summary["stage1_source"] == "raw single-cell images"


def test_square_keeps_the_aspect_ratio():
    image = np.full((30, 90, 3), 255, np.uint8)
    out = square(image, 60)
    assert out.shape == (60, 60, 3)
    assert out[0, 30].max() == 0 and out[30, 30].min() == 255  # black bands above and below


def _cells(n_per_class: int, size: int = 71):
    images, labels = [], []
    for index in range(n_per_class):
        for label, cell in (("normal", "lymphocyte"), ("blast", "L3")):
            rgb, _ = render_crop(_rng(index, 96, hash(cell) % 1000), cell, 128)
            images.append(square(rgb, size))
            labels.append(label)
    return np.stack(images), np.array(labels)


def test_a_stage_trains_and_the_loss_falls():
    x, labels = _cells(12)
    y = encode_labels(labels, ("normal", "blast"), "sigmoid")
    keras.utils.set_random_seed(0)
    strategy, _ = devices_for_training("off")
    with strategy.scope():
        model = build_classifier("Xception", 71, 2, NONE, dense_units=16, dropout=0.1, head="sigmoid")
        traces = []
        keras_train_step = model.train_step
        model.train_step = lambda data: traces.append(1) or keras_train_step(data)  # runs only while tracing
        cfg = TrainConfig(epochs=4, warmup_epochs=1, batch_size=8, early_stopping_patience=0)
        result = fit_stage(model, x, y, x[:8], y[:8], cfg, "sigmoid", seed=0, verbose=0)
    # one graph per phase (warm-up, fine-tuning), not per epoch, batch or variable creation
    assert len(traces) == 2
    loss = result.history["loss"]
    assert len(loss) == 5  # warm-up + fine-tuning epochs
    assert loss[-1] < loss[0], loss
    assert result.images_per_second > 0  # 4 fine-tuning epochs: the last 3 are steady


def test_same_seed_same_weights_after_one_epoch():
    x, labels = _cells(6)
    y = encode_labels(labels, ("normal", "blast"), "softmax")
    cfg = TrainConfig(epochs=1, warmup_epochs=0, batch_size=6, early_stopping_patience=0)
    weights = []
    for _ in range(2):
        keras.utils.set_random_seed(5)
        model = build_classifier("Xception", 71, 2, NONE, head="softmax")
        fit_stage(model, x, y, x[:4], y[:4], cfg, "softmax", seed=5, verbose=0)
        weights.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


def test_carry_over_copies_the_backbone_and_dense_layer_not_the_head():
    stage1 = build_classifier("Xception", 71, 2, NONE, head="softmax", dense_units=16)
    stage2 = build_classifier("Xception", 71, 2, NONE, head="sigmoid", dense_units=16)
    before = stage2.get_layer("backbone").get_weights()
    copied = carry_over(stage1, stage2)
    assert copied == ["backbone", "dense"]
    after = stage2.get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(after, stage1.get_layer("backbone").get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(after, before))  # not the fresh initialisation
    assert stage2.get_layer("head").get_weights()[0].shape == (16, 1)
    with pytest.raises(ValueError, match="does not fit"):
        carry_over(build_classifier("InceptionV3", 75, 2, NONE), stage2)


def test_stage2_starts_from_stage1_and_says_so(training_data, tmp_path):
    out, _, _, profile = training_data
    s1 = run_finetune_stage("stage1", "blast", "Xception", out, None, tmp_path / "s1", tmp_path / "s1.html", profile)
    assert s1.carried_over == [] and not s1.imagenet
    assert "not the paper's stage 1" in html.unescape((tmp_path / "s1.html").read_text())
    stage1_model, _ = load_classifier(tmp_path / "s1")
    # architecture and weights only: the optimizer's state (Adam: twice the weights) is not shipped
    assert getattr(stage1_model, "optimizer", None) is None
    with zipfile.ZipFile(tmp_path / "s1" / "classifier.keras") as bundle, bundle.open("model.weights.h5") as weights:
        assert b"optimizer" not in weights.read()
    s2 = run_finetune_stage("stage2", "blast", "Xception", out, tmp_path / "s1", tmp_path / "s2", tmp_path / "s2.html", profile)
    assert s2.carried_over == ["backbone"]
    stage2_model, info = load_classifier(tmp_path / "s2")
    assert info.head == "sigmoid" and info.stage == "stage2" and stage2_model.output_shape == (None, 1)
    history = json.loads((tmp_path / "s2" / "history.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    predictions = np.load(tmp_path / "s2" / "predictions.npz")
    assert len(predictions["probabilities"]) == s2.eval_images


@pytest.mark.parametrize("stage, task, previous, message", [
    ("stage2", "fab", None, "does not do task 'fab'"),
    ("stage1", "blast", "x", "takes no previous"),
    ("stage3", "detection", None, "needs the previous"),
    ("stage9", "blast", None, "unknown stage"),
])
def test_stages_refuse_what_does_not_fit(training_data, tmp_path, stage, task, previous, message):
    out, _, _, profile = training_data
    with pytest.raises(StageError, match=message):
        run_finetune_stage(stage, task, "Xception", out, tmp_path / previous if previous else None, tmp_path / "m",
                           tmp_path / "m.html", profile)


def test_devices_for_training_on_cpu_and_mixed_precision_keeps_a_float32_head():
    import tensorflow as tf


    strategy, description = devices_for_training("auto")
    assert description == "CPU, float32" and isinstance(strategy, tf.distribute.OneDeviceStrategy)
    try:
        _, description = devices_for_training("on")
        assert description == "CPU, mixed float16"
        model = build_classifier("Xception", 71, 4, NONE, head="softmax")
        assert model.get_layer("backbone").compute_dtype == "float16"
        assert model.output.dtype == "float32"  # softmax and the loss in float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(ValueError, match="auto, on or off"):
        devices_for_training("sometimes")
