"""Training the Residual U-Net on patches: memory stays bounded however large the smears are."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np

from leukemia_mtl.config import SegmentConfig
from leukemia_mtl.devices import devices_for_training

log = logging.getLogger(__name__)


def to_working_scale(
    rgb: np.ndarray, mask: np.ndarray, scale: float, cfg: SegmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image and its mask to the segmenter's pixel scale."""
    factor = cfg.working_scale / scale
    if abs(factor - 1) < 1e-6:
        return rgb, mask
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
    small_mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return small, small_mask


def sample_patches(
    pairs: list[tuple[np.ndarray, np.ndarray]], cfg: SegmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`patches_per_image` patches per (rgb, mask) pair; a share is centred on white-cell pixels."""
    p, half = cfg.patch_size, cfg.patch_size // 2
    xs, ys = [], []
    for rgb, mask in pairs:
        padded_rgb = cv2.copyMakeBorder(rgb, half, half, half, half, cv2.BORDER_REFLECT_101)
        padded_mask = cv2.copyMakeBorder(mask, half, half, half, half, cv2.BORDER_CONSTANT, value=0)
        fg_y, fg_x = np.nonzero(mask)
        for _ in range(cfg.patches_per_image):
            if fg_y.size and rng.random() < cfg.foreground_patch_fraction:
                pick = int(rng.integers(fg_y.size))
                cy, cx = int(fg_y[pick]), int(fg_x[pick])
            else:
                cy, cx = int(rng.integers(mask.shape[0])), int(rng.integers(mask.shape[1]))
            xs.append(padded_rgb[cy : cy + p, cx : cx + p])
            ys.append(padded_mask[cy : cy + p, cx : cx + p])
    x = np.stack(xs).astype(np.uint8)
    y = (np.stack(ys)[..., None] > 0).astype(np.float32)
    return x, y


@dataclass
class TrainResult:
    model: object
    history: dict[str, list[float]]
    seconds: float
    train_patches: int
    val_patches: int


def train_unet(
    train_pairs: list[tuple[np.ndarray, np.ndarray]],
    val_pairs: list[tuple[np.ndarray, np.ndarray]],
    cfg: SegmentConfig,
    seed: int,
    *,
    verbose: int = 2,
) -> TrainResult:
    """Fit a fresh U-Net; `pairs` are (rgb, 0/255 mask) at the working scale. Seeded end to end."""
    import keras
    import tensorflow as tf

    from leukemia_mtl.segment.unet import build_residual_unet, compile_unet

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x_train, y_train = sample_patches(train_pairs, cfg, rng)
    train = (
        tf.data.Dataset.from_tensor_slices((x_train.astype(np.float32), y_train))
        .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
        .batch(cfg.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = None
    val_count = 0
    if val_pairs:
        x_val, y_val = sample_patches(val_pairs, cfg, np.random.default_rng(seed + 1))
        val_count = len(x_val)
        validation = tf.data.Dataset.from_tensor_slices((x_val.astype(np.float32), y_val)).batch(cfg.batch_size)

    strategy, devices = devices_for_training("off")  # the Dice loss stays in float32
    with strategy.scope():
        model = compile_unet(build_residual_unet(cfg.patch_size, cfg.depth, cfg.base_filters), cfg.learning_rate)
    log.info(
        "training the U-Net on %d patches (%d validation) for %d epochs on %s",
        len(x_train),
        val_count,
        cfg.epochs,
        devices,
    )
    started = time.time()
    # tf.data reshuffles every epoch with our seed; Keras must not try to shuffle it again
    history = model.fit(train, validation_data=validation, epochs=cfg.epochs, verbose=verbose, shuffle=False)
    seconds = time.time() - started
    curves = {name: [float(v) for v in values] for name, values in history.history.items()}
    return TrainResult(model, curves, seconds, len(x_train), val_count)
