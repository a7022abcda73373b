"""Grad-CAM heat maps: where in an image a classifier found the evidence for a class.

Grad-CAM (Selvaraju et al. 2017) weighs each channel of a convolutional feature map by the mean
gradient of the class score over the map's positions, sums the weighted channels and keeps the
positive part: the regions that raise the score. It is computed here with `tf.GradientTape` on
the classifier as `build_classifier` makes it (rescaling -> backbone -> pooling -> head).

Which feature map: the paper's backbones end in a map of 8x8 positions at 299 px, but of 1x1 to
3x3 at the demo's 71-80 px, where a heat map says nothing about *where*. So the map is the
backbone's last block with at least `min_side` positions a side (config `evaluate.explain_min_side`):
the last block itself at the paper's size, an earlier one at small inputs. Of the layers at that
resolution the latest with the most channels is taken: a block's output (InceptionV3's `mixed2`,
InceptionResNetV2's `block35_10_ac`), not one branch of the next block.
"""

from __future__ import annotations

import cv2
import numpy as np

from leukemia_mtl import report
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import write_image

BACKBONE_LAYER = "backbone"
HEAD_LAYERS = ("gap", "dropout_dense", "dense", "dropout_head", "head")


class ExplainError(LeukemiaMtlError):
    """A model Grad-CAM cannot explain (no convolutional feature map, not one of ours)."""


