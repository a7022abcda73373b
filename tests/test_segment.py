"""Residual U-Net segmentation and lymphoblast isolation, on real (tiny) data and real models."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import SEGMENT_STAGE
from leukemia_mtl.bundles import SEGMENTER_META_FILE as META_FILE
from leukemia_mtl.bundles import SEGMENTER_MODEL_FILE as MODEL_FILE
from leukemia_mtl.bundles import SegmenterInfo
from leukemia_mtl.config import SegmentConfig, get_profile
from leukemia_mtl.data.synth import _rng, render_smear
from leukemia_mtl.errors import SegmentError
from leukemia_mtl.segment.infer import Segmenter, segment_smear
from leukemia_mtl.segment.isolate import blue_channel_isolation, extract_cells, isolate
from leukemia_mtl.segment.stage import read_crops_manifest, run_segment_stage

keras = pytest.importorskip("keras")

from leukemia_mtl.segment.unet import build_residual_unet, compile_unet  # noqa: E402

# --- the network --------------------------------------------------------------------------


def test_unet_shapes_and_paper_structure():
    model = build_residual_unet(32, depth=2, base_filters=4)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 32, 32, 1)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("MaxPooling2D") == 2 and kinds.count("Concatenate") == 2
    assert kinds.count("Add") == 5  # one residual unit per level down, the bridge, per level up
    assert all(layer.kernel_size == (1, 1) for layer in model.layers if layer.name.endswith("_shortcut"))
    assert all(layer.kernel_size == (3, 3) for layer in model.layers if "_conv" in layer.name)
    out = model.layers[-1]
    assert out.kernel_size == (1, 1) and out.activation.__name__ == "sigmoid"
    prediction = model.predict_on_batch(np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype("float32"))
    assert prediction.shape == (2, 32, 32, 1) and prediction.min() >= 0 and prediction.max() <= 1


def test_every_weight_gets_a_gradient():
    import tensorflow as tf

    from leukemia_mtl.segment.unet import bce_dice_loss

    model = build_residual_unet(16, depth=2, base_filters=4)
    x = tf.random.uniform((2, 16, 16, 3), 0, 255, seed=1)
    y = tf.cast(tf.random.uniform((2, 16, 16, 1), seed=2) > 0.5, tf.float32)
    with tf.GradientTape() as tape:
        loss = bce_dice_loss(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize("patch, depth", [(30, 2), (32, 6), (32, 0)])
def test_patch_must_divide_by_the_pooling(patch, depth):
    with pytest.raises(ValueError, match="divisible"):
        build_residual_unet(patch, depth=depth)


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss_on_synthetic_smears():
    from leukemia_mtl.segment.train import train_unet

    cfg = SegmentConfig(patch_size=32, depth=2, base_filters=8, epochs=4, patches_per_image=24, batch_size=16)
    pairs = []
    for index, cls in enumerate(["normal", "L1", "L2", "L3"]):
        rgb, mask, _ = render_smear(_rng(5, 1, index), cls, 320, 240)
        pairs.append((rgb, mask))
    result = train_unet(pairs, [], cfg, seed=0, verbose=0)
    loss = result.history["loss"]
    assert loss[-1] < 0.8 * loss[0], loss


# --- the stage: training, held-out Dice against the ROI, isolation, crops -----------------


@pytest.mark.slow
def test_unet_beats_the_threshold_roi_on_held_out_smears(stage_run):
    _, _, summary = stage_run
    assert summary.mask_source == "ground truth"
    assert summary.heldout_smears == 4 and summary.train_smears == 8  # 3 folds of 3 smears per class
    message = (
        f"held-out Dice: U-Net {summary.unet_dice:.3f} vs threshold ROI {summary.roi_dice:.3f}; "
        f"IoU {summary.unet_iou:.3f} vs {summary.roi_iou:.3f}"
    )
    print(message)
    assert summary.unet_dice > summary.roi_dice + 0.05, message
    assert summary.unet_iou > summary.roi_iou, message
    assert summary.cell_recall >= 0.9 and summary.blast_recall >= 0.9, message


@pytest.mark.slow
def test_crops_carry_their_source_image_position_and_label(stage_run):
    root, profile, summary = stage_run
    rows = read_crops_manifest(root / "cells")
    assert len(rows) == summary.crops > 8
    data = root / "ingest" / "data"
    for row in rows:
        crop = cv2.imread(str(root / "cells" / row["crop"]))
        assert crop.shape == (profile.segment.crop_size, profile.segment.crop_size, 3)
        source = cv2.imread(str(data / row["dataset"] / row["source"]))
        x, y, w, h = (int(row[k]) for k in "xywh")
        assert x >= 0 and y >= 0 and x + w <= source.shape[1] and y + h <= source.shape[0]
        assert row["group"] == f"{row['dataset']}/{row['source_image']}"
        if row["label"] == "normal":
            assert row["blast"] == "0"
    idb1 = [r for r in rows if r["dataset"] == "smears"]
    assert {r["blast"] for r in idb1 if r["label"] != "normal"} >= {"1"}
    idb2 = [r for r in rows if r["dataset"] == "cells"]
    assert len(idb2) == 4 and all(r["blast"] == str(r["positive"]) for r in idb2)  # one central cell each


@pytest.mark.slow
def test_stage_writes_model_bundle_figure_and_summary(stage_run):
    root, _, summary = stage_run
    assert (root / "model" / MODEL_FILE).is_file() and (root / "model" / META_FILE).is_file()
    assert (root / "cells" / "segmentation.png").is_file()
    page = (root / "segment.html").read_text()
    assert "held-out" in page and page.count("data:image/png;base64,") == 2
    saved = json.loads((root / "cells" / "summary.json").read_text())
    assert saved["unet_dice"] == pytest.approx(summary.unet_dice)


@pytest.mark.slow
def test_saved_bundle_reloads_and_segments_a_new_smear(stage_run):
    root, profile, _ = stage_run
    segmenter = Segmenter.load(root / "model")
    rgb, _truth, info = render_smear(_rng(1234, 1, 0), "L3", 480, 360)  # a smear it never saw
    cells = segment_smear(segmenter, rgb, profile.segment)
    assert len(cells) >= len(info.blast_centres) - 1
    assert all(c.image.shape == (profile.segment.crop_size,) * 2 + (3,) for c in cells)


@pytest.mark.slow
def test_a_full_size_smear_is_segmented(stage_run):
    root, profile, _ = stage_run
    segmenter = Segmenter.load(root / "model")
    rgb, _truth, info = render_smear(_rng(77, 1, 0), "L2", 2592, 1944)
    result = segmenter.segment(rgb, 1.0, profile.segment, blast_centres=tuple(info.blast_centres))
    assert result.mask.shape == (1944, 2592)
    assert sum(bool(c.blast) for c in result.cells) >= len(info.blast_centres) - 1


@pytest.mark.slow
def test_a_smear_without_white_cells_is_a_clear_error(stage_run):
    root, profile, _ = stage_run
    segmenter = Segmenter.load(root / "model")
    empty = np.full((360, 480, 3), (238, 229, 226), np.uint8)
    with pytest.raises(SegmentError, match="no white cell found"):
        segment_smear(segmenter, empty, profile.segment)


def _copy_without_masks(ingested: Path, to: Path) -> None:
    """The ingest artifact as a dataset without ground-truth masks would give it."""
    shutil.copytree(ingested, to)
    for masks in (to / "data").rglob("masks"):
        shutil.rmtree(masks)


def _blank_roi_masks(roi_dir: Path) -> None:
    """ROI masks as the ROI step writes them where it finds nothing (the manifest's boxes left as they were)."""
    for mask in roi_dir.rglob("roi_masks/*.png"):
        cv2.imwrite(str(mask), np.zeros_like(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)))


