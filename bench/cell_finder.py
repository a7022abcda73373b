"""How well the first stage finds white cells on real annotated smears from four labs (issue 32).

    python bench/cell_finder.py [--data ../shared/data/txl-pbc] [--methods adaptive fixed] [--limit 0]

Data: TXL-PBC (lugan113/TXL-PBC_Dataset, MIT; attribution in its README.md), 1,440 images from four sources told
apart by their size: Raabin-WBC (575x575), PBC (about 360x363), BCCD (640x480) and a Kaggle blood-cell detection
set (BCD, 416x416), with YOLO boxes (0 white cell, 1 red cell, 2 platelet).

Per source and per ROI method (`preprocess.threshold_method`: the adaptive level, the paper's fixed 98), with the
pixel scale estimated per source as a run estimates it per camera (preprocess.measure_scale: from the red cells,
else the nuclei, on up to `preprocess.scale_sample_images` images):
- recall at IoU >= 0.5: the share of white-cell boxes that some region's box overlaps with IoU >= 0.5;
- centre inside: the share of white-cell boxes whose centre falls inside some region's box;
- regions per white cell: all regions over all white-cell boxes (1 is ideal; touching cells merge below it,
  red cells and specks taken for nuclei push it above);
- images with a white cell and no region;
- the estimated scale against the scale the annotations imply: the median red-cell box side over ALL-IDB1's
  red cell (7.5 um at 0.09 um per pixel: 83 px), where the source has red-cell boxes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leukemia_mtl.config import REFERENCE_PIXEL_SIZE_UM, PreprocessConfig, get_profile  # noqa: E402
from leukemia_mtl.data.images import read_image  # noqa: E402
from leukemia_mtl.preprocess import compute_roi, measure_scale  # noqa: E402

SOURCES = {(575, 575): "Raabin-WBC", (640, 480): "BCCD", (416, 416): "BCD"}  # the rest (about 360x363): PBC
RED_CELL_UM = 7.5
WHITE, RED = 0, 1


def source_of(width: int, height: int) -> str:
    return SOURCES.get((width, height), "PBC")


def yolo_boxes(path: Path, width: int, height: int) -> dict[int, list[tuple[float, float, float, float]]]:
    """class -> [(x, y, w, h) in pixels] of a YOLO label file (missing file: no boxes)."""
    boxes: dict[int, list] = defaultdict(list)
    if path.is_file():
        for line in path.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 5:
                cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:])
                boxes[cls].append(((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height))
    return boxes


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0.0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0.0, min(ay + ah, by + bh) - max(ay, by))
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _found(found) -> str:
    if found is None:
        return "none"
    return f"{found.scale:g} ({found.ruler}" + (f"; nuclei {found.other:g})" if found.other else ")")


def shared_data(name: str) -> Path:
    root = Path(os.environ.get("LEUKEMIA_MTL_SHARED_DATA", REPO.parent / "shared" / "data"))
    return root / name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="default: ../shared/data/txl-pbc beside the clone")
    parser.add_argument("--methods", nargs="+", default=["adaptive", "fixed"], choices=["adaptive", "fixed"])
    parser.add_argument("--limit", type=int, default=0, help="images per source (0: all)")
    args = parser.parse_args(argv)
    root = args.data or shared_data("txl-pbc")
    images = sorted((root / "images").rglob("*.jpg")) + sorted((root / "images").rglob("*.png"))
    if not images:
        sys.exit(f"{root}: no images under images/ (the TXL-PBC copy is expected there)")
    data_cfg = get_profile("workstation").data
    by_source: dict[str, list] = defaultdict(list)
    for path in images:
        loaded = read_image(path, max_pixels=data_cfg.max_pixels).rgb
        height, width = loaded.shape[:2]
        label = root / "labels" / path.parent.name / f"{path.stem}.txt"
        by_source[source_of(width, height)].append((path, loaded, yolo_boxes(label, width, height)))
    if args.limit:
        by_source = {source: items[:args.limit] for source, items in by_source.items()}
    print(f"{root}: " + ", ".join(f"{source} {len(items)} images" for source, items in sorted(by_source.items())))
    print("| method | source | images | white cells | recall IoU>=0.5 | centre inside | regions per white cell | "
          "images with a white cell and no region | estimated scale | scale from red-cell boxes | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    reference_red_px = RED_CELL_UM / REFERENCE_PIXEL_SIZE_UM
    for method in args.methods:
        cfg = PreprocessConfig(threshold_method=method)
        for source, items in sorted(by_source.items()):
            started = time.perf_counter()
            picks = np.linspace(0, len(items) - 1, min(len(items), cfg.scale_sample_images)).round().astype(int)
            found = measure_scale((items[i][1] for i in sorted(set(picks.tolist()))), cfg, single_cell=False)
            scale = found.scale if found else None
            whites = matched = centred = regions = missed_images = 0
            red_sides = []
            for _, rgb, boxes in items:
                roi = compute_roi(rgb, cfg, scale if scale is not None else rgb.shape[1] / 2592)
                regions += len(roi.boxes)
                cells = boxes.get(WHITE, [])
                whites += len(cells)
                matched += sum(any(iou(cell, region) >= 0.5 for region in roi.boxes) for cell in cells)
                centred += sum(any(x <= c[0] + c[2] / 2 < x + w and y <= c[1] + c[3] / 2 < y + h for x, y, w, h in roi.boxes)
                               for c in cells)
                missed_images += bool(cells) and not roi.boxes
                red_sides += [np.sqrt(w * h) for _, _, w, h in boxes.get(RED, [])]
            implied = f"{np.median(red_sides) / reference_red_px:.3f} ({len(red_sides)} boxes)" if red_sides else "no red-cell boxes"
            print(f"| {method} | {source} | {len(items)} | {whites} | {matched / max(whites, 1):.3f} | {centred / max(whites, 1):.3f} | "
                  f"{regions / max(whites, 1):.2f} | {missed_images} | {_found(found)} | {implied} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
