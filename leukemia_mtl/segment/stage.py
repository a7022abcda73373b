"""The segment stage: train the U-Net, measure it against the threshold ROI, isolate every cell.

Training masks: ground truth where a dataset has it (the generator writes it), otherwise the
preprocess stage's ROI masks as weak labels, cleaned by morphology; which one is recorded. Smears
are split by source image, stratified by class (one fold of scikit-learn's StratifiedGroupKFold)
into training and held-out smears;
Dice and IoU of the U-Net and of the ROI are measured on the held-out ones only.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from leukemia_mtl import report
from leukemia_mtl.artifacts import log_metrics
from leukemia_mtl.bundles import SegmenterInfo
from leukemia_mtl.config import Profile
from leukemia_mtl.data.datasets import Dataset, ImageRecord, load_datasets
from leukemia_mtl.data.images import read_image, read_mask
from leukemia_mtl.data.layout import DATA_DIR, origin_of, user_path
from leukemia_mtl.errors import SegmentError
from leukemia_mtl.io_utils import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    read_csv,
    write_image,
)
from leukemia_mtl.masks import pooled_agreement
from leukemia_mtl.preprocess import read_manifest
from leukemia_mtl.report import epoch_axis, figure_png, new_figure
from leukemia_mtl.segment.infer import Segmenter
from leukemia_mtl.segment.isolate import clean_mask
from leukemia_mtl.segment.train import to_working_scale, train_unet

log = logging.getLogger(__name__)

CROPS_MANIFEST = "crops.csv"
CROP_FIELDS = (
    "crop",
    "dataset",
    "source_image",
    "source",
    "group",
    "label",
    "positive",
    "blast",
    "x",
    "y",
    "w",
    "h",
    "centre_x",
    "centre_y",
    "area",
)


@dataclass
class SegmentSummary:
    """What segment measured. Every Dice and IoU is pooled over the held-out smears' pixels (masks.pooled_agreement),
    so an empty mask against an empty mask counts for nothing instead of for a perfect score."""

    mask_source: str
    train_smears: int
    heldout_smears: int
    train_seconds: float
    epochs: int
    truth_smears: int = 0  # held-out smears with ground-truth masks: what the *_dice / *_iou against truth cover
    unet_dice: float | None = None  # against ground truth
    unet_iou: float | None = None
    roi_dice: float | None = None
    roi_iou: float | None = None
    unet_vs_roi_dice: float | None = None  # the U-Net against the ROI masks, on every held-out smear
    unet_vs_roi_iou: float | None = None
    cell_recall: float | None = None  # of the isolating mask, against ground truth
    blast_recall: float | None = None
    isolation: str = "unet"  # the mask that isolated the cells, and why
    isolation_reason: str = ""
    crops: int = 0
    images_without_cells: list[str] = field(default_factory=list)
    without_cells: dict[str, int] = field(default_factory=dict)  # per dataset
    pixel_scales: dict[str, dict] = field(default_factory=dict)  # per kind (smear, cell), as predict reads it
    history: dict[str, list[float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        out = {
            "train_smears": self.train_smears,
            "heldout_smears": self.heldout_smears,
            "truth_smears": self.truth_smears,
            "train_seconds": round(self.train_seconds, 1),
            "epochs": self.epochs,
            "crops": self.crops,
            "images_without_cells": len(self.images_without_cells),
        }
        for name in (
            "unet_dice",
            "unet_iou",
            "roi_dice",
            "roi_iou",
            "unet_vs_roi_dice",
            "unet_vs_roi_iou",
            "cell_recall",
            "blast_recall",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(float(value), 4)
        return out


def _holdout_split(labels: list[str], groups: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One fold of a stratified, grouped K-fold, so held-out smears span the classes and no source
    image (or patient) is on both sides; a plain grouped split when a class has a single smear."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    smallest = min(Counter(labels).values())
    x = np.zeros(len(labels))
    if smallest < 2:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        return next(splitter.split(x, groups=groups))
    folds = max(2, min(round(1 / fraction), smallest))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return next(splitter.split(x, labels, groups=groups))


def _training_mask(
    dataset: Dataset,
    record: ImageRecord,
    roi_masks: dict[tuple[str, str], Path],
    size: tuple[int, int],
    scale: float,
    profile: Profile,
) -> tuple[np.ndarray, str]:
    if record.mask_path is not None:
        return read_mask(record.mask_path, size, max_pixels=profile.data.max_pixels), "ground truth"
    roi_path = roi_masks.get((dataset.name, record.image_id))
    if roi_path is None:
        raise SegmentError(
            f"{origin_of(dataset.root)}/{record.rel_path}: no ground-truth mask and no ROI mask from the "
            "preprocess stage"
        )
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
    cfg = profile.segment
    datasets = load_datasets(Path(ingested) / DATA_DIR, profile.data, check=False)
    manifest = read_manifest(roi_dir)
    roi_masks = {(row["dataset"], row["image_id"]): Path(roi_dir) / row["roi_mask"] for row in manifest}
    # the ROI step's pixel scale of each image (given, or estimated over its dataset): every size here uses it
    if manifest and not manifest[0].get("pixel_scale"):
        raise SegmentError(
            f"{Path(roi_dir) / 'manifest.csv'}: no pixel_scale column; it was written by an older "
            "preprocess step: run preprocess again (--no-cache)"
        )
    scales = {(row["dataset"], row["image_id"]): float(row["pixel_scale"]) for row in manifest}
    smears = [(d, r) for d in datasets if not d.single_cell for r in d.records]
    if len(smears) < 2:
        raise SegmentError(f"segmentation needs at least 2 smears to train and hold out; found {len(smears)}")
    _check_weak_labels(smears, manifest, cfg, Path(ingested), profile.preprocess.threshold_method)

    groups = [f"{d.name}/{r.group}" for d, r in smears]
    labels = [r.label for _, r in smears]
    train_index, holdout_index = _holdout_split(labels, groups, cfg.holdout_fraction, profile.seed)
    assert not {groups[i] for i in train_index} & {groups[i] for i in holdout_index}, "a source image on both sides"

    def pair(i: int) -> tuple[np.ndarray, np.ndarray, str]:
        dataset, record = smears[i]
        rgb = read_image(record.path, max_pixels=profile.data.max_pixels).rgb
        scale = scales[(dataset.name, record.image_id)]
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
    info = SegmenterInfo(
        cfg.patch_size,
        cfg.working_scale,
        cfg.depth,
        cfg.base_filters,
        mask_source,
        pixel_scales=_pixel_scales(datasets, roi_dir),
    )
    summary = SegmentSummary(
        mask_source=mask_source,
        train_smears=len(train_index),
        heldout_smears=len(holdout_index),
        train_seconds=result.seconds,
        epochs=len(result.history.get("loss", [])),
        history=result.history,
        pixel_scales=info.pixel_scales,
    )
    examples, found = _measure_heldout(
        [smears[i] for i in holdout_index], Segmenter(result.model, info), roi_masks, scales, summary, profile
    )
    summary.isolation, summary.isolation_reason = choose_isolation(summary, cfg)
    cells, cell_total, blasts, blast_total = found[summary.isolation]
    summary.cell_recall = cells / cell_total if cell_total else None
    summary.blast_recall = blasts / blast_total if blast_total else None
    log.info("isolating cells with the %s mask: %s", summary.isolation, summary.isolation_reason)
    segmenter = Segmenter(result.model, dataclasses.replace(info, isolation=summary.isolation))
    segmenter.save(model_dir)
    if examples:
        atomic_write_bytes(
            Path(out_dir) / "segmentation.png",
            _figure([e[:3] + (e[3][summary.isolation],) for e in examples], summary.isolation),
        )
    _isolate_all(
        datasets,
        segmenter=segmenter,
        roi_masks=roi_masks,
        scales=scales,
        out=Path(out_dir),
        summary=summary,
        profile=profile,
        progress=progress,
        ingested=Path(ingested),
    )
    atomic_write_json(Path(out_dir) / "summary.json", {"config": asdict(cfg), **asdict(summary)})
    _write_report(Path(out_dir), figure_html, summary, profile)
    _stop_if_mostly_empty(datasets, summary, cfg, Path(ingested))
    return summary


def _pixel_scales(datasets: list[Dataset], roi_dir: Path) -> dict[str, dict]:
    """Per kind, the training images' pixel scale and its source, as the ROI step found them, where every dataset of
    that kind agrees."""
    found = json.loads((Path(roi_dir) / "summary.json").read_text()).get("pixel_scales", {})
    by_kind: dict[str, list[dict]] = {}
    for dataset in datasets:
        if dataset.name in found:
            entry = found[dataset.name]
            by_kind.setdefault("cell" if dataset.single_cell else "smear", []).append(
                {"scale": entry["scale"], "source": entry["source"], "cameras": entry.get("cameras") or {}}
            )
    return {kind: entries[0] for kind, entries in by_kind.items() if all(e == entries[0] for e in entries)}


def _check_weak_labels(
    smears: list[tuple[Dataset, ImageRecord]],
    manifest: list[dict[str, str]],
    cfg,
    ingested: Path,
    threshold_method: str,
) -> None:
    """Before training: a dataset whose weak labels are mostly empty would teach the U-Net that there are no cells."""
    empty = {(row["dataset"], row["image_id"]) for row in manifest if row["boxes"] in ("", "[]")}
    by_dataset: dict[str, list[ImageRecord]] = {}
    for dataset, record in smears:
        if record.mask_path is None:
            by_dataset.setdefault(dataset.name, []).append(record)
    for name, records in by_dataset.items():
        count = sum((name, r.image_id) in empty for r in records)
        if count > cfg.max_empty_fraction * len(records):
            raise SegmentError(
                f"{origin_of(Path(ingested) / 'data' / name)}: the ROI step found no white cell in {count} of {len(records)} "
                "smears, and with no ground-truth masks those are the U-Net's labels: it would learn that there are no "
                "cells. "
                + ("Try preprocess.threshold_method=nuclear, or give" if threshold_method != "nuclear" else "Give")
                + " the pixel size (data.pixel_size_um, --pixel-size)"
            )


def _measure_heldout(heldout, unet, roi_masks, scales, summary: SegmentSummary, profile: Profile) -> tuple[list, dict]:
    """Dice and IoU of the U-Net and the ROI on the held-out smears (into `summary`); figure examples with both
    segmentations, and per mask the cells and blasts it found against ground truth."""
    cfg = profile.segment
    by_roi = Segmenter(unet.model, dataclasses.replace(unet.info, isolation="roi"))
    pairs: dict[str, list] = {"unet": [], "roi": [], "unet_vs_roi": []}
    found = {"unet": [0, 0, 0, 0], "roi": [0, 0, 0, 0]}  # cells found, cells, blasts found, blasts
    examples = []
    for dataset, record in heldout:
        rgb = read_image(record.path, max_pixels=profile.data.max_pixels).rgb
        size = (rgb.shape[1], rgb.shape[0])
        scale = scales[(dataset.name, record.image_id)]
        roi = read_mask(roi_masks[(dataset.name, record.image_id)], size, max_pixels=profile.data.max_pixels)
        results = {"unet": unet.segment(rgb, scale, cfg), "roi": by_roi.segment(rgb, scale, cfg, roi_mask=roi)}
        pairs["unet_vs_roi"].append((results["unet"].mask, results["roi"].mask))
        if record.mask_path is None:
            continue
        truth = read_mask(record.mask_path, size, max_pixels=profile.data.max_pixels)
        count, _, _, centroids = cv2.connectedComponentsWithStats(truth)
        for name, result in results.items():
            pairs[name].append((result.mask, truth))
            counts = found[name]
            counts[0] += sum(result.mask[int(cy), int(cx)] > 0 for cx, cy in centroids[1:])
            counts[1] += count - 1
            counts[2] += sum(result.mask[y, x] > 0 for x, y in record.blast_centres or ())
            counts[3] += len(record.blast_centres or ())
        if len(examples) < cfg.figure_examples:
            examples.append((f"{dataset.name}/{record.rel_path} ({record.label})", rgb, truth, results))
    summary.truth_smears = len(pairs["unet"])
    for name in ("unet", "roi", "unet_vs_roi"):
        if pairs[name]:
            agreement = pooled_agreement(pairs[name])
            setattr(summary, f"{name}_dice", agreement["dice"])
            setattr(summary, f"{name}_iou", agreement["iou"])
    return examples, found


def choose_isolation(summary: SegmentSummary, cfg) -> tuple[str, str]:
    """Which mask isolates the cells (segment.isolation), and why: measured on held-out smears' masks only."""
    if cfg.isolation != "auto":
        choice, reason = cfg.isolation, f"set by segment.isolation={cfg.isolation}"
    elif summary.unet_dice is not None and summary.roi_dice is not None:
        choice = "roi" if summary.roi_dice > summary.unet_dice else "unet"
        reason = (
            f"held-out Dice against ground truth on {summary.truth_smears} smears: U-Net {summary.unet_dice:.3f}, "
            f"ROI {summary.roi_dice:.3f}"
            + ("; the U-Net is worse than the ROI it learnt from" if choice == "roi" else "")
        )
    elif summary.unet_vs_roi_dice is not None:
        choice = "roi" if summary.unet_vs_roi_dice < cfg.min_weak_label_dice else "unet"
        reason = (
            f"no ground-truth masks; on {summary.heldout_smears} held-out smears the U-Net reproduces the ROI masks "
            f"it learnt from with Dice {summary.unet_vs_roi_dice:.3f} "
            + (
                f"(below segment.min_weak_label_dice={cfg.min_weak_label_dice:g}: it learnt less than its labels hold)"
                if choice == "roi"
                else "(whether it is better than them cannot be measured without ground truth)"
            )
        )
    else:
        choice, reason = "unet", "nothing to compare it with on held-out smears"
    return choice, reason