@pytest.mark.slow
def test_weak_labels_from_the_roi_when_a_dataset_has_no_masks(stage_run, tmp_path):
    root, _, _ = stage_run
    _copy_without_masks(root / "ingest", tmp_path / "ingest")
    quick = get_profile(
        "demo", {**SEGMENT_STAGE, "segment.epochs": 1, "segment.patches_per_image": 8, "segment.base_filters": 4}
    )
    summary = run_segment_stage(
        tmp_path / "ingest",
        root / "roi",
        tmp_path / "model",
        tmp_path / "cells",
        tmp_path / "s.html",
        quick,
        progress=False,
    )
    assert summary.mask_source == "preprocess ROI (weak labels)"
    assert summary.unet_dice is None and summary.truth_smears == 0  # no ground truth: no Dice against it is claimed
    assert summary.unet_vs_roi_dice is not None and "no ground-truth masks" in summary.isolation_reason
    assert "No held-out smear has a ground-truth mask" in (tmp_path / "s.html").read_text()
    assert json.loads((tmp_path / "model" / META_FILE).read_text())["mask_source"] == summary.mask_source


@pytest.mark.slow
def test_neither_masks_nor_a_usable_roi_is_refused(stage_run, tmp_path):
    root, profile, _ = stage_run
    _copy_without_masks(root / "ingest", tmp_path / "ingest")
    shutil.copytree(root / "roi", tmp_path / "roi")
    _blank_roi_masks(tmp_path / "roi")
    with pytest.raises(SegmentError, match="no usable training mask"):
        run_segment_stage(
            tmp_path / "ingest", tmp_path / "roi", tmp_path / "m", tmp_path / "c", tmp_path / "s.html", profile
        )


