"""Real smears from four labs: the cell finder held to its goal, and the pixel scale read from the red cells.

TXL-PBC (lugan113/TXL-PBC_Dataset, MIT licence; attribution in its README.md) lies beside the clone in
../shared/data/txl-pbc (or under $LEUKEMIA_MTL_SHARED_DATA); without it this test fails, it never skips. Its four
sources are told apart by image size, and its red-cell boxes say what the scale is: the median box side over
ALL-IDB1's red cell (7.5 um at 0.09 um per pixel). The first 16 images of each source in its `test` folder are
copied into a dataset of their own and estimated as a run estimates a camera.

The finder: every image of each source in TXL-PBC's `val` and `test` folders (61-150 per source, 432 in all: the
split the bench quotes; the finder's settings were chosen on its `train` folder, bench/cell_finder.py --sweep and
--sweep-split), at the scale measured on those images as a run measures it (labels unused). Goal (issue 32): recall
of white-cell boxes at IoU >= 0.5 of at least 0.9, at most 1.5 regions per white cell, no image with a white cell
left without a region. Why val and test, not a handful: on Raabin-WBC's 51 test-folder cells one cell is 2 points
of recall (a first setting of the cut took a bilobed eosinophil for two touching cells and moved it from 0.902 to
0.882 while it found a touching pair in `val`): the gate must not be a coin flip at the goal. The paper's fixed level, measured the
same way on the `test` folder, must stay far below: the test measures something.

Margins (bench/cell_finder.py over all 1,440 images, BENCHMARKS.md): the red cells read 0.95-1.10x the boxes'
scale on every source; the nuclei 1.03-1.26x. Raabin-WBC's nuclei read ~30 % above its red cells, which must
be said loudly.
"""

from __future__ import annotations

import shutil
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from leukemia_mtl.config import REFERENCE_RED_CELL_DIAMETER, PreprocessConfig, get_profile
from leukemia_mtl.data.annotated import RED_CELL, WHITE_CELL, FinderTally, read_yolo_boxes, shared_data, txl_pbc_source
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.images import read_image
from leukemia_mtl.preprocess import compute_roi, dataset_scale, measure_scale

PER_SOURCE = 16


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """source -> (dataset folder, the scale its red-cell boxes imply)."""
    root = shared_data("txl-pbc")
    if not (root / "images" / "test").is_dir():
        pytest.fail(
            f"TXL-PBC not found at {root}: this test needs its copy (../shared/data/txl-pbc beside the clone, "
            "or set LEUKEMIA_MTL_SHARED_DATA to the folder holding txl-pbc)",
            pytrace=False,
        )
    chosen, sides = defaultdict(list), defaultdict(list)
    for path in sorted((root / "images" / "test").glob("*.jpg")):
        with Image.open(path) as image:
            width, height = image.size
        source = txl_pbc_source(width, height)
        if len(chosen[source]) == PER_SOURCE:
            continue
        chosen[source].append(path)
        boxes = read_yolo_boxes(root / "labels" / "test" / f"{path.stem}.txt", width, height)
        sides[source] += [np.sqrt(w * h) for _, _, w, h in boxes.get(RED_CELL, [])]
    out = tmp_path_factory.mktemp("txl_pbc")
    found = {}
    for source, paths in chosen.items():
        for index, path in enumerate(paths):  # two classes, as a dataset needs; the scale ignores them
            label = ("normal", "ALL")[index % 2]
            (out / source / label).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out / source / label / path.name)
        found[source] = (out / source, float(np.median(sides[source])) / REFERENCE_RED_CELL_DIAMETER)
    assert sorted(found) == ["BCCD", "BCD", "PBC", "Raabin-WBC"] and all(len(p) == PER_SOURCE for p in chosen.values())
    return found


@pytest.mark.parametrize("source", ["BCCD", "BCD", "PBC", "Raabin-WBC"])
def test_the_red_cells_give_each_labs_pixel_scale(sources, source):
    folder, implied = sources[source]
    data = get_profile("workstation").data
    dataset = load_datasets(folder, data, progress=False)[0]
    scale = dataset_scale(dataset, get_profile("workstation").preprocess, data)
    assert scale.source.startswith("estimated from the red cells of "), scale.source
    assert scale.scale == pytest.approx(implied, rel=0.15), (scale.source, implied)
    nuclei = float(scale.source.rsplit("the nuclei say ", 1)[1].rstrip(")"))
    disagreement = max(nuclei, scale.scale) / min(nuclei, scale.scale)
    # loud exactly where the two rulers disagree by more than a quarter (Raabin-WBC: its nuclei read ~30 % high)
    assert bool(scale.warnings) == (disagreement > 1.25), (scale.warnings, disagreement)
    if source == "Raabin-WBC":
        assert scale.warnings and "the red cells' is used" in scale.warnings[0]


@pytest.fixture(scope="module")
def held_out_smears():
    """(folder, source) -> [(rgb, white-cell boxes)] of every image in TXL-PBC's val and test folders."""
    root = shared_data("txl-pbc")
    if not (root / "images" / "test").is_dir():
        pytest.fail(f"TXL-PBC not found at {root} (see this module's docstring)", pytrace=False)
    smears = defaultdict(list)
    for folder in ("val", "test"):
        for path in sorted((root / "images" / folder).glob("*.jpg")):
            rgb = read_image(path, max_pixels=get_profile("workstation").data.max_pixels).rgb
            height, width = rgb.shape[:2]
            boxes = read_yolo_boxes(root / "labels" / folder / f"{path.stem}.txt", width, height)
            smears[folder, txl_pbc_source(width, height)].append((rgb, boxes.get(WHITE_CELL, [])))
    return smears


def _tally(smears, cfg: PreprocessConfig) -> FinderTally:
    found = measure_scale((rgb for rgb, _ in smears), cfg, single_cell=False)
    tally = FinderTally()
    for rgb, cells in smears:
        tally.add(compute_roi(rgb, cfg, found.scale).boxes, cells)
    return tally


@pytest.mark.parametrize("source", ["BCCD", "BCD", "PBC", "Raabin-WBC"])
@pytest.mark.slow
def test_the_nuclear_finder_meets_the_goal_on_each_labs_smears(held_out_smears, source):
    cfg = get_profile("workstation").preprocess
    assert cfg.threshold_method == "nuclear"  # what a run on another lab's smears uses
    tally = _tally(held_out_smears["val", source] + held_out_smears["test", source], cfg)
    assert tally.images >= 61 and tally.white_cells >= tally.images - 3
    assert tally.recall >= 0.9 and tally.regions_per_cell <= 1.5 and tally.missed_images == 0, tally.as_dict()


@pytest.mark.slow
def test_the_papers_fixed_level_misses_most_of_them(held_out_smears):
    pooled = FinderTally()
    for (folder, _), smears in held_out_smears.items():
        if folder != "test":
            continue
        tally = _tally(smears, PreprocessConfig(threshold_method="fixed"))
        pooled.matched, pooled.white_cells = pooled.matched + tally.matched, pooled.white_cells + tally.white_cells
    assert pooled.recall < 0.5, pooled.as_dict()
