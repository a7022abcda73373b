"""Fine-tuning one stage: seeded tf.data feed, head warm-up, then fine-tuning; weight carry-over.

Keras 3 trap handled here: after single layers were frozen, `base.trainable = True` on an
already-trainable model changes nothing, so every layer's flag is set and the model recompiled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

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


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, *, shuffle: bool):
    """uint8 images stay uint8 in memory; the cast to float happens per batch, in parallel."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return (
        data.batch(batch_size)
        .map(lambda images, labels: (tf.cast(images, tf.float32), labels), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


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
    """Copy the backbone (and the dense layer, where shapes match) from the previous stage."""
    copied = []
    for name in ("backbone", "dense"):
        try:
            source, target = previous.get_layer(name), model.get_layer(name)
        except ValueError:
            continue
        if [w.shape for w in source.get_weights()] == [w.shape for w in target.get_weights()]:
            target.set_weights(source.get_weights())
            copied.append(name)
    if "backbone" not in copied:
        raise ValueError("the previous stage's backbone does not fit this model (another backbone or input size)")
    return copied


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


def fit_stage(model, x_train, y_train, x_eval, y_eval, cfg: TrainConfig, head: str, seed: int, *, verbose: int = 2) -> FitResult:
    """Head-only warm-up on the frozen backbone, then fine-tuning with early stopping."""
    import keras

    keras.utils.set_random_seed(seed)
    train = make_dataset(x_train, y_train, cfg.batch_size, seed, shuffle=True)
    evaluation = make_dataset(x_eval, y_eval, cfg.batch_size, seed, shuffle=False)
    history: dict[str, list[float]] = {}
    started = time.time()
    phases = [(False, cfg.warmup_epochs, []), (True, cfg.epochs, [])]
    if cfg.early_stopping_patience:
        phases[1][2].append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=cfg.restore_best_weights))
    steady: list[float] = []
    first_epochs = later_epochs = 0.0
    for trainable, epochs, callbacks in phases:
        if not epochs:
            continue
        set_backbone_trainable(model, trainable, cfg.frozen_fraction)
        compile_classifier(model, cfg, head)
        timer = EpochTimer()
        fitted = model.fit(train, validation_data=evaluation, epochs=epochs, verbose=verbose,
                           callbacks=[*callbacks, timer], shuffle=False)
        for name, values in fitted.history.items():
            history.setdefault(name, []).extend(float(v) for v in values)
        first_epochs += timer.seconds[0] if timer.seconds else 0.0
        later_epochs += sum(timer.seconds[1:])
        if trainable:  # the fine-tuning phase is what costs; its first epoch also builds the graph
            steady = timer.seconds[1:]  # one epoch alone cannot tell training from graph building
    seconds = time.time() - started
    per_epoch = float(np.median(steady)) if steady else 0.0
    return FitResult(history, seconds, len(x_train) / per_epoch if per_epoch else 0.0, first_epochs, later_epochs)
