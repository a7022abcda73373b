"""The segment stage: train the U-Net, measure it against the threshold ROI, isolate every cell.

Training masks: ground truth where a dataset has it (the generator writes it), otherwise the
preprocess stage's ROI masks as weak labels, cleaned by morphology; which one is recorded. Smears
are split by source image, stratified by class (one fold of scikit-learn's StratifiedGroupKFold)
into training and held-out smears;
Dice and IoU of the U-Net and of the ROI are measured on the held-out ones only.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from leukemia_mtl.config import Profile
from leukemia_mtl.data.datasets import Dataset, ImageRecord, load_datasets
from leukemia_mtl.data.images import read_image, read_mask
from leukemia_mtl.errors import SegmentError
from leukemia_mtl.io_utils import atomic_write_bytes, atomic_write_csv, atomic_write_json, atomic_write_text, read_csv, write_image
from leukemia_mtl.masks import mask_agreement
from leukemia_mtl.preprocess import pixel_scale, read_manifest
from leukemia_mtl.segment.isolate import clean_mask

log = logging.getLogger(__name__)

CROPS_MANIFEST = "crops.csv"
CROP_FIELDS = ("crop", "dataset", "source_image", "source", "group", "label", "positive", "blast",
               "x", "y", "w", "h", "centre_x", "centre_y", "area")


@dataclass
class SegmentSummary:
    mask_source: str
    train_smears: int
    heldout_smears: int
    train_seconds: float
    epochs: int
    unet_dice: float | None = None
    unet_iou: float | None = None
    roi_dice: float | None = None
    roi_iou: float | None = None
    cell_recall: float | None = None
    blast_recall: float | None = None
    crops: int = 0
    images_without_cells: list[str] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out = {"train_smears": self.train_smears, "heldout_smears": self.heldout_smears,
               "train_seconds": round(self.train_seconds, 1), "epochs": self.epochs, "crops": self.crops,
               "images_without_cells": len(self.images_without_cells)}
        for name in ("unet_dice", "unet_iou", "roi_dice", "roi_iou", "cell_recall", "blast_recall"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(float(value), 4)
        return out


def _holdout_split(labels: list[str], groups: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One fold of a stratified, grouped K-fold, so held-out smears span the classes and no source
    image (or patient) is on both sides; a plain grouped split when a class has a single smear."""
    from collections import Counter

    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    smallest = min(Counter(labels).values())
    x = np.zeros(len(labels))
    if smallest < 2:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        return next(splitter.split(x, groups=groups))
    folds = max(2, min(round(1 / fraction), smallest))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return next(splitter.split(x, labels, groups=groups))


def _training_mask(dataset: Dataset, record: ImageRecord, roi_masks: dict[tuple[str, str], Path],
                   size: tuple[int, int], scale: float, profile: Profile) -> tuple[np.ndarray, str]:
    if record.mask_path is not None:
        return read_mask(record.mask_path, size, max_pixels=profile.data.max_pixels), "ground truth"
    roi_path = roi_masks.get((dataset.name, record.image_id))
    if roi_path is None:
        from leukemia_mtl.data.ingest import origin_of

        raise SegmentError(f"{origin_of(dataset.root)}/{record.rel_path}: no ground-truth mask and no ROI mask from the "
                           "preprocess stage")
    weak = read_mask(roi_path, size, max_pixels=profile.data.max_pixels)
    return clean_mask(weak, scale, profile.segment), "preprocess ROI (weak labels)"


