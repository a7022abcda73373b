"""Fine-tuning one stage: seeded tf.data feed, head warm-up, then fine-tuning; weight carry-over.

Keras 3 trap handled here: after single layers were frozen, `base.trainable = True` on an
already-trainable model changes nothing, so every layer's flag is set and the model recompiled.

Batch norm and random initialisation: a backbone built without ImageNet weights starts with the
default moving statistics (mean 0, variance 1), so in inference mode (frozen layers, evaluation)
its activations shrink layer after layer (Xception's pooled features ~1e-5 of the input's scale)
and every image gets the same prediction. `calibrate_batchnorm` sets the statistics from the
training images instead: before training a random backbone (a data-dependent initialisation), and
after training for the layers that were trained, whose running averages lag behind a short fit
(Wu and Johnson 2021, "precise BN"). Only training images are used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from leukemia_mtl.config import TrainConfig

log = logging.getLogger(__name__)


def encode_labels(labels: np.ndarray, classes: tuple[str, ...], head: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels.tolist()) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the classes {list(classes)}")
    y = np.array([index[label] for label in labels.tolist()], dtype=np.int32)
    return y.astype(np.float32) if head == "sigmoid" else y


def balanced_sample_weights(y: np.ndarray, n_classes: int) -> tuple[np.ndarray, dict[int, float]]:
    """Per-image weights under which every class present weighs the same in the loss
    (scikit-learn's "balanced" class weights), and the weights per class."""
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(y).astype(int)
    present = np.unique(y)
    weights = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=y).tolist()))
    per_class = {c: float(weights.get(c, 0.0)) for c in range(n_classes)}
    return np.array([per_class[c] for c in y.tolist()], np.float32), per_class


def make_dataset(
    x, y: np.ndarray, batch_size: int, seed: int, *, shuffle: bool, sample_weight: np.ndarray | None = None
):
    """uint8 images stay uint8 in memory; the cast to float happens per batch, in parallel.
    `x` may also be a tuple of arrays (a model with several inputs: cached frozen features)."""
    import tensorflow as tf

    x = tuple(x) if isinstance(x, (list, tuple)) else x
    parts = (x, y) if sample_weight is None else (x, y, np.asarray(sample_weight, np.float32))
    data = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        data = data.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return (
        data.batch(batch_size)
        .map(
            lambda images, *rest: (tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), images), *rest),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


@dataclass
class FrozenSplit:
    """A classifier cut where its frozen layers end: `features` maps raw RGB to the tensors that cross
    from the frozen part into the trainable part; `trainable` maps those to the classifier's output,
    sharing its layers (training it trains the classifier)."""

    features: object
    trainable: object
    frozen_layers: int
    feature_shapes: list[tuple[int, ...]]

    def bytes_for(self, images: int) -> int:
        return images * sum(int(np.prod(shape)) for shape in self.feature_shapes) * 4


def split_at_frozen(model) -> FrozenSplit | None:
    """The cut between the backbone's leading frozen layers and the rest (None: nothing frozen, or the
    layer order is not one a cut can follow). Frozen layers run in inference mode (batch norm on its
    moving statistics, no dropout), so their output per image never changes while the rest trains:
    computed once, it serves every epoch."""
    import keras

    backbone = model.get_layer("backbone")
    layers = backbone.layers
    frozen = next((i for i, layer in enumerate(layers) if layer.trainable), len(layers))
    if not any(layer.weights for layer in layers[:frozen]):
        return None
    frozen_ids = {id(layer) for layer in layers[:frozen]}
    edges = _graph_edges(backbone.outputs)
    if any(id(consumer) in frozen_ids and id(_producer(tensor)) not in frozen_ids for tensor, consumer in edges):
        return None  # a frozen layer fed by a trainable one: no clean cut in this order
    if frozen == len(layers):  # the whole backbone frozen (a head-only warm-up): cut at its output
        crossing = list(backbone.outputs)
    else:
        crossing = []
        for tensor, consumer in edges:
            if (
                id(_producer(tensor)) in frozen_ids
                and id(consumer) not in frozen_ids
                and all(tensor is not t for t in crossing)
            ):
                crossing.append(tensor)
        if any(id(_producer(tensor)) in frozen_ids for tensor in backbone.outputs):
            return None  # a frozen tensor leaves the backbone beside trainable ones
    rgb = keras.Input(model.input.shape[1:], name="rgb")
    one = len(crossing) == 1  # a single tensor, not a list of one: Keras matches the structure
    frozen_part = keras.Model(backbone.input, crossing[0] if one else crossing)
    features = keras.Model(rgb, frozen_part(model.get_layer("preprocess_input")(rgb)), name="frozen_features")
    inputs = [keras.Input(tensor.shape[1:], name=f"frozen_{k}") for k, tensor in enumerate(crossing)]
    backbone_out = (
        inputs[0]
        if frozen == len(layers)
        else keras.Model(crossing[0] if one else crossing, backbone.outputs[0])(inputs[0] if one else inputs)
    )
    head = keras.Model(model.get_layer("gap").input, model.output)
    trainable = keras.Model(inputs[0] if one else inputs, head(backbone_out), name="trainable_part")
    return FrozenSplit(features, trainable, frozen, [tuple(t.shape[1:]) for t in crossing])


