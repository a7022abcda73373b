"""The paper's three backbones, where their weights come from, and the classifier built on them.

Weights come from a configurable source, because clusters differ: 'imagenet' (Keras downloads
them; needs internet), a local folder or file, an s3:// URI (an air-gapped cluster's MinIO
holding Keras' own files, e.g. inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5), or
'none' (random initialisation: a run without ImageNet weights is not the paper's stage 1, and
says so). Each backbone's own preprocess_input is built into the model as a layer, so a saved
model takes raw 0-255 RGB and no caller can forget it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from leukemia_mtl.config import StorageConfig
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.models.catalog import BACKBONES, Backbone  # noqa: F401 (re-exported)


class WeightsError(LeukemiaMtlError):
    """A weight source that is missing, unreadable, or made for another network."""


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]


@dataclass(frozen=True)
class ResolvedWeights:
    keras_argument: str | None  # what keras.applications takes: 'imagenet', a path, or None
    description: str
    imagenet: bool  # False: say in every report that this is not the paper's stage 1


def keras_models_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(source: str, backbone: Backbone, storage: StorageConfig | None = None) -> ResolvedWeights:
    """Turn a weight-source setting into what Keras takes, fetching from S3 when asked."""
    source = source.strip()
    if source.lower() == "none":
        return ResolvedWeights(None, "random initialisation (no ImageNet weights: not the paper's stage 1)", False)
    if source.lower() == "imagenet":
        return ResolvedWeights("imagenet", "ImageNet, downloaded by Keras", True)
    if source.startswith("s3://"):
        from leukemia_mtl.data.storage import ObjectStore, parse_s3_uri

        bucket, key = parse_s3_uri(source)
        if not key.endswith(".h5"):
            key = "/".join(filter(None, [key, backbone.weights_file]))
        local = keras_models_dir() / Path(key).name
        ObjectStore.from_env(storage).download_file(bucket, key, local)
        return ResolvedWeights(str(local), f"ImageNet from s3://{bucket}/{key}", True)
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / backbone.weights_file
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (weights source {source!r} for {backbone.name})")
    return ResolvedWeights(str(path), f"ImageNet from {path}", True)


def build_classifier(
    backbone_name: str,
    input_size: int,
    n_classes: int,
    weights: ResolvedWeights,
    *,
    dense_units: int = 0,
    dropout: float = 0.0,
    head: str = "auto",
):
    """Backbone -> global average pooling -> [dropout, dense ReLU] -> dropout -> head.

    head "sigmoid": one unit for two classes (the paper's Eq. 2); "softmax": one unit per class
    (Eq. 1); "auto": sigmoid for two classes, softmax for more.
    """
    import keras
    from keras import applications, layers

    backbone = get_backbone(backbone_name)
    if input_size < backbone.min_size:
        raise WeightsError(f"{backbone.name} needs inputs of at least {backbone.min_size} px; got {input_size}")
    if n_classes < 2:
        raise WeightsError(f"a classifier needs at least 2 classes; got {n_classes}")
    if head not in ("auto", "sigmoid", "softmax") or (head == "sigmoid" and n_classes != 2):
        raise WeightsError(f"head {head!r} does not fit {n_classes} classes (sigmoid is for two)")
    constructor = getattr(applications, backbone.application)
    try:
        base = constructor(include_top=False, weights=weights.keras_argument, input_shape=(input_size, input_size, 3),
                           name="backbone")
    except (ValueError, OSError) as exc:
        raise WeightsError(f"{weights.keras_argument}: cannot load as {backbone.name} weights ({_first_line(exc)})") from None
    except Exception as exc:  # Keras' download failure without internet is a plain Exception
        raise WeightsError(f"{backbone.name} weights from {weights.description}: {_first_line(exc)}") from None

    inputs = keras.Input((input_size, input_size, 3), name="rgb")
    scale, offset = backbone.rescale
    x = layers.Rescaling(scale, offset=offset, name="preprocess_input")(inputs)
    x = base(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dense_units:
        x = layers.Dropout(dropout, name="dropout_dense")(x)
        x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout_head")(x)
    if head == "sigmoid" or (head == "auto" and n_classes == 2):
        outputs = layers.Dense(1, activation="sigmoid", name="head", dtype="float32")(x)
    else:  # float32 output under mixed precision too: softmax and the loss stay numerically sound
        outputs = layers.Dense(n_classes, activation="softmax", name="head", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_classifier")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