def run_segment_stage(
    ingested: Path,
    roi_dir: Path,
    model_dir: Path,
    out_dir: Path,
    figure_html: Path,
    profile: Profile,
    *,
    progress: bool = True,
) -> SegmentSummary:
    from leukemia_mtl.data.ingest import DATA_DIR
    from leukemia_mtl.segment.infer import Segmenter, SegmenterInfo
    from leukemia_mtl.segment.train import to_working_scale, train_unet

    cfg = profile.segment
    datasets = load_datasets(Path(ingested) / DATA_DIR, profile.data, check=False)
    roi_masks = {(row["dataset"], row["image_id"]): Path(roi_dir) / row["roi_mask"] for row in read_manifest(roi_dir)}
    smears = [(d, r) for d in datasets if not d.single_cell for r in d.records]
    if len(smears) < 2:
        raise SegmentError(f"segmentation needs at least 2 smears to train and hold out; found {len(smears)}")

    groups = [f"{d.name}/{r.group}" for d, r in smears]
    labels = [r.label for _, r in smears]
    train_index, holdout_index = _holdout_split(labels, groups, cfg.holdout_fraction, profile.seed)
    assert not {groups[i] for i in train_index} & {groups[i] for i in holdout_index}, "a source image on both sides"

    def pair(i: int) -> tuple[np.ndarray, np.ndarray, str]:
        dataset, record = smears[i]
        rgb = read_image(record.path, max_pixels=profile.data.max_pixels).rgb
        scale = pixel_scale(rgb.shape[1], dataset.single_cell)
        mask, source = _training_mask(dataset, record, roi_masks, (rgb.shape[1], rgb.shape[0]), scale, profile)
        small, small_mask = to_working_scale(rgb, mask, scale, cfg)
        return small, small_mask, source

    train_pairs, sources = [], set()
    for i in train_index:
        small, small_mask, source = pair(i)
        train_pairs.append((small, small_mask))
        sources.add(source)
    if not any(m.any() for _, m in train_pairs):
        raise SegmentError("no usable training mask: every ground-truth or ROI mask of the training smears is empty")
    val_pairs = [pair(i)[:2] for i in holdout_index]
    mask_source = sources.pop() if len(sources) == 1 else "mixed ground truth and ROI"

    result = train_unet(train_pairs, val_pairs, cfg, profile.seed)
    segmenter = Segmenter(result.model, SegmenterInfo(cfg.patch_size, cfg.working_scale, cfg.depth, cfg.base_filters, mask_source))
    segmenter.save(model_dir)

    summary = SegmentSummary(mask_source=mask_source, train_smears=len(train_index), heldout_smears=len(holdout_index),
                             train_seconds=result.seconds, epochs=len(result.history.get("loss", [])), history=result.history)
    heldout = {(smears[i][0].name, smears[i][1].image_id) for i in holdout_index}
    _isolate_all(datasets, segmenter, heldout, roi_masks, Path(out_dir), summary, profile, progress, Path(ingested))
    atomic_write_json(Path(out_dir) / "summary.json", {"config": asdict(cfg), **asdict(summary)})
    _write_report(Path(out_dir), figure_html, summary, profile)
    return summary


def _isolate_all(datasets, segmenter, heldout, roi_masks, out: Path, summary: SegmentSummary, profile: Profile, progress: bool,
                 ingested: Path) -> None:
    from leukemia_mtl.data.ingest import user_path

    cfg = profile.segment
    rows: list[dict[str, object]] = []
    scores = {"unet_dice": [], "unet_iou": [], "roi_dice": [], "roi_iou": []}
    cells_found, cells_total, blasts_found, blasts_total = 0, 0, 0, 0
    examples = []
    for dataset in datasets:
        central = dataset.single_cell
        for record in tqdm(dataset.records, desc=f"segment {dataset.name}", unit="img", disable=not progress or None):
            rgb = read_image(record.path, max_pixels=profile.data.max_pixels).rgb
            scale = pixel_scale(rgb.shape[1], dataset.single_cell)
            result = segmenter.segment(rgb, scale, cfg, central_only=central, blast_centres=record.blast_centres)
            if central:  # a single-cell image: its own label says whether the cell is a blast
                result.cells = [dataclasses.replace(c, blast=record.positive) for c in result.cells]
            stem = f"{dataset.name}/{record.image_id}"
            write_image(out / "masks" / f"{stem}.png", result.refined_mask)
            write_image(out / "isolated" / f"{stem}.png", result.isolated)
            if not result.cells:
                summary.images_without_cells.append(f"{dataset.name}/{record.rel_path}")
                log.warning("%s: no white cell found; the image contributes no crop", user_path(ingested, dataset.name, record.rel_path))
            for cell in result.cells:
                crop_rel = f"crops/{stem}_c{cell.index:03d}.png"
                write_image(out / crop_rel, cell.image)
                x, y, w, h = cell.bbox
                rows.append({
                    "crop": crop_rel, "dataset": dataset.name, "source_image": record.image_id, "source": record.rel_path,
                    "group": f"{dataset.name}/{record.group}", "label": record.label, "positive": int(record.positive),
                    "blast": "" if cell.blast is None else int(cell.blast), "x": x, "y": y, "w": w, "h": h,
                    "centre_x": cell.centre[0], "centre_y": cell.centre[1], "area": cell.area,
                })
            if (dataset.name, record.image_id) in heldout and record.mask_path is not None:
                truth = read_mask(record.mask_path, (rgb.shape[1], rgb.shape[0]), max_pixels=profile.data.max_pixels)
                roi = read_mask(roi_masks[(dataset.name, record.image_id)], (rgb.shape[1], rgb.shape[0]), max_pixels=profile.data.max_pixels)
                for name, mask in (("unet", result.mask), ("roi", roi)):
                    agreement = mask_agreement(mask, truth)
                    scores[f"{name}_dice"].append(agreement["dice"])
                    scores[f"{name}_iou"].append(agreement["iou"])
                count, labels, _, centroids = cv2.connectedComponentsWithStats(truth)
                cells_total += count - 1
                cells_found += sum(result.mask[int(cy), int(cx)] > 0 for cx, cy in centroids[1:])
                if record.blast_centres:
                    blasts_total += len(record.blast_centres)
                    blasts_found += sum(result.mask[y, x] > 0 for x, y in record.blast_centres)
                if len(examples) < cfg.figure_examples:
                    examples.append((f"{dataset.name}/{record.rel_path} ({record.label})", rgb, truth, result))
    atomic_write_csv(out / CROPS_MANIFEST, CROP_FIELDS, rows)
    summary.crops = len(rows)
    for name, values in scores.items():
        if values:
            setattr(summary, name, float(np.mean(values)))
    if cells_total:
        summary.cell_recall = cells_found / cells_total
    if blasts_total:
        summary.blast_recall = blasts_found / blasts_total
    if examples:
        atomic_write_bytes(out / "segmentation.png", _figure(examples))