def _producer(tensor):
    return tensor._keras_history.operation


def _graph_edges(outputs) -> list[tuple[object, object]]:
    """(tensor, the layer it feeds) over the model's own graph, walked back from its outputs: a layer's
    other nodes (it was called again, e.g. by an earlier split) are not part of it."""
    edges, seen, stack = [], {id(t) for t in outputs}, list(outputs)
    while stack:
        tensor = stack.pop()
        operation, node_index, _ = tensor._keras_history
        for source in operation._inbound_nodes[node_index].input_tensors:
            edges.append((source, operation))
            if id(source) not in seen:
                seen.add(id(source))
                stack.append(source)
    return edges


def frozen_features(split: FrozenSplit, images: np.ndarray, batch_size: int):
    """The frozen part's outputs for every image, in inference mode, batch by batch into arrays allocated once
    (no second copy while concatenating): one array, or a tuple of them where several tensors cross the cut (the
    trainable part's inputs, in order)."""
    arrays = tuple(np.empty((len(images), *shape), np.float32) for shape in split.feature_shapes)
    for start in range(0, len(images), batch_size):
        batch = split.features(images[start : start + batch_size].astype(np.float32), training=False)
        for store, part in zip(arrays, batch if isinstance(batch, (list, tuple)) else [batch]):
            store[start : start + len(part)] = np.asarray(part, np.float32)
    return arrays[0] if len(arrays) == 1 else arrays


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of the model, nested backbones included."""
    import keras

    found = []

    def walk(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        for inner in getattr(layer, "layers", []):
            walk(inner)

    walk(model)
    return found


def calibrate_batchnorm(model, images: np.ndarray, layers: list, batch_size: int, limit: int, seed: int) -> int:
    """Set the moving statistics of `layers` to their statistics over (at most `limit` of) `images`;
    returns how many images were used.

    Keras updates a layer's moving statistics in a training-mode call as
    moving = moving * momentum + batch * (1 - momentum); with momentum (k-1)/k for the k-th batch
    they become the mean over the batches. Every other batch-norm layer stays in inference mode, so
    its statistics and its output are untouched; weights do not change.
    """
    if not layers or not len(images) or limit <= 0:
        return 0
    # in random order: training arrays hold the originals, then each class's copies, and a batch of one
    # class would be normalised by that class's statistics (and its variance would miss the classes')
    sample = images[np.random.default_rng(seed).permutation(len(images))[:limit]]
    targets = {id(layer) for layer in layers}
    saved = [(layer, layer.trainable, layer.momentum) for layer in batchnorm_layers(model)]
    try:
        for layer, _, _ in saved:
            layer.trainable = id(layer) in targets  # training mode for the targets only
        for k, start in enumerate(range(0, len(sample), batch_size), start=1):
            for layer in layers:
                layer.momentum = (k - 1) / k
            model(sample[start : start + batch_size].astype(np.float32), training=True)
    finally:
        for layer, trainable, momentum in saved:
            layer.trainable, layer.momentum = trainable, momentum
    return len(sample)


def set_backbone_trainable(model, trainable: bool, frozen_fraction: float = 0.0) -> None:
    """Every backbone layer's flag (see the module docstring); the first `frozen_fraction` of the
    layers stay frozen even when fine-tuning."""
    if not 0.0 <= frozen_fraction < 1.0:
        raise ValueError(f"train.frozen_fraction must be in [0, 1), got {frozen_fraction}")
    backbone = model.get_layer("backbone")
    backbone.trainable = True
    frozen = int(len(backbone.layers) * frozen_fraction)
    for position, layer in enumerate(backbone.layers):
        layer.trainable = trainable and position >= frozen


def compile_classifier(model, cfg: TrainConfig, head: str) -> None:
    import keras

    schedule = keras.optimizers.schedules.ExponentialDecay(cfg.learning_rate, cfg.decay_steps, cfg.decay_rate)
    loss = keras.losses.BinaryCrossentropy() if head == "sigmoid" else keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])


def carry_over(previous, model) -> list[str]:
    """Copy the backbone from the previous stage. The dense layers and the head start afresh, as in
    the paper ("after the transition from single to multiple cells ... network layers were
    eliminated and replaced by multiple dense layers"): a dense layer trained for blast vs normal
    would carry that one direction into a task that must tell L2 from L3 (BENCHMARKS.md)."""
    source, target = previous.get_layer("backbone"), model.get_layer("backbone")
    if [w.shape for w in source.get_weights()] != [w.shape for w in target.get_weights()]:
        raise ValueError("the previous stage's backbone does not fit this model (another backbone or input size)")
    target.set_weights(source.get_weights())
    return ["backbone"]


class EpochTimer:
    """Seconds per epoch; the first epoch of a phase carries graph building and is reported apart."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self._started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._started)

        return _Timer()


@dataclass
class FitResult:
    history: dict[str, list[float]]
    seconds: float
    images_per_second: float  # steady fine-tuning epochs, graph building excluded; 0 = not measurable
    first_epochs_seconds: float = 0.0  # the first epoch of each phase: it traces the training step
    steady_epochs_seconds: float = 0.0
    best_epoch: int | None = None  # 1-based, by the lowest validation loss; None without validation
    calibrated: dict[str, int] | None = None  # images used to set batch-norm statistics, before and after
    warmup_epochs: int = 0  # the history's first epochs, head-only on the frozen backbone
    frozen_features_seconds: float = 0.0  # computing the frozen part's features, once per phase
    frozen_features: list[dict] = field(default_factory=list)  # per phase that reused them: layers, images, MB, seconds


def fit_stage(
    model,
    x_train,
    y_train,
    x_val,
    y_val,
    cfg: TrainConfig,
    head: str,
    seed: int,
    *,
    sample_weight: np.ndarray | None = None,
    val_sample_weight: np.ndarray | None = None,
    random_backbone: bool = False,
    verbose: int = 2,
) -> FitResult:
    """Head-only warm-up on the frozen backbone, then fine-tuning with early stopping.

    (x_val, y_val) is the inner validation split of the training part (never the evaluation fold):
    it alone decides when to stop and which epoch's weights are kept. Without it (None or empty)
    every epoch runs and the last weights are kept.
    """
    import keras

    keras.utils.set_random_seed(seed)
    calibrated = {"before": 0, "after": 0}
    if random_backbone:  # a data-dependent start: every layer's statistics from the training images
        calibrated["before"] = calibrate_batchnorm(
            model, x_train, batchnorm_layers(model), cfg.inference_batch_size, cfg.batchnorm_calibration_images, seed
        )
    validating = x_val is not None and len(x_val) > 0
    image_feeds = None  # the images' tf.data feeds (a copy of them), built where a phase runs the whole backbone
    history: dict[str, list[float]] = {}
    started = time.time()
    phases = [(False, cfg.warmup_epochs, []), (True, cfg.epochs, [])]
    stopper = None
    if cfg.early_stopping_patience and validating:
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=cfg.restore_best_weights
        )
        phases[1][2].append(stopper)
    steady: list[float] = []
    first_epochs = later_epochs = feature_seconds = 0.0
    reuse: list[dict] = []  # per phase where the frozen part's features were computed once
    warmup_epochs = 0
    for trainable, epochs, callbacks in phases:
        if not epochs:
            continue
        set_backbone_trainable(model, trainable, cfg.frozen_fraction)
        fitting, train_data, validation_data = model, None, None  # the previous phase's features freed first
        split = split_at_frozen(model) if cfg.frozen_features_mb else None
        if cfg.frozen_features_mb and split is None:
            log.info(
                "%s: no frozen layers to cut at: every epoch runs the whole backbone",
                "fine-tuning" if trainable else "warm-up",
            )
        n_images = len(x_train) + (len(x_val) if validating else 0)
        if split is not None and split.bytes_for(n_images) > cfg.frozen_features_mb * 2**20:
            log.info(
                "frozen features of %d images would take %.0f MB (train.frozen_features_mb=%d): "
                "every epoch runs the whole backbone",
                n_images,
                split.bytes_for(n_images) / 2**20,
                cfg.frozen_features_mb,
            )
            split = None
        if split is not None:
            computing = time.perf_counter()
            train_data = make_dataset(
                frozen_features(split, x_train, cfg.inference_batch_size),
                y_train,
                cfg.batch_size,
                seed,
                shuffle=True,
                sample_weight=sample_weight,
            )
            validation_data = (
                make_dataset(
                    frozen_features(split, x_val, cfg.inference_batch_size),
                    y_val,
                    cfg.batch_size,
                    seed,
                    shuffle=False,
                    sample_weight=val_sample_weight,
                )
                if validating
                else None
            )
            seconds = time.perf_counter() - computing
            feature_seconds += seconds
            reuse.append(
                {
                    "phase": "fine-tuning" if trainable else "warm-up",
                    "frozen_layers": split.frozen_layers,
                    "images": n_images,
                    "megabytes": round(split.bytes_for(n_images) / 2**20, 1),
                    "seconds": round(seconds, 2),
                }
            )
            log.info(
                "%s: the first %d backbone layers are frozen; their features of %d images (%.0f MB) computed "
                "once in %.1f s serve every epoch (up to %d)",
                reuse[-1]["phase"],
                split.frozen_layers,
                n_images,
                reuse[-1]["megabytes"],
                seconds,
                epochs,
            )
            fitting = split.trainable
        else:
            if image_feeds is None:  # one pair for every such phase: the shuffle goes on from phase to phase
                image_feeds = (
                    make_dataset(x_train, y_train, cfg.batch_size, seed, shuffle=True, sample_weight=sample_weight),
                    make_dataset(x_val, y_val, cfg.batch_size, seed, shuffle=False, sample_weight=val_sample_weight)
                    if validating
                    else None,
                )
            train_data, validation_data = image_feeds
        compile_classifier(fitting, cfg, head)
        timer = EpochTimer()
        fitted = fitting.fit(
            train_data,
            validation_data=validation_data,
            epochs=epochs,
            verbose=verbose,
            callbacks=[*callbacks, timer],
            shuffle=False,
        )
        for name, values in fitted.history.items():
            history.setdefault(name, []).extend(float(v) for v in values)
        if not trainable:
            warmup_epochs = len(fitted.history.get("loss", []))
        first_epochs += timer.seconds[0] if timer.seconds else 0.0
        later_epochs += sum(timer.seconds[1:])
        if trainable:  # the fine-tuning phase is what costs; its first epoch also builds the graph
            steady = timer.seconds[1:]  # one epoch alone cannot tell training from graph building
    trained_norms = [layer for layer in batchnorm_layers(model) if layer.trainable]
    calibrated["after"] = calibrate_batchnorm(
        model, x_train, trained_norms, cfg.inference_batch_size, cfg.batchnorm_calibration_images, seed
    )
    seconds = time.time() - started
    per_epoch = float(np.median(steady)) if steady else 0.0
    best_epoch = None  # the epoch whose weights the model ends with
    if validating and history.get("val_loss"):
        losses = history["val_loss"]
        restored = stopper is not None and cfg.restore_best_weights
        best_epoch = cfg.warmup_epochs + int(np.argmin(losses[cfg.warmup_epochs :])) + 1 if restored else len(losses)
    return FitResult(
        history=history,
        seconds=seconds,
        images_per_second=len(x_train) / per_epoch if per_epoch else 0.0,
        first_epochs_seconds=first_epochs,
        steady_epochs_seconds=later_epochs,
        best_epoch=best_epoch,
        calibrated=calibrated,
        warmup_epochs=warmup_epochs,
        frozen_features_seconds=feature_seconds,
        frozen_features=reuse,
    )
