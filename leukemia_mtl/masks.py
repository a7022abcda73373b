"""Binary-mask operations shared by preprocess and segment (masks are uint8 0/255, HxW)."""

from __future__ import annotations

import cv2
import numpy as np


def fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 255, thickness=cv2.FILLED)
    return filled


def drop_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Keep the 8-connected components of at least `min_area` pixels."""
    _count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def mask_agreement(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU, recall and precision of a mask against ground truth (pixel counts)."""
    p, t = predicted > 0, truth > 0
    inter = float(np.count_nonzero(p & t))
    union = float(np.count_nonzero(p | t))
    predicted_px, truth_px = float(np.count_nonzero(p)), float(np.count_nonzero(t))
    return {
        "dice": 2 * inter / (predicted_px + truth_px) if predicted_px + truth_px else 1.0,
        "iou": inter / union if union else 1.0,
        "recall": inter / truth_px if truth_px else 1.0,
        "precision": inter / predicted_px if predicted_px else 1.0,
    }


def pooled_agreement(pairs) -> dict[str, float]:
    """`mask_agreement` over the pixels of many (predicted, truth) pairs at once: each image weighs by its pixels,
    and an empty mask against an empty one adds nothing (per image it would score a perfect 1)."""
    counts = np.zeros(4)  # intersection, union, predicted, truth
    for predicted, truth in pairs:
        p, t = predicted > 0, truth > 0
        counts += (np.count_nonzero(p & t), np.count_nonzero(p | t), np.count_nonzero(p), np.count_nonzero(t))
    inter, union, predicted_px, truth_px = (float(c) for c in counts)
    return {
        "dice": 2 * inter / (predicted_px + truth_px) if predicted_px + truth_px else 1.0,
        "iou": inter / union if union else 1.0,
        "recall": inter / truth_px if truth_px else 1.0,
        "precision": inter / predicted_px if predicted_px else 1.0,
    }
