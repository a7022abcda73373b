"""Model bundles (leukemia_mtl.bundles) with real tiny Keras models, and the atomic writer under them."""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import classifier_info
from leukemia_mtl.bundles import (
    META_FILE,
    MODEL_FILE,
    SEGMENTER_META_FILE,
    SEGMENTER_MODEL_FILE,
    SegmenterInfo,
    class_probabilities,
    describe_classifier,
    describe_segmenter,
    load_classifier,
    load_segmenter,
    save_classifier,
    save_segmenter,
)
from leukemia_mtl.errors import SegmentError
from leukemia_mtl.io_utils import atomic_path, atomic_write_bytes, atomic_writer
from leukemia_mtl.stages import StageError

keras = pytest.importorskip("keras")

from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier  # noqa: E402
from leukemia_mtl.segment.unet import build_residual_unet  # noqa: E402

INFO = classifier_info(weights="random initialisation")
UNET_INFO = SegmenterInfo(32, 0.25, 2, 4, "ground truth", pixel_scales={"smear": {"scale": 0.5, "source": "given"}})


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory):
    keras.utils.set_random_seed(3)
    model = build_classifier("Xception", 71, 2, ResolvedWeights(None, "random initialisation", False))
    directory = save_classifier(model, INFO, tmp_path_factory.mktemp("classifier"))
    return model, directory


@pytest.fixture
def unet_bundle(tmp_path):
    keras.utils.set_random_seed(4)
    model = build_residual_unet(32, depth=2, base_filters=4)
    return model, save_segmenter(model, UNET_INFO, tmp_path / "segmenter")


def _images(size: int, count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@pytest.mark.slow
def test_a_classifier_round_trip_gives_the_same_outputs_and_description(classifier_bundle):
    model, directory = classifier_bundle
    assert sorted(p.name for p in directory.iterdir()) == [META_FILE, MODEL_FILE]  # no temporary file left
    loaded, info = load_classifier(directory)
    assert info == INFO and loaded.name == "Xception_classifier"
    images = _images(71)
    np.testing.assert_allclose(
        np.asarray(loaded(images, training=False)), np.asarray(model(images, training=False)), atol=1e-6
    )
    assert class_probabilities(np.asarray(loaded(images, training=False)), info.head).shape == (3, 2)


@pytest.mark.slow
def test_a_segmenter_round_trip_gives_the_same_outputs_and_description(unet_bundle):
    model, directory = unet_bundle
    loaded, info = load_segmenter(directory)
    assert info == UNET_INFO
    images = _images(32, 2)
    np.testing.assert_allclose(loaded.predict_on_batch(images), model.predict_on_batch(images), atol=1e-6)


@pytest.mark.slow
def test_describe_reads_the_description_without_the_model(classifier_bundle, unet_bundle, tmp_path):
    _, directory = classifier_bundle
    evaluation = tmp_path / "evaluation"  # a finetune task's evaluation folder: the description, no weights
    evaluation.mkdir()
    (evaluation / META_FILE).write_bytes((directory / META_FILE).read_bytes())
    assert describe_classifier(evaluation) == INFO
    _, segmenter = unet_bundle
    (segmenter / SEGMENTER_MODEL_FILE).write_bytes(b"weights never read")
    assert describe_segmenter(segmenter) == UNET_INFO
    with pytest.raises(StageError, match=f"{tmp_path / META_FILE}: missing; a classifier bundle holds"):
        describe_classifier(tmp_path)


def test_a_truncated_model_file_is_one_error_naming_it(unet_bundle):
    _, directory = unet_bundle
    model_file = directory / SEGMENTER_MODEL_FILE
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(SegmentError) as caught:
        load_segmenter(directory)
    assert str(caught.value) == f"{model_file}: not a Keras model file (truncated or another format)"
    with zipfile.ZipFile(model_file, "w") as archive:  # a zip, but not Keras'
        archive.writestr("config.json", "{not json")
    with pytest.raises(SegmentError, match=f"^{model_file}: cannot be loaded as a Keras model") as caught:
        load_segmenter(directory)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"patch_size": 32', "not a segmenter description"),
        ("[32, 0.25]", "not a segmenter description"),
        (json.dumps({**dataclasses.asdict(UNET_INFO), "colour": "blue"}), "not a segmenter description"),
        (json.dumps({**dataclasses.asdict(UNET_INFO), "bundle_version": 99}), "bundle version 99, this code reads 1"),
    ],
)
def test_a_bad_description_is_one_error_naming_it(unet_bundle, text, words):
    _, directory = unet_bundle
    (directory / SEGMENTER_META_FILE).write_text(text)
    for read in (load_segmenter, describe_segmenter):
        with pytest.raises(SegmentError, match=f"^{directory / SEGMENTER_META_FILE}: {words}"):
            read(directory)


def test_a_classifier_description_that_does_not_parse_is_a_stage_error(tmp_path):
    (tmp_path / META_FILE).write_text('"a string"')
    with pytest.raises(StageError, match=f"^{tmp_path / META_FILE}: not a classifier description"):
        describe_classifier(tmp_path)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_atomic_writer_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out" / "arrays.npz"
    with pytest.raises(RuntimeError, match="verification failed"), atomic_writer(target) as handle:
        handle.write(b"half of it")
        raise RuntimeError("verification failed")
    assert _leftovers(tmp_path / "out") == []  # neither the final name nor a .part file

    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_writer(target) as handle:
        handle.write(b"new, unverified")
        raise RuntimeError("size differs")
    assert target.read_bytes() == b"old" and _leftovers(target.parent) == ["arrays.npz"]


def test_the_atomic_writer_renames_only_at_the_end(tmp_path):
    target = tmp_path / "arrays.npz"
    with atomic_writer(target) as handle:
        np.savez(handle, x=np.arange(3))
        assert not target.exists()  # being written under a hidden .part name
        assert [p.name.endswith(".part") for p in tmp_path.iterdir()] == [True]
    with np.load(target) as data:
        assert data["x"].tolist() == [0, 1, 2]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and _leftovers(tmp_path) == ["arrays.npz"]


def test_a_named_temporary_keeps_its_suffix_and_goes_on_failure(tmp_path):
    with pytest.raises(ValueError), atomic_path(tmp_path / MODEL_FILE, suffix=".part.keras") as tmp:
        assert tmp.name.endswith(".part.keras") and tmp.parent == tmp_path
        tmp.write_bytes(b"partial")
        raise ValueError("Keras failed half-way")
    assert _leftovers(tmp_path) == []


def test_predict_imports_nothing_from_training():
    code = (
        "import sys, leukemia_mtl.predict; "
        "print([m for m in sys.modules if m.startswith('leukemia_mtl.train') or m in ('keras', 'tensorflow')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    ).stdout
    assert out.strip() == "[]"
