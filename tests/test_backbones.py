"""Backbones and weight sources, with real Keras models (weights none) and real weight files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from leukemia_mtl.models.backbones import (  # noqa: E402
    BACKBONES,
    ResolvedWeights,
    WeightsError,
    build_classifier,
    get_backbone,
    resolve_weights,
)

NONE = ResolvedWeights(None, "random", False)


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.slow
def test_each_backbone_builds_small_with_the_right_head(name):
    size = BACKBONES[name].min_size
    binary = build_classifier(name, size, 2, NONE, dense_units=16, dropout=0.2)
    assert binary.input_shape == (None, size, size, 3) and binary.output_shape == (None, 1)
    assert binary.get_layer("head").activation.__name__ == "sigmoid"
    fab = build_classifier(name, size, 4, NONE)
    assert fab.output_shape == (None, 4) and fab.get_layer("head").activation.__name__ == "softmax"
    assert isinstance(fab.get_layer("gap"), keras.layers.GlobalAveragePooling2D)
    probabilities = fab.predict_on_batch(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32"))
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.slow
def test_built_in_preprocessing_is_the_backbones_own_preprocess_input(name):
    """Keras' own preprocess_input of the backbone's mode: "tf" for the paper's three, "torch" (ImageNet's mean and
    deviation) for DenseNet121 and torchvision's MobileNetV2, the normalisation their weights were trained with."""
    spec = BACKBONES[name]
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=spec.preprocessing)
    if spec.application != "torchvision_mobilenet_v2":  # the application's own module agrees
        module = getattr(
            keras.applications,
            spec.application.lower()
            .replace("inceptionv3", "inception_v3")
            .replace("inceptionresnetv2", "inception_resnet_v2")
            .replace("densenet121", "densenet"),
        )
        np.testing.assert_allclose(module.preprocess_input(x.copy()), expected, atol=1e-5)
    model = build_classifier(name, max(spec.min_size, 32), 2, NONE)
    rescale = model.get_layer("preprocess_input")
    np.testing.assert_allclose(np.asarray(rescale(x)), expected, atol=1e-5)


def _keras_weights_file(folder: Path, name: str = "Xception") -> Path:
    """A weights file in the format and under the name Keras itself publishes."""
    spec = BACKBONES[name]
    base = getattr(keras.applications, spec.application)(
        include_top=False, weights=None, input_shape=(spec.min_size,) * 2 + (3,)
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.weights_file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that .h5 is a legacy format: it is Keras' own
        base.save(path)
    return path


def _backbone_weights(model) -> list[np.ndarray]:
    return model.get_layer("backbone").get_weights()


def test_weights_round_trip_through_a_local_folder(tmp_path):
    path = _keras_weights_file(tmp_path / "weights")
    resolved = resolve_weights(str(tmp_path / "weights"), get_backbone("Xception"))
    assert resolved.imagenet and resolved.keras_argument == str(path)
    model = build_classifier("Xception", 71, 2, resolved)
    reference = keras.models.load_model(path, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(_backbone_weights(model), reference.get_weights()))


@pytest.mark.slow
def test_weights_round_trip_through_the_local_s3_server(tmp_path, s3_env, monkeypatch):
    from leukemia_mtl.data.storage import ObjectStore

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    path = _keras_weights_file(tmp_path / "weights")
    store = ObjectStore.from_env()
    store.ensure_bucket("models")
    store.upload_file(path, "models", f"imagenet/{path.name}")
    for uri in ("s3://models/imagenet", f"s3://models/imagenet/{path.name}"):
        resolved = resolve_weights(uri, get_backbone("Xception"))
        assert Path(resolved.keras_argument) == tmp_path / "keras_home" / "models" / path.name
        model = build_classifier("Xception", 71, 2, resolved)
        reference = keras.models.load_model(path, compile=False)
        assert all(np.array_equal(a, b) for a, b in zip(_backbone_weights(model), reference.get_weights()))


@pytest.mark.slow
def test_bad_weight_sources_are_one_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        resolve_weights(str(tmp_path / "nowhere"), get_backbone("InceptionV3"))
    path = _keras_weights_file(tmp_path / "w")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated.h5: cannot load as Xception weights"):
        build_classifier("Xception", 71, 2, resolve_weights(str(truncated), get_backbone("Xception")))
    with pytest.raises(WeightsError, match="cannot load as InceptionV3 weights"):
        build_classifier("InceptionV3", 75, 2, ResolvedWeights(str(path), "x", True))  # Xception's file


def test_names_sizes_and_class_counts_are_checked():
    with pytest.raises(WeightsError, match="unknown backbone 'ResNet50'"):
        get_backbone("ResNet50")
    with pytest.raises(WeightsError, match="at least 75 px"):
        build_classifier("InceptionV3", 64, 2, NONE)
    with pytest.raises(WeightsError, match="at least 2 classes"):
        build_classifier("Xception", 71, 1, NONE)


def test_no_imagenet_weights_is_said_plainly():
    resolved = resolve_weights("none", get_backbone("InceptionV3"))
    assert resolved.keras_argument is None and not resolved.imagenet
    assert "not the paper's stage 1" in resolved.description
