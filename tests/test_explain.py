"""Grad-CAM: a model trained on a planted signal must point at it, and heat maps go back where their
inputs came from."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from leukemia_mtl.config import get_profile
from leukemia_mtl.explain import GradCam, HeatMapper, examples_figure, sure_and_unsure, write_heatmap_panels

SIZE, MARK = 71, 14


def _planted(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Pale pink fields with purple 'cells' in both classes; class 1 also has a bright yellow square
    somewhere: the only thing that tells the classes apart."""
    images, labels, corners = np.zeros((n, SIZE, SIZE, 3), np.uint8), np.arange(n) % 2, []
    for i in range(n):
        image = np.full((SIZE, SIZE, 3), (215, 170, 190), np.float32) + rng.normal(0, 8, (SIZE, SIZE, 3))
        for _ in range(3):
            x, y = rng.integers(8, SIZE - 8, 2)
            cv2.circle(image, (int(x), int(y)), int(rng.integers(5, 9)), (110, 60, 150), -1)
        row, col = (int(v) for v in rng.integers(2, SIZE - MARK - 2, 2))
        if labels[i]:
            image[row : row + MARK, col : col + MARK] = (255, 255, 120)
        corners.append((row, col))
        images[i] = image.clip(0, 255)
    return images, labels, corners


@pytest.fixture(scope="module")
def planted_model():
    import keras

    from leukemia_mtl.models.backbones import build_classifier, get_backbone, resolve_weights
    from leukemia_mtl.train.finetune import fit_stage

    rng = np.random.default_rng(0)
    (x, y, _), (x_val, y_val, _) = _planted(64, rng), _planted(16, rng)
    profile = get_profile("demo")
    keras.utils.set_random_seed(1)
    model = build_classifier(
        "Xception",
        SIZE,
        2,
        resolve_weights("none", get_backbone("Xception")),
        head="sigmoid",
        dense_units=profile.model.dense_units,
        dropout=profile.model.dropout,
    )
    # every layer tuned: with the demo's frozen 90 % the layers the heat map is read from stay random
    fit_stage(
        model,
        x_train=x,
        y_train=y.astype(np.float32),
        x_val=x_val,
        y_val=y_val.astype(np.float32),
        cfg=replace(profile.train, frozen_fraction=0.0),
        head="sigmoid",
        seed=1,
        random_backbone=True,
        verbose=0,
    )
    return model


@pytest.mark.slow
def test_the_heat_map_peaks_on_the_planted_mark(planted_model):
    images, labels, corners = _planted(16, np.random.default_rng(5))
    blast = np.asarray(planted_model(images.astype(np.float32), training=False))[:, 0]
    assert ((blast >= 0.5) == labels).mean() >= 0.85  # it learnt the mark: else the heat map explains nothing

    explainer = GradCam(planted_model, min_side=7)
    assert explainer.map_side >= 7  # not Xception's 3x3 exit flow at 71 px
    maps, scores = explainer.heatmaps(images, 1)
    assert maps.shape == (16, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    assert np.allclose(scores, blast, atol=1e-5)  # the class score is the model's own output
    hits, ratios = 0, []
    for i in np.flatnonzero(labels == 1):
        row, col = corners[i]
        peak_row, peak_col = np.unravel_index(maps[i].argmax(), maps[i].shape)
        hits += row - 4 <= peak_row < row + MARK + 4 and col - 4 <= peak_col < col + MARK + 4
        ratios.append(maps[i][row : row + MARK, col : col + MARK].mean() / maps[i].mean())
    assert hits >= 0.75 * (labels == 1).sum(), hits
    assert np.median(ratios) > 2.5, ratios  # the mark holds several times the map's mean

    figure = examples_figure(
        planted_model,
        images,
        labels,
        np.stack([1 - blast, blast], axis=1),
        ["normal", "blast"],
        "planted mark",
        per_class=1,
    )
    assert figure.startswith(b"\x89PNG")


def test_most_and_least_sure_are_per_class_and_never_the_same_image():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3]])
    labels = np.array([0, 0, 1, 1, 0])
    assert sure_and_unsure(probabilities, labels) == [
        (0, 0, "most sure"),
        (0, 1, "least sure"),
        (1, 2, "most sure"),
        (1, 3, "least sure"),
    ]
    assert sure_and_unsure(probabilities[:1], labels[:1]) == [(0, 0, "most sure")]  # one image: shown once


def test_heat_maps_go_back_where_the_crop_was_cut_and_the_square_unpadded(tmp_path):
    from leukemia_mtl.train.data import square

    mapper = HeatMapper((100, 160), input_size=32)
    crop = np.zeros((32, 32, 3), np.uint8)
    crop[8:24, 8:24] = 200  # the cell; black around it
    mapper.add_crop(np.ones((32, 32), np.float32), (130, -10, 40), crop)  # the window reaches past two edges
    # the cell is the window's middle 20 px: image rows 0-20 (10 were above the top), columns 140-160
    assert mapper.heatmap[0:20, 140:160].min() == 1
    assert mapper.heatmap[:, :140].max() == 0 and mapper.heatmap[20:].max() == 0  # only the cell, not the window

    image = np.zeros((100, 160, 3), np.uint8)
    image[40:60, 100:120] = 255
    squared = square(image, 32)
    cam = (squared.max(axis=2) > 0).astype(np.float32)
    flat = HeatMapper((100, 160), 32)
    flat.add_squared(cam)
    bright = np.argwhere(flat.heatmap > 0.5)
    assert abs(bright[:, 0].mean() - 50) < 3 and abs(bright[:, 1].mean() - 110) < 3  # back on the bright square

    written = write_heatmap_panels(image, [("detection: ALL", flat.heatmap)], tmp_path / "x_gradcam.png")
    assert cv2.imread(str(written)).shape[1] == 164  # the image (and a border), a title band and a scale
