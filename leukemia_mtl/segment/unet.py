"""A Residual U-Net after the paper (Fig. 5): residual units of two 3x3 convolutions with batch
normalisation and ReLU plus a 1x1 convolution shortcut; 2x2 max-pooling down; transposed
convolutions up with concatenation skips; a 1x1 convolution with sigmoid out.
"""

from __future__ import annotations

import keras
from keras import layers, ops

# Keras' default 0.99 needs hundreds of steps before the inference statistics forget their
# initial values; small segmentation runs take tens of steps per epoch.
BN_MOMENTUM = 0.9


def residual_unit(x, filters: int, name: str):
    """conv3x3-BN-ReLU, conv3x3-BN, plus a 1x1-conv shortcut, then ReLU."""
    shortcut = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_shortcut")(x)
    shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_shortcut_bn")(shortcut)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_residual_unet(patch_size: int, depth: int = 3, base_filters: int = 16) -> keras.Model:
    """Input: uint8-range RGB patches (patch_size x patch_size x 3); output: WBC probability."""
    if depth < 1 or patch_size % (2**depth):
        raise ValueError(f"patch_size {patch_size} must be divisible by 2**depth = {2**depth}")
    inputs = keras.Input((patch_size, patch_size, 3), name="rgb")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)  # preprocessing travels with the model
    skips = []
    for level in range(depth):
        x = residual_unit(x, base_filters * 2**level, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = residual_unit(x, base_filters * 2**depth, "bridge")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base_filters * 2**level, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = residual_unit(x, base_filters * 2**level, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="wbc_probability")(x)
    return keras.Model(inputs, outputs, name="residual_unet")


@keras.saving.register_keras_serializable(package="leukemia_mtl")
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy plus Dice over the batch (per-patch Dice is 0/0 on empty patches)."""
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred))
    return bce + keras.losses.dice(y_true, y_pred)


@keras.saving.register_keras_serializable(package="leukemia_mtl")
def dice_coefficient(y_true, y_pred):
    """Soft Dice over the batch, as a metric (1 - Keras' Dice loss)."""
    return 1.0 - keras.losses.dice(y_true, y_pred)


def compile_unet(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=bce_dice_loss,
        metrics=[dice_coefficient, keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5, name="iou")],
    )
    return model