def _stop_if_mostly_empty(datasets: list[Dataset], summary: SegmentSummary, cfg, ingested: Path) -> None:
    for dataset in datasets:
        empty = summary.without_cells.get(dataset.name, 0)
        if dataset.records and empty > cfg.max_empty_fraction * len(dataset.records):
            raise SegmentError(
                f"{origin_of(Path(ingested) / 'data' / dataset.name)}: no white cell found in {empty} of "
                f"{len(dataset.records)} images ({summary.isolation} mask), so the later stages would have nothing to "
                "learn from. Check the ROI page (preprocess.threshold_method=nuclear for another lab's stain) and the "
                "pixel scale (data.pixel_size_um, or --pixel-size)"
            )


def _isolate_all(
    datasets,
    segmenter,
    roi_masks,
    scales,
    out: Path,
    summary: SegmentSummary,
    profile: Profile,
    progress: bool,
    ingested: Path,
) -> None:
    cfg = profile.segment
    rows: list[dict[str, object]] = []
    for dataset in datasets:
        central = dataset.single_cell
        summary.without_cells[dataset.name] = 0
        for record in tqdm(dataset.records, desc=f"segment {dataset.name}", unit="img", disable=not progress or None):
            rgb = read_image(record.path, max_pixels=profile.data.max_pixels).rgb
            key = (dataset.name, record.image_id)
            roi = (
                read_mask(roi_masks[key], (rgb.shape[1], rgb.shape[0]), max_pixels=profile.data.max_pixels)
                if segmenter.info.isolation == "roi"
                else None
            )
            result = segmenter.segment(
                rgb, scales[key], cfg, central_only=central, blast_centres=record.blast_centres, roi_mask=roi
            )
            if central:  # a single-cell image: its own label says whether the cell is a blast
                result.cells = [dataclasses.replace(c, blast=record.positive) for c in result.cells]
            stem = f"{dataset.name}/{record.image_id}"
            write_image(out / "masks" / f"{stem}.png", result.refined_mask)
            write_image(out / "isolated" / f"{stem}.png", result.isolated)
            if not result.cells:
                summary.images_without_cells.append(f"{dataset.name}/{record.rel_path}")
                summary.without_cells[dataset.name] += 1
                log.warning(
                    "%s: no white cell found; the image contributes no crop",
                    user_path(ingested, dataset.name, record.rel_path),
                )
            for cell in result.cells:
                crop_rel = f"crops/{stem}_c{cell.index:03d}.png"
                write_image(out / crop_rel, cell.image)
                x, y, w, h = cell.bbox
                rows.append(
                    {
                        "crop": crop_rel,
                        "dataset": dataset.name,
                        "source_image": record.image_id,
                        "source": record.rel_path,
                        "group": f"{dataset.name}/{record.group}",
                        "label": record.label,
                        "positive": int(record.positive),
                        "blast": "" if cell.blast is None else int(cell.blast),
                        "x": x,
                        "y": y,
                        "w": w,
                        "h": h,
                        "centre_x": cell.centre[0],
                        "centre_y": cell.centre[1],
                        "area": cell.area,
                    }
                )
    atomic_write_csv(out / CROPS_MANIFEST, CROP_FIELDS, rows)
    summary.crops = len(rows)


