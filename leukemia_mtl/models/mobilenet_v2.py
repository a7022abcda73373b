"""torchvision's MobileNetV2 rebuilt in Keras, so its ImageNet weights serve without torch.

Keras' own MobileNetV2 pads stride-2 convolutions asymmetrically ('same' padding; TensorFlow puts
the extra row at the bottom) and uses other batch-norm settings, so torchvision's weights give
wrong features in it. This model pads like PyTorch (one pixel on every side of every 3x3
convolution) and keeps torchvision's epsilon, layer for layer. Its inputs are already
normalised the torchvision way, (x / 255 - mean) / std; the caller adds that as a layer.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

# torchvision's inverted residual settings: expansion t, output channels c, repeats n, first stride s
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS, LAST_CHANNELS = 32, 1280
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5  # PyTorch's default (Keras' is 1e-3)
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1, in Keras' convention; matters only when fine-tuning


def _blocks() -> list[tuple[int, int, int, int, int]]:
    """(block number = torchvision's features index, expansion, in channels, out channels, stride)."""
    blocks, channels = [], STEM_CHANNELS
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        for i in range(n):
            blocks.append((len(blocks) + 1, t, channels, c, s if i == 0 else 1))
            channels = c
    return blocks


def torchvision_module_names(include_top: bool = False) -> dict[str, str]:
    """Keras layer name -> torchvision module path: the one place the two naming schemes meet."""
    names = {"stem_conv": "features.0.0", "stem_conv_bn": "features.0.1"}
    for block, t, *_ in _blocks():
        parts = (["expand"] if t != 1 else []) + ["depthwise"]
        for k, part in enumerate(parts):  # Conv2dNormActivation: conv at .0, batch norm at .1
            names[f"block{block}_{part}"] = f"features.{block}.conv.{k}.0"
            names[f"block{block}_{part}_bn"] = f"features.{block}.conv.{k}.1"
        names[f"block{block}_project"] = f"features.{block}.conv.{len(parts)}"  # plain conv, then batch norm
        names[f"block{block}_project_bn"] = f"features.{block}.conv.{len(parts) + 1}"
    last = len(_blocks()) + 1
    names.update({"last_conv": f"features.{last}.0", "last_conv_bn": f"features.{last}.1"})
    if include_top:
        names["predictions"] = "classifier.1"
    return names


def build_mobilenet_v2(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    include_top: bool = False,
    classes: int = 1000,
    name: str = "backbone",
    activation: str | None = None,
):
    """torchvision's `mobilenet_v2` as a Keras functional model (top: logits unless `activation`)."""
    import keras
    from keras import layers

    def conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, relu: bool = True, depthwise: bool = False):
        if kernel == 3:  # PyTorch's padding=1: symmetric, whatever the stride
            x = layers.ZeroPadding2D(1, name=f"{prefix}_pad")(x)
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="valid", use_bias=False, name=prefix)(x)
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="valid", use_bias=False, name=prefix)(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=f"{prefix}_bn")(x)
        return layers.ReLU(6.0, name=f"{prefix}_relu")(x) if relu else x

    inputs = keras.Input(shape=input_shape, name="normalised_rgb")
    x = conv_bn(inputs, STEM_CHANNELS, 3, 2, "stem_conv")
    for block, t, cin, cout, stride in _blocks():
        shortcut = x
        if t != 1:
            x = conv_bn(x, cin * t, 1, 1, f"block{block}_expand")
        x = conv_bn(x, cin * t, 3, stride, f"block{block}_depthwise", depthwise=True)
        x = conv_bn(x, cout, 1, 1, f"block{block}_project", relu=False)
        if stride == 1 and cin == cout:
            x = layers.Add(name=f"block{block}_add")([shortcut, x])
    x = conv_bn(x, LAST_CHANNELS, 1, 1, "last_conv")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="dropout")(x)
        x = layers.Dense(classes, activation=activation, name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def load_torchvision_state(model, state: dict[str, np.ndarray]) -> int:
    """Copy a torchvision state dict into `model`; every weight set once, every key used. Returns arrays copied."""
    from keras import layers

    include_top = any(layer.name == "predictions" for layer in model.layers)
    modules, used, assigned = torchvision_module_names(include_top), set(), set()

    def take(key: str, variable, transpose: tuple[int, ...] | None = None) -> None:
        if key not in state:
            raise ValueError(f"state dict has no {key} (for {variable.path})")
        value = np.asarray(state[key], dtype="float32")
        value = value.transpose(transpose) if transpose else value
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{key}: shape {value.shape} does not fit {variable.path} {tuple(variable.shape)}")
        if variable.path in assigned:
            raise ValueError(f"{key}: {variable.path} would be assigned twice")
        variable.assign(value)
        used.add(key)
        assigned.add(variable.path)

    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in modules:
            raise ValueError(f"layer {layer.name} has no torchvision counterpart")
        module = modules[layer.name]
        if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            take(f"{module}.weight", layer.kernel, (2, 3, 0, 1))
        elif isinstance(layer, layers.Conv2D):  # OIHW -> HWIO
            take(f"{module}.weight", layer.kernel, (2, 3, 1, 0))
        elif isinstance(layer, layers.BatchNormalization):
            for variable, field in (
                (layer.gamma, "weight"),
                (layer.beta, "bias"),
                (layer.moving_mean, "running_mean"),
                (layer.moving_variance, "running_var"),
            ):
                take(f"{module}.{field}", variable)
        elif isinstance(layer, layers.Dense):  # Linear stores (out, in)
            take(f"{module}.weight", layer.kernel, (1, 0))
            take(f"{module}.bias", layer.bias)
        else:
            raise ValueError(f"layer {layer.name}: cannot load a {type(layer).__name__}")
    unassigned = [v.path for v in model.weights if v.path not in assigned]
    if unassigned:
        raise ValueError(f"model weights left unassigned: {', '.join(unassigned[:5])}")
    unused = sorted(
        k
        for k in state
        if k not in used and not k.endswith(".num_batches_tracked") and (include_top or not k.startswith("classifier."))
    )
    if unused:
        raise ValueError(f"state dict keys the model has no place for: {', '.join(unused[:5])}")
    return len(used)


def convert_torchvision_file(pth_path: Path | str, out_path: Path | str) -> None:
    """torchvision's legacy .pth -> Keras .weights.h5 of the no-top backbone (any input size loads it)."""
    from leukemia_mtl.models.torch_files import read_torch_state_dict

    out_path = Path(out_path)
    if not out_path.name.endswith(".weights.h5"):
        raise ValueError(f"{out_path}: Keras weights files must end with .weights.h5")
    model = build_mobilenet_v2((224, 224, 3), include_top=False)
    load_torchvision_state(model, read_torch_state_dict(pth_path))
    tmp = out_path.with_name(f".{out_path.name[: -len('.weights.h5')]}.{secrets.token_hex(4)}.tmp.weights.h5")
    try:
        model.save_weights(tmp)
        os.replace(tmp, out_path)  # readers see the old file or the whole new one, never half of one
    finally:
        tmp.unlink(missing_ok=True)