# --- model files ----------------------------------------------------------------------------


def _bundle(tmp_path: Path, model_patch: int, claimed_patch: int) -> Path:
    model = compile_unet(build_residual_unet(model_patch, depth=2, base_filters=4), 1e-3)
    Segmenter(model, SegmenterInfo(claimed_patch, 0.25, 2, 4, "ground truth")).save(tmp_path / "bundle")
    return tmp_path / "bundle"


def test_a_model_file_from_another_input_size_is_refused(tmp_path):
    bundle = _bundle(tmp_path, model_patch=32, claimed_patch=64)
    with pytest.raises(SegmentError, match=r"segmenter.keras: network takes \(None, 32, 32, 3\).*64x64"):
        Segmenter.load(bundle)


def test_truncated_or_missing_model_files_are_refused(tmp_path):
    bundle = _bundle(tmp_path, 32, 32)
    Segmenter.load(bundle)  # the good bundle loads
    data = (bundle / MODEL_FILE).read_bytes()
    (bundle / MODEL_FILE).write_bytes(data[: len(data) // 3])
    with pytest.raises(SegmentError, match="segmenter.keras: not a Keras model file"):
        Segmenter.load(bundle)
    (bundle / MODEL_FILE).unlink()
    with pytest.raises(SegmentError, match="segmenter.keras: missing"):
        Segmenter.load(bundle)


def test_a_model_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda t: t[..., :1] * 0)(inputs)
    keras.Model(inputs, outputs).save(tmp_path / MODEL_FILE)
    (tmp_path / META_FILE).write_text(json.dumps(dataclasses.asdict(SegmenterInfo(32, 0.25, 2, 4, "x"))))
    with pytest.raises(SegmentError, match="cannot be loaded as a Keras model"):
        Segmenter.load(tmp_path)


# --- isolation ------------------------------------------------------------------------------


def test_isolation_zeroes_everything_outside_the_mask():
    rgb, truth, info = render_smear(_rng(9, 1, 0), "L1", 480, 360)
    isolated = isolate(rgb, truth)
    assert (isolated[truth == 0] == 0).all()
    assert (isolated[truth > 0] == rgb[truth > 0]).all()
    cfg = SegmentConfig(crop_size=48)
    cells = extract_cells(rgb, truth, cfg, blast_centres=tuple(info.blast_centres))
    _count, labels = cv2.connectedComponents(truth)
    for cell in cells:
        x, y, w, h = cell.bbox
        # a crop holds one cell: every lit pixel comes from that cell, none from its neighbours
        own = labels[y : y + h, x : x + w]
        assert len(set(np.unique(own)) - {0}) >= 1
        assert cell.image.shape == (48, 48, 3)
    assert sum(c.blast for c in cells) == len(info.blast_centres)


def test_blue_channel_step_drops_red_cells_touching_a_white_cell():
    rgb = np.full((120, 120, 3), (238, 229, 226), np.uint8)
    cv2.circle(rgb, (60, 60), 25, (160, 175, 225), -1)  # white cell: blue-dominant cytoplasm
    cv2.circle(rgb, (60, 60), 15, (58, 20, 98), -1)  # its nucleus
    cv2.circle(rgb, (92, 60), 14, (214, 146, 152), -1)  # an overlapping red cell
    mask = np.zeros((120, 120), np.uint8)
    cv2.circle(mask, (66, 60), 36, 255, -1)  # a generous mask that swallows the red cell
    blue, refined = blue_channel_isolation(rgb, mask, 1.0, SegmentConfig(min_cell_area=100))
    assert refined[60, 60] == 255 and refined[60, 95] == 0  # white cell kept, red cell gone
    assert (blue[refined == 0] == 0).all() and blue[60, 60] == rgb[60, 60, 2]


def test_crops_share_one_magnification_so_a_large_cell_stays_large():
    rgb = np.zeros((200, 300, 3), np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    for x, radius in ((70, 12), (220, 30)):
        cv2.circle(rgb, (x, 100), radius, (90, 60, 200), -1)
        cv2.circle(mask, (x, 100), radius, 255, -1)
    fixed = extract_cells(rgb, mask, SegmentConfig(crop_size=48, crop_window=80), scale=1.0)
    lit = [int((c.image.max(axis=2) > 0).sum()) for c in sorted(fixed, key=lambda c: c.area)]
    assert lit[1] > 4 * lit[0]  # areas go as radius squared: (30/12)^2 = 6.25
    fitted = extract_cells(rgb, mask, SegmentConfig(crop_size=48, crop_window=0), scale=1.0)
    lit = [int((c.image.max(axis=2) > 0).sum()) for c in sorted(fitted, key=lambda c: c.area)]
    assert lit[1] < 1.2 * lit[0]  # sized to each cell, the size is lost
    half = extract_cells(
        rgb, mask, SegmentConfig(crop_size=48, crop_window=160), scale=0.5
    )  # the same field at half scale
    assert [c.image.shape for c in half] == [(48, 48, 3)] * 2


# --- real smears: empty weak labels, the U-Net against its ROI, nothing silently black ----------


def _quick(**settings):
    return get_profile(
        "demo",
        {**SEGMENT_STAGE, "segment.epochs": 1, "segment.patches_per_image": 8, "segment.base_filters": 4, **settings},
    )


@pytest.mark.slow
def test_mostly_empty_weak_labels_stop_segment_before_training_naming_the_dataset(stage_run, tmp_path):
    from leukemia_mtl.io_utils import atomic_write_csv
    from leukemia_mtl.preprocess import MANIFEST, MANIFEST_FIELDS, read_manifest

    root, _, _ = stage_run
    _copy_without_masks(root / "ingest", tmp_path / "ingest")
    shutil.copytree(root / "roi", tmp_path / "roi")
    rows = read_manifest(tmp_path / "roi")
    smears = [r for r in rows if r["dataset"] == "smears"]
    for row in smears[: len(smears) * 3 // 4]:  # the ROI step found nothing in three quarters of the smears
        row["boxes"] = "[]"
    atomic_write_csv(tmp_path / "roi" / MANIFEST, MANIFEST_FIELDS, rows)
    with pytest.raises(SegmentError, match=r": the ROI step found no white cell in 9 of 12 smears.*nuclear"):
        run_segment_stage(
            tmp_path / "ingest",
            tmp_path / "roi",
            tmp_path / "m",
            tmp_path / "c",
            tmp_path / "s.html",
            _quick(),
            progress=False,
        )
    assert not (tmp_path / "m").exists()  # stopped before any training


@pytest.mark.slow
def test_a_dataset_where_isolation_finds_no_cell_stops_segment(stage_run, tmp_path):
    root, _, _ = stage_run
    shutil.copytree(root / "roi", tmp_path / "roi")
    _blank_roi_masks(tmp_path / "roi" / "cells")  # the ROI found nothing in the single cells
    with pytest.raises(SegmentError, match=r": no white cell found in 4 of 4 images \(roi mask\)"):
        run_segment_stage(
            root / "ingest",
            tmp_path / "roi",
            tmp_path / "m",
            tmp_path / "c",
            tmp_path / "s.html",
            _quick(**{"segment.isolation": "roi"}),
            progress=False,
        )
    page = (tmp_path / "s.html").read_text()  # the report was written first, and says it
    assert "WARNING: no white cell found in 4 images (cells: 4)" in page


@pytest.mark.slow
def test_isolation_from_the_roi_is_recorded_and_reloads(stage_run, tmp_path):
    root, _, _ = stage_run
    summary = run_segment_stage(
        root / "ingest",
        root / "roi",
        tmp_path / "m",
        tmp_path / "c",
        tmp_path / "s.html",
        _quick(**{"segment.isolation": "roi"}),
        progress=False,
    )
    assert summary.isolation == "roi" and summary.isolation_reason == "set by segment.isolation=roi"
    assert summary.crops > 8 and Segmenter.load(tmp_path / "m").info.isolation == "roi"
    assert Segmenter.load(tmp_path / "m").info.pixel_scales == summary.pixel_scales
    assert set(summary.pixel_scales) == {"smear", "cell"}
    assert summary.pixel_scales == {
        "smear": {"scale": round(480 / 2592, 4), "source": "given (0.486 um per pixel)", "cameras": {}},
        "cell": {"scale": 1.0, "source": "given (0.09 um per pixel)", "cameras": {}},
    }
    rgb, _, _ = render_smear(_rng(99, 1, 0), "L1", 640, 480)
    with pytest.raises(SegmentError, match="give the image's ROI mask"):
        Segmenter.load(tmp_path / "m").segment(rgb, 640 / 2592, _quick().segment)


@pytest.mark.parametrize(
    "measured, expected",
    [
        ({"unet_dice": 0.9, "roi_dice": 0.6, "truth_smears": 4}, "unet"),
        ({"unet_dice": 0.5, "roi_dice": 0.7, "truth_smears": 4}, "roi"),  # worse than the ROI it learnt from
        ({"unet_vs_roi_dice": 0.8}, "unet"),  # no ground truth: it reproduces its labels
        ({"unet_vs_roi_dice": 0.17}, "roi"),  # no ground truth: it did not learn its own labels
        ({}, "unet"),
    ],
)
def test_the_isolating_mask_is_chosen_on_held_out_masks(measured, expected):
    from leukemia_mtl.segment.stage import SegmentSummary, choose_isolation

    summary = SegmentSummary("x", 8, 4, 1.0, 1, **measured)
    choice, reason = choose_isolation(summary, _quick().segment)
    assert choice == expected, reason
    assert choose_isolation(summary, _quick(**{"segment.isolation": "unet"}).segment) == (
        "unet",
        "set by segment.isolation=unet",
    )
