"""Model bundles: a Keras `.keras` file beside the JSON description that says what it is, for the
classifiers (classifier.keras, classifier.json) and the segmenter (segmenter.keras, segmenter.json).

Training writes them, release copies them, predict loads them; none of those needs the others'
code. One core does what every kind needs: write both files atomically, refuse a bundle with a
file missing, a description that does not parse or a model file Keras' safe mode will not load,
and check the model against its description, each time one error naming the file (StageError
for a classifier, SegmentError for the segmenter). What a classifier takes and gives
(`square`, `model_outputs`, `class_probabilities`) lives here too, so training's evaluation and
predict feed a model the same way. Keras is imported only to save or load a model.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from leukemia_mtl.errors import SegmentError
from leukemia_mtl.io_utils import atomic_path, atomic_write_json
from leukemia_mtl.stages import StageError

MODEL_FILE = "classifier.keras"
META_FILE = "classifier.json"
# what a finetune task leaves beside its classifier bundle; its evaluation artifact holds all but the weights
SUMMARY_FILE = "summary.json"
HISTORY_FILE = "history.json"
PREDICTIONS_FILE = "predictions.npz"
EXPLANATIONS_FILE = "explanations.png"  # Grad-CAM of the held-out images the model was most and least sure of
EVALUATION_FILES = (META_FILE, SUMMARY_FILE, HISTORY_FILE, PREDICTIONS_FILE)
SEGMENTER_MODEL_FILE = "segmenter.keras"
SEGMENTER_META_FILE = "segmenter.json"
SEGMENTER_VERSION = 1  # segmenter.json's bundle_version this code reads


@dataclass
class ClassifierInfo:
    backbone: str
    input_size: int
    classes: list[str]
    head: str
    stage: str
    task: str
    weights: str
    imagenet: bool
    # the stain target (leukemia_mtl.stain.StainTarget.to_dict()) the model's training images were mapped onto;
    # predict maps its input onto the same one. None: no normalisation (and every bundle written before it).
    stain: dict | None = None
    # where the backbone's starting weights came from (backbones.ResolvedWeights.provenance: package, version,
    # file, sha256, licence), carried from stage to stage; None in bundles written before it was recorded
    weights_source: dict | None = None


@dataclass(frozen=True)
class SegmenterInfo:
    patch_size: int
    working_scale: float
    depth: int
    base_filters: int
    mask_source: str
    bundle_version: int = SEGMENTER_VERSION
    # which mask isolates cells ("unet" or "roi": segment.isolation, as the stage chose it)
    isolation: str = "unet"
    # per kind ("smear", "cell"): {"scale", "source"} of the images it was trained on (scale None: each image's from
    # its width), predict's default for images of that kind; a kind whose datasets differ is left out. None in
    # bundles from before pixel scales were recorded, whose images were all scaled by width.
    pixel_scales: dict[str, dict] | None = None


@dataclass(frozen=True)
class BundleKind:
    """What differs between kinds of bundle: file names, description, error, and the checks of a
    description (`check_info`) and of a loaded model against it (`check_model`)."""

    name: str  # in messages: "a classifier bundle holds ..."
    model_file: str
    meta_file: str
    info: type
    error: type[Exception]
    check_info: Callable[[Any, Path], None]
    check_model: Callable[[Any, Any, Path], None]


# -- the core: any kind -------------------------------------------------------------------


def save_bundle(model: Any, directory: Path | str, kind: BundleKind, meta: dict) -> Path:
    """The model and its description side by side, each written under a temporary name and
    renamed, so a reader never sees half a bundle under the final names.

    Architecture and weights only: a compiled model's file would also carry the optimizer's state
    (Adam: twice the weights) that nobody reads, since every stage starts a fresh optimizer; the
    uncompiled functional copy shares the layers, so nothing is copied.
    """
    import keras

    directory = Path(directory)
    with atomic_path(directory / kind.model_file, suffix=".part.keras") as tmp:  # Keras insists on the .keras suffix
        # model.input/.output keep the built structure (one tensor, not a list of one): a loaded model
        # then takes a plain batch, as the model it was saved from did, without Keras' structure warning
        keras.Model(model.input, model.output, name=model.name).save(tmp)
    atomic_write_json(directory / kind.meta_file, meta)
    return directory


def _require(path: Path, kind: BundleKind) -> Path:
    if not path.is_file():
        raise kind.error(f"{path}: missing; a {kind.name} bundle holds {kind.model_file} and {kind.meta_file}")
    return path


def bundle_paths(directory: Path | str, kind: BundleKind) -> tuple[Path, Path]:
    """(model file, description); one error naming the first of them that is missing."""
    directory = Path(directory)
    return _require(directory / kind.model_file, kind), _require(directory / kind.meta_file, kind)


def read_description(meta_path: Path | str, kind: BundleKind) -> Any:
    """The description as its dataclass, checked; one error naming the file if it is not one."""
    meta_path = _require(Path(meta_path), kind)
    try:
        info = kind.info(**json.loads(meta_path.read_text()))
    except (ValueError, TypeError) as exc:  # not JSON, not an object, or fields this code does not know
        raise kind.error(f"{meta_path}: not a {kind.name} description ({exc})") from None
    kind.check_info(info, meta_path)
    return info


def load_keras_model(path: Path | str, error: type[Exception]) -> Any:
    """A .keras file in Keras' safe mode (a Lambda layer or other code is refused); any failure
    is one `error` naming the file, never Keras' traceback."""
    import keras

    if not zipfile.is_zipfile(path):
        raise error(f"{path}: not a Keras model file (truncated or another format)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; the user needs one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise error(f"{path}: cannot be loaded as a Keras model ({type(exc).__name__}: {first})") from None


def load_bundle(directory: Path | str, kind: BundleKind) -> tuple[Any, Any]:
    """(model, description): both files there, the description read first (no weights are loaded
    for a bundle that cannot be right), the model in safe mode and checked against it."""
    model_path, meta_path = bundle_paths(directory, kind)
    info = read_description(meta_path, kind)
    model = load_keras_model(model_path, kind.error)
    kind.check_model(model, info, model_path)
    return model, info


# -- classifiers --------------------------------------------------------------------------


def _check_classifier(model: Any, info: ClassifierInfo, model_path: Path) -> None:
    if model.name != f"{info.backbone}_classifier":
        raise StageError(
            f"{model_path}: holds the model {model.name!r}, but {META_FILE} says a {info.backbone} classifier"
        )
    if tuple(model.input_shape) != (None, info.input_size, info.input_size, 3):
        raise StageError(f"{model_path}: takes {model.input_shape}, but {META_FILE} says {info.input_size} px")
    units = 1 if info.head == "sigmoid" else len(info.classes)
    if tuple(model.output_shape) != (None, units):
        raise StageError(
            f"{model_path}: gives {model.output_shape[1:]} outputs, but {META_FILE} says {info.head} over "
            f"{len(info.classes)} classes"
        )


CLASSIFIER = BundleKind(
    "classifier",
    MODEL_FILE,
    META_FILE,
    ClassifierInfo,
    StageError,
    check_info=lambda info, meta_path: None,
    check_model=_check_classifier,
)


def save_classifier(model: Any, info: ClassifierInfo, directory: Path | str) -> Path:
    return save_bundle(model, directory, CLASSIFIER, asdict(info))


def load_classifier(directory: Path | str) -> tuple[Any, ClassifierInfo]:
    """(model, info); safe mode, and the file checked against its description."""
    return load_bundle(directory, CLASSIFIER)


def describe_classifier(directory: Path | str) -> ClassifierInfo:
    """classifier.json alone, checked, without loading the model (also reads a finetune task's
    evaluation folder, which holds the description but no weights)."""
    return read_description(Path(directory) / META_FILE, CLASSIFIER)


# -- the segmenter ------------------------------------------------------------------------


def _check_segmenter_info(info: SegmenterInfo, meta_path: Path) -> None:
    if info.bundle_version != SEGMENTER_VERSION:
        raise SegmentError(f"{meta_path}: bundle version {info.bundle_version}, this code reads {SEGMENTER_VERSION}")


def _check_segmenter(model: Any, info: SegmenterInfo, model_path: Path) -> None:
    expected = (None, info.patch_size, info.patch_size, 3)
    if tuple(model.input_shape) != expected or tuple(model.output_shape) != expected[:3] + (1,):
        raise SegmentError(
            f"{model_path}: network takes {model.input_shape} and gives {model.output_shape}, but "
            f"{SEGMENTER_META_FILE} says {info.patch_size}x{info.patch_size} RGB patches to one mask channel"
        )


SEGMENTER = BundleKind(
    "segmenter",
    SEGMENTER_MODEL_FILE,
    SEGMENTER_META_FILE,
    SegmenterInfo,
    SegmentError,
    check_info=_check_segmenter_info,
    check_model=_check_segmenter,
)


def save_segmenter(model: Any, info: SegmenterInfo, directory: Path | str) -> Path:
    return save_bundle(model, directory, SEGMENTER, asdict(info))


def load_segmenter(directory: Path | str) -> tuple[Any, SegmenterInfo]:
    """(network, info); any mismatch between file and description is one clear SegmentError."""
    return load_bundle(directory, SEGMENTER)


def describe_segmenter(directory: Path | str) -> SegmenterInfo:
    """segmenter.json alone, checked (its bundle version too), without loading the network."""
    return read_description(Path(directory) / SEGMENTER_META_FILE, SEGMENTER)


# -- what a classifier takes and gives ----------------------------------------------------


def square(image: np.ndarray, size: int) -> np.ndarray:
    """A classifier's input: padded to a square with black (segment's backdrop) and resized, so
    cell shapes are not distorted. Training's arrays and predict both use it, so they agree."""
    height, width = image.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    padded = cv2.copyMakeBorder(
        image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(padded, (size, size), interpolation=interpolation)


def model_outputs(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """The model called batch by batch, in inference mode. Keras' advice for inputs this small
    (one fold's evaluation images, one image to predict): `model.predict` first builds a graph,
    which for a few batches costs more than the calls themselves."""
    batches = [
        np.asarray(model(images[start : start + batch_size].astype(np.float32), training=False))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, *model.output_shape[1:]), np.float32)


def compiled_forward(model, *, frozen: bool = False):
    """`model(x, training=False)` as one `tf.function` with a fixed signature (None, H, W, 3) float32: any batch size
    reuses one trace, and a call costs the graph's arithmetic, not Keras' layer-by-layer eager dispatch (issue 35;
    bench/predict_floor.py: outputs within 4.4e-6 of the eager call's on the demo release). numpy in, numpy out;
    predict calls the classifiers and the U-Net through it.

    `frozen`: the weights made constants, so TensorFlow's graph optimiser folds each batch normalisation into its
    convolution (TensorFlow's own `convert_variables_to_constants_v2`). predict freezes the U-Net (a quarter of its
    time on the demo release, outputs within 2e-6); not the classifiers, where it took loading from 12 to 30 s and
    peak memory from 1.4 to 4.2 GB (BENCHMARKS.md)."""
    import tensorflow as tf

    spec = [tf.TensorSpec((None, *tuple(model.input_shape[1:])), tf.float32)]
    graph = tf.function(lambda x: model(x, training=False), input_signature=spec, reduce_retracing=True)
    if not frozen:
        return lambda x: graph(np.asarray(x, np.float32)).numpy()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    constant = convert_variables_to_constants_v2(graph.get_concrete_function())
    return lambda x: constant(tf.constant(np.asarray(x, np.float32)))[0].numpy()


def class_probabilities(output: np.ndarray, head: str) -> np.ndarray:
    """(images, classes) probabilities from a model's output: a sigmoid head's one column becomes two."""
    if head == "sigmoid":
        positive = np.asarray(output).reshape(-1)
        return np.stack([1 - positive, positive], axis=1)
    return np.asarray(output)