def read_crops_manifest(root: Path | str) -> list[dict[str, str]]:
    return read_csv(Path(root) / CROPS_MANIFEST)


def _figure(examples) -> bytes:
    """Per held-out smear: contours (U-Net green, truth blue), blue channel, isolation, crops."""
    from leukemia_mtl.report import figure_png, new_figure

    fig, axes = new_figure(len(examples), 4, (14, 2.9 * len(examples)))
    for row, (title, rgb, truth, result) in zip(axes, examples):
        outlined = rgb.copy()
        thickness = max(1, rgb.shape[1] // 400)
        for mask, colour in ((truth, (40, 80, 255)), (result.mask, (0, 200, 0))):
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(outlined, contours, -1, colour, thickness)
        crops = [c.image for c in result.cells[:6]]
        montage = np.hstack(crops) if crops else np.zeros((32, 32, 3), np.uint8)
        panels = (outlined, result.blue, result.isolated, montage)
        names = ("U-Net (green) vs truth (blue)", "blue channel (Fig. 6b)", "isolation (Fig. 6c)", "cell crops")
        for ax, image, name in zip(row, panels, names):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        row[0].set_title(title, fontsize=8)
    return figure_png(fig, dpi=80)


def _curves(history: dict[str, list[float]]) -> bytes:
    from leukemia_mtl.report import figure_png, new_figure

    fig, axes = new_figure(1, 2, (9, 3))
    for ax, metric in zip(axes[0], ("loss", "dice_coefficient")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=("validation " if prefix else "training ") + metric)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    return figure_png(fig, dpi=80)


def _write_report(out: Path, figure_html: Path, summary: SegmentSummary, profile: Profile) -> None:
    from leukemia_mtl import report

    cfg = profile.segment
    parts = [
        report.paragraph(
            f"Residual U-Net (depth {cfg.depth}, {cfg.base_filters} base filters, {cfg.patch_size} px patches at "
            f"{cfg.working_scale:.3f} of ALL-IDB1 scale), trained {summary.epochs} epochs on {summary.train_smears} smears "
            f"with masks from {summary.mask_source}; measured on {summary.heldout_smears} held-out smears."
        ),
        report.table(summary.metrics()),
    ]
    if summary.images_without_cells:
        parts.append(report.paragraph("No white cell found in: " + ", ".join(summary.images_without_cells)))
    parts.append(report.png_img(_curves(summary.history), "U-Net training curves"))
    figure = out / "segmentation.png"
    if figure.is_file():
        parts.append(report.png_img(figure.read_bytes(), "held-out smears: contours, blue channel, isolation, crops"))
    atomic_write_text(figure_html, report.page("segment: white cells and isolated lymphoblasts", *parts))
