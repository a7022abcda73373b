"""Shortcuts in a data set: does something other than the cells (image size, camera, file format) tell the class?

Public ALL sets carry them: ALL-IDB1's normal smears are 2592x1944 (all but one) while 33 of its 49 ALL
smears are 1712x1368 from another camera, so image size alone finds most ALL smears and a colour histogram
scores 99.1 %. A model can learn the camera instead of the cells, and its cross-validated score says nothing
about a smear from a third camera. Ingest measures each attribute here from the files' headers (nothing is
decoded): how well the attribute alone predicts the class, cross-validated with scikit-learn on the same
kind of grouped folds the run uses, and the report and the run's summary say so loudly when it does.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from leukemia_mtl.stages import POSITIVE_CLASS

log = logging.getLogger(__name__)

ATTRIBUTES = ("image size", "camera", "file format")
# a shortcut: the attribute alone reaches this cross-validated balanced accuracy (chance: 0.5 for detection)
SHORTCUT_BALANCED_ACCURACY = 0.75
EXIF_MAKE, EXIF_MODEL = 0x010F, 0x0110


@dataclass(frozen=True)
class Shortcut:
    dataset: str
    attribute: str  # one of ATTRIBUTES
    task: str  # "detection" (negative vs the rest) or "classes" (every class)
    balanced_accuracy: float  # cross-validated, from the attribute alone
    chance: float  # 1 / number of classes
    values: int  # distinct values of the attribute
    # per value, its images per class (the largest few): what a reader checks by eye
    table: dict[str, dict[str, int]]

    @property
    def flagged(self) -> bool:
        return self.balanced_accuracy >= SHORTCUT_BALANCED_ACCURACY

    def sentence(self) -> str:
        rows = "; ".join(
            f"{value}: " + ", ".join(f"{n} {label}" for label, n in counts.items())
            for value, counts in list(self.table.items())[:4]
        )
        return (
            f"{self.dataset}: the {self.attribute} alone predicts {'ALL vs normal' if self.task == 'detection' else 'the class'} "
            f"with balanced accuracy {self.balanced_accuracy:.2f} (cross-validated; chance {self.chance:.2f}) - {rows}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "flagged": self.flagged}


def file_attributes(path: Path) -> dict[str, str]:
    """Image size, camera (EXIF make and model) and file format, from the header alone."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            camera = " ".join(str(exif.get(tag, "")).strip("\x00 ") for tag in (EXIF_MAKE, EXIF_MODEL)).strip()
            return {
                "image size": f"{image.width}x{image.height}",
                "camera": camera or "not recorded",
                "file format": image.format or path.suffix.lower(),
            }
    except (OSError, UnidentifiedImageError, ValueError):
        return {"image size": "unreadable", "camera": "unreadable", "file format": path.suffix.lower()}


def camera_of(path: Path) -> str:
    """What tells one camera from another: its EXIF make and model, else the image size (ALL-IDB1's two
    cameras record no EXIF; their sizes differ)."""
    attributes = file_attributes(path)
    return (
        attributes["camera"] if attributes["camera"] not in ("not recorded", "unreadable") else attributes["image size"]
    )


def attribute_accuracy(values: list[str], labels: list[str], groups: list[str], seed: int = 0) -> float:
    """Cross-validated balanced accuracy of a classifier that sees only `values` (one-hot), grouped folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    y = np.asarray(labels)
    smallest = min(Counter(labels).values())
    folds = min(5, smallest, len(set(groups)))
    if folds < 2:
        return float("nan")
    model = make_pipeline(
        OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=1000, class_weight="balanced")
    )
    x = np.asarray(values, dtype=object).reshape(-1, 1)
    predicted = cross_val_predict(
        model, x, y, groups=groups, cv=StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    )
    return float(balanced_accuracy_score(y, predicted))


def find_shortcuts(dataset, seed: int = 0) -> list[Shortcut]:
    """Every attribute with more than one value in `dataset`, scored for detection and for all classes."""
    records = dataset.records
    if len(records) < 4:
        return []
    attributes = [file_attributes(r.path) for r in records]
    groups = [r.group for r in records]
    found = []
    tasks = {
        "detection": [dataset.negative_class if r.label == dataset.negative_class else POSITIVE_CLASS for r in records]
    }
    if len({r.label for r in records}) > 2:
        tasks["classes"] = [r.label for r in records]
    for attribute in ATTRIBUTES:
        values = [a[attribute] for a in attributes]
        if len(set(values)) < 2:
            continue
        for task, labels in tasks.items():
            if len(set(labels)) < 2:
                continue
            score = attribute_accuracy(values, labels, groups, seed)
            if np.isnan(score):
                continue
            table: dict[str, dict[str, int]] = {}
            for value, _count in Counter(values).most_common():
                table[value] = dict(Counter(label for v, label in zip(values, labels) if v == value).most_common())
            found.append(
                Shortcut(
                    dataset.name,
                    attribute,
                    task,
                    round(score, 4),
                    round(1 / len(set(labels)), 4),
                    len(set(values)),
                    table,
                )
            )
    for shortcut in found:
        if shortcut.flagged:
            log.warning("shortcut: %s", shortcut.sentence())
    return found