def feature_layer(backbone, min_side: int):
    """The layer whose output the heat map is made of (see the module docstring)."""
    candidates = []  # (side, position, channels, layer) of every 4-D output
    for position, layer in enumerate(backbone.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is None or len(shape) != 4 or shape[1] is None:
            continue
        candidates.append((int(min(shape[1], shape[2])), position, int(shape[3]), layer))
    if not candidates:
        raise ExplainError(f"{backbone.name}: no convolutional feature map to explain with")
    wide = [c for c in candidates if c[0] >= min_side]
    side = min(c[0] for c in wide) if wide else max(c[0] for c in candidates)
    at_side = [c for c in candidates if c[0] == side]
    most = max(c[2] for c in at_side)
    return max((c for c in at_side if c[2] == most), key=lambda c: c[1])[3]


class GradCam:
    """Heat maps of one classifier; built once (a second model sharing the weights), used per batch."""

    def __init__(self, model, min_side: int = 7) -> None:
        import keras

        try:
            backbone = model.get_layer(BACKBONE_LAYER)
        except ValueError:
            raise ExplainError(
                f"{model.name}: not a classifier built by leukemia_mtl (no {BACKBONE_LAYER!r} layer)"
            ) from None
        self.layer = feature_layer(backbone, min_side)
        inner = keras.Model(backbone.inputs, [self.layer.output, backbone.output], name="backbone_with_features")
        inputs = keras.Input(model.input_shape[1:], name="rgb")
        x = model.get_layer("preprocess_input")(inputs)
        features, x = inner(x)
        names = {layer.name for layer in model.layers}
        for name in HEAD_LAYERS:
            if name in names:
                x = model.get_layer(name)(x)
        self.model = keras.Model(inputs, [features, x], name=f"{model.name}_gradcam")
        self.sigmoid = model.output_shape[-1] == 1
        self.map_side = int(self.layer.output.shape[1])

    def heatmaps(
        self, images: np.ndarray, class_index: int | np.ndarray, together: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """((n, h, w) heat maps in [0, 1] at the images' size, (n,) probabilities of the class) for
        uint8 RGB images (n, h, w, 3). `class_index`: one class for all, or one per image. Each map is scaled
        to its own peak, or with `together` all to the batch's (a smear's cells: which of them carry the evidence)."""
        import tensorflow as tf

        images = np.asarray(images)
        wanted = np.broadcast_to(np.asarray(class_index, np.int32), (len(images),))
        x = tf.convert_to_tensor(images.astype(np.float32))
        with tf.GradientTape() as tape:
            features, output = self.model(x, training=False)
            features = tf.cast(features, tf.float32)
            output = tf.cast(output, tf.float32)
            if self.sigmoid:  # one unit: the positive class's probability, or its complement
                positive = output[:, 0]
                score = tf.where(tf.constant(wanted == 1), positive, 1.0 - positive)
            else:
                score = tf.gather(output, tf.constant(wanted), axis=1, batch_dims=1)
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1)).numpy()
        height, width = images.shape[1:3]
        maps = np.zeros((len(images), height, width), np.float32)
        for i, cam in enumerate(cams):
            peak = float(cams.max() if together else cam.max())
            if peak > 0:  # all zero: nothing in the image raises this class's score
                maps[i] = cv2.resize(cam / peak, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        return maps, score.numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The heat map (OpenCV's JET: blue low, red high) over an RGB image, as opaque as it is high: where
    there is no evidence the image shows as it is."""
    if heatmap.shape != image.shape[:2]:
        heatmap = cv2.resize(heatmap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    colour = cv2.cvtColor(cv2.applyColorMap((heatmap * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    weight = (alpha * np.sqrt(heatmap))[..., None]  # sqrt: a weak region still shows
    return (image.astype(np.float32) * (1 - weight) + colour.astype(np.float32) * weight).round().astype(np.uint8)


def sure_and_unsure(probabilities: np.ndarray, labels: np.ndarray, per_class: int = 1) -> list[tuple[int, int, str]]:
    """(class, index, "most sure" | "least sure") of the held-out images of each class whose own-class
    probability is highest and lowest: what the report shows the heat maps of."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels).astype(int)
    picks = []
    for cls in range(probabilities.shape[1]):
        mine = np.flatnonzero(labels == cls)
        if not len(mine):
            continue
        order = mine[np.argsort(-probabilities[mine, cls], kind="stable")]
        chosen = [(i, "most sure") for i in order[:per_class]]
        chosen += [(i, "least sure") for i in order[::-1][:per_class] if i not in {c for c, _ in chosen}]
        picks += [(cls, int(i), why) for i, why in chosen]
    return picks


class HeatMapper:
    """Heat maps of model inputs put back into the image they came from: a cell crop's where its window
    was cut (its cell's pixels only), a squared image's with the padding taken off. Overlaps keep the maximum."""

    def __init__(self, shape: tuple[int, int], input_size: int) -> None:
        self.heatmap = np.zeros(shape, np.float32)
        self.input_size = input_size

    def add_crop(self, cam: np.ndarray, window: tuple[int, int, int], crop: np.ndarray) -> None:
        x0, y0, side = window
        if side <= 0:
            return
        cam = cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR)
        cell = cv2.resize((crop.max(axis=2) > 0).astype(np.uint8), (side, side), interpolation=cv2.INTER_NEAREST)
        cam = cam * cell
        height, width = self.heatmap.shape
        top, left = max(y0, 0), max(x0, 0)
        bottom, right = min(y0 + side, height), min(x0 + side, width)
        if bottom <= top or right <= left:
            return
        region = self.heatmap[top:bottom, left:right]
        np.maximum(region, cam[top - y0 : bottom - y0, left - x0 : right - x0], out=region)

    def add_squared(self, cam: np.ndarray) -> None:
        """The map of `train.data.square(image)`: padded to a square with black, then resized."""
        height, width = self.heatmap.shape
        side = max(height, width)
        top, left = (side - height) // 2, (side - width) // 2
        full = cv2.resize(cam, (side, side), interpolation=cv2.INTER_LINEAR)[top : top + height, left : left + width]
        np.maximum(self.heatmap, full, out=self.heatmap)


def write_heatmap_panels(rgb: np.ndarray, panels: list[tuple[str, np.ndarray]], path, max_width: int = 900):
    """One PNG: per model, the image with its heat map blended over it and a title band (what the map is
    for); a scale at the foot (blue: no evidence for the class, red: the most)."""
    factor = min(1.0, max_width / rgb.shape[1])
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    scale = max(0.5, size[0] / 900)
    thickness = max(1, round(scale * 1.5))
    band = int(34 * scale)
    if not panels:
        panels = [("no white cell found: nothing to explain", np.zeros(rgb.shape[:2], np.float32))]
    tiles = []
    for title, heatmap in panels:
        tile = overlay(small, cv2.resize(heatmap, size, interpolation=cv2.INTER_LINEAR).clip(0, 1))
        tile = cv2.copyMakeBorder(tile, band, 0, 0, 4, cv2.BORDER_CONSTANT, value=(20, 20, 20))
        cv2.putText(
            tile,
            f"Grad-CAM, {title}",
            (8, int(band * 0.7)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * 0.7,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
        tiles.append(tile)
    canvas = np.hstack(tiles)
    ramp = np.tile(np.linspace(0, 1, canvas.shape[1] // 3, dtype=np.float32), (band // 2, 1))
    legend = np.full((band, canvas.shape[1], 3), 20, np.uint8)
    legend[band // 4 : band // 4 + ramp.shape[0], 8 : 8 + ramp.shape[1]] = overlay(
        np.full((*ramp.shape, 3), 128, np.uint8), ramp
    )
    cv2.putText(
        legend,
        "low  ->  high evidence for the class",
        (16 + ramp.shape[1], int(band * 0.7)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale * 0.6,
        (230, 230, 230),
        thickness,
        cv2.LINE_AA,
    )
    return write_image(path, np.vstack([canvas, legend]))


def examples_figure(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    title: str,
    min_side: int = 7,
    per_class: int = 1,
) -> bytes | None:
    """PNG: per class (a row), the held-out images the model was most and least sure of, each beside its
    Grad-CAM for its true class; None when nothing was held out."""
    picks = sure_and_unsure(probabilities, labels, per_class) if len(images) else []
    if not picks:
        return None
    explainer = GradCam(model, min_side)
    indices = np.array([i for _, i, _ in picks])
    maps, _ = explainer.heatmaps(images[indices], np.array([c for c, _, _ in picks]))
    rows = sorted({c for c, _, _ in picks})
    columns = 2 * max(sum(1 for c, _, _ in picks if c == row) for row in rows)
    fig, axes = report.new_figure(len(rows), columns, (2.1 * columns, 2.4 * len(rows) + 0.6))
    for ax in axes.ravel():
        ax.axis("off")
    placed = dict.fromkeys(rows, 0)
    for (cls, index, why), heatmap in zip(picks, maps):
        r, c = rows.index(cls), placed[cls]
        placed[cls] += 2
        axes[r][c].imshow(images[index])
        axes[r][c].set_title(f"{classes[cls]}, {why}\nP({classes[cls]}) = {probabilities[index, cls]:.2f}", fontsize=9)
        axes[r][c + 1].imshow(overlay(images[index], heatmap))
        axes[r][c + 1].set_title("Grad-CAM", fontsize=9)
    fig.suptitle(
        f"{title}\n(heat maps of layer {explainer.layer.name}, {explainer.map_side}x{explainer.map_side}; red: "
        "the evidence for the true class)",
        fontsize=10,
    )
    return report.figure_png(fig)
