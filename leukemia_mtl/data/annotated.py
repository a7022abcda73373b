"""Smears that people annotated with white-cell boxes, and how well a cell finder matches them; and where the real
data sets shared beside the clone are found.

TXL-PBC (lugan113/TXL-PBC_Dataset, MIT) is the shared example: four labs' smears told apart by image size, with
YOLO boxes. The bench (bench/cell_finder.py), the suite (tests/test_real_smears.py) and the ROI page's record of
the last measurement (`measured_finder`) all read it through here, so they count the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# TXL-PBC's four sources by image size; the rest (about 360x363) are PBC's
TXL_PBC_SOURCES = {(575, 575): "Raabin-WBC", (640, 480): "BCCD", (416, 416): "BCD"}
WHITE_CELL, RED_CELL = 0, 1  # TXL-PBC's YOLO classes (2: platelet)
MATCH_IOU = 0.5

Box = tuple[float, float, float, float]  # x, y, width, height in pixels


def shared_data(name: str) -> Path:
    """A real data set shared beside the clone (../shared/data/NAME), else under $LEUKEMIA_MTL_SHARED_DATA (the
    set's folder or its parent). The suite and the benches read TXL-PBC and pbc-sample through here."""
    beside = Path(__file__).resolve().parents[2].parent / "shared" / "data" / name
    if beside.is_dir():
        return beside
    env = os.environ.get("LEUKEMIA_MTL_SHARED_DATA")
    if env:
        return Path(env) if Path(env).name == name else Path(env) / name
    return beside


def txl_pbc_source(width: int, height: int) -> str:
    return TXL_PBC_SOURCES.get((width, height), "PBC")


def read_yolo_boxes(path: Path, width: int, height: int) -> dict[int, list[Box]]:
    """class -> boxes in pixels of one YOLO label file (`class cx cy w h`, fractions of the image); no file: none.
    A line that is not five numbers is an error naming the file and line, never skipped."""
    boxes: dict[int, list[Box]] = {}
    if not path.is_file():
        return boxes
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            cls, cx, cy, w, h = line.split()
            values = int(cls), float(cx), float(cy), float(w), float(h)
        except ValueError:
            raise ValueError(f"{path}:{number}: a YOLO box is 'class cx cy w h', got {line!r}") from None
        cls, cx, cy, w, h = values
        boxes.setdefault(cls, []).append(((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height))
    return boxes


def box_iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def touching(cells: list[Box], gap: float = 0.1) -> bool:
    """Whether any two of an image's white cells touch or nearly do (their boxes within `gap` of the larger side)."""
    for i, (ax, ay, aw, ah) in enumerate(cells):
        for bx, by, bw, bh in cells[i + 1 :]:
            pad = gap * max(aw, ah, bw, bh)
            if ax <= bx + bw + pad and bx <= ax + aw + pad and ay <= by + bh + pad and by <= ay + ah + pad:
                return True
    return False


@dataclass
class FinderTally:
    """A cell finder's regions against annotated white cells, image by image."""

    images: int = 0
    white_cells: int = 0
    matched: int = 0  # white-cell boxes some region overlaps with IoU >= MATCH_IOU
    centred: int = 0  # white-cell boxes whose centre lies in some region's box
    regions: int = 0
    missed_images: int = 0  # images with a white cell and no region at all

    def add(self, regions: list[Box], white_cells: list[Box]) -> None:
        self.images += 1
        self.white_cells += len(white_cells)
        self.regions += len(regions)
        self.matched += sum(any(box_iou(cell, region) >= MATCH_IOU for region in regions) for cell in white_cells)
        self.centred += sum(
            any(x <= cx + cw / 2 < x + w and y <= cy + ch / 2 < y + h for x, y, w, h in regions)
            for cx, cy, cw, ch in white_cells
        )
        self.missed_images += bool(white_cells) and not regions

    @property
    def recall(self) -> float:
        return self.matched / max(self.white_cells, 1)

    @property
    def regions_per_cell(self) -> float:
        return self.regions / max(self.white_cells, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "white_cells": self.white_cells,
            "recall": round(self.recall, 3),
            "centre_inside": round(self.centred / max(self.white_cells, 1), 3),
            "regions_per_cell": round(self.regions_per_cell, 2),
            "missed_images": self.missed_images,
        }


# the last bench/cell_finder.py measurement, shipped with the package for the ROI page
MEASURED_FILE = "cell_finder.json"


def measured_finder() -> dict[str, Any]:
    """What bench/cell_finder.py last measured on real annotated smears ({} where it never ran)."""
    path = resources.files("leukemia_mtl") / "measured" / MEASURED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def measured_path() -> Path:
    return Path(__file__).resolve().parents[1] / "measured" / MEASURED_FILE