def read_crops_manifest(root: Path | str) -> list[dict[str, str]]:
    return read_csv(Path(root) / CROPS_MANIFEST)


def _figure(examples, isolation: str) -> bytes:
    """Per held-out smear: contours (the isolating mask green, truth blue), blue channel, isolation, crops."""
    fig, axes = new_figure(len(examples), 4, (11, 2.5 * len(examples)))
    for row, (title, rgb, truth, result) in zip(axes, examples):
        outlined = rgb.copy()
        thickness = max(1, rgb.shape[1] // 400)
        for mask, colour in ((truth, (40, 80, 255)), (result.mask, (0, 200, 0))):
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(outlined, contours, -1, colour, thickness)
        crops = [c.image for c in result.cells[:6]]
        montage = np.hstack(crops) if crops else np.zeros((32, 32, 3), np.uint8)
        panels = (outlined, result.blue, result.isolated, montage)
        names = (
            f"{'U-Net' if isolation == 'unet' else 'ROI'} (green) vs truth (blue)",
            "blue channel (Fig. 6b)",
            "isolation (Fig. 6c)",
            "cell crops",
        )
        for ax, image, name in zip(row, panels, names):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(name)
            ax.axis("off")
        row[0].set_title(title)
    return figure_png(fig)


def _curves(history: dict[str, list[float]]) -> bytes:
    fig, axes = new_figure(1, 2, (10, 3.6))
    for ax, metric in zip(axes[0], ("loss", "dice_coefficient")):
        for prefix, style in (("", "-o"), ("val_", "--o")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label="validation" if prefix else "training")
        ax.set_ylabel(
            "soft Dice of the patches\n(the loss's, not the masks')" if metric == "dice_coefficient" else metric
        )
        epoch_axis(ax)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return figure_png(fig)


def _write_report(out: Path, figure_html: Path, summary: SegmentSummary, profile: Profile) -> None:
    cfg = profile.segment
    parts = [
        report.paragraph(
            f"Residual U-Net (depth {cfg.depth}, {cfg.base_filters} base filters, {cfg.patch_size} px patches at "
            f"{cfg.working_scale:.3f} of ALL-IDB1 scale), trained {summary.epochs} epochs on {summary.train_smears} smears "
            f"with masks from {summary.mask_source}; {summary.heldout_smears} smears held out."
        ),
        report.paragraph(
            (
                f"Against ground-truth masks on {summary.truth_smears} held-out smears (Dice and IoU pooled over their "
                f"pixels): U-Net Dice {summary.unet_dice:.3f}, IoU {summary.unet_iou:.3f}; the ROI step's Dice "
                f"{summary.roi_dice:.3f}, IoU {summary.roi_iou:.3f}."
                if summary.unet_dice is not None
                else "No held-out smear has a ground-truth mask, so no Dice against the truth is claimed."
            )
            + (
                f" The U-Net against the ROI masks on the held-out smears: Dice {summary.unet_vs_roi_dice:.3f}."
                if summary.unet_vs_roi_dice is not None
                else ""
            )
        ),
        report.paragraph(
            f"Cells were isolated with the {'U-Net' if summary.isolation == 'unet' else 'ROI step'}'s mask: "
            f"{summary.isolation_reason}. Only masks took part in this choice, no class label."
        ),
        report.table(summary.metrics()),
        report.paragraph(
            "Pixel scale of the images it was trained on (predict's default for new images of that "
            "kind): "
            + (
                "; ".join(
                    f"{kind}: {entry['scale'] if entry['scale'] is not None else 'from each width'} ({entry['source']})"
                    for kind, entry in summary.pixel_scales.items()
                )
                or "not one per kind"
            )
            + "."
        ),
    ]
    if summary.images_without_cells:
        parts.append(
            report.paragraph(
                f"WARNING: no white cell found in {len(summary.images_without_cells)} images ("
                + ", ".join(f"{name}: {count}" for name, count in summary.without_cells.items() if count)
                + "); they give no cell crop, and with train.stage3_images 'cells' or 'isolated' stage 3 scores such a "
                "smear as an error (never as an all-black image): " + ", ".join(summary.images_without_cells)
            )
        )
    parts.append(report.png_img(_curves(summary.history), "U-Net training curves"))
    figure = out / "segmentation.png"
    if figure.is_file():
        parts.append(report.png_img(figure.read_bytes(), "held-out smears: contours, blue channel, isolation, crops"))
    atomic_write_text(figure_html, report.page("segment: white cells and isolated lymphoblasts", *parts))


def run_segment_task(dataset, roi, model, cells, metrics, figure, profile: Profile) -> SegmentSummary:
    """The segment component's one call: the U-Net into KFP's model artifact, the crops into its cells
    artifact, the scores and the figure page."""
    summary = run_segment_stage(
        Path(dataset.path), Path(roi.path), Path(model.path), Path(cells.path), Path(figure.path), profile
    )
    model.metadata.update(
        {
            "framework": "keras",
            "mask_source": summary.mask_source,
            "patch_size": profile.segment.patch_size,
            "isolation": summary.isolation,
            "isolation_reason": summary.isolation_reason,
        }
    )
    cells.metadata.update({"crops": summary.crops})
    log_metrics(metrics, summary.metrics())
    return summary
