"""The pixel scale on real smears from four labs: read from the red cells, checked against the nuclei.

TXL-PBC (lugan113/TXL-PBC_Dataset, MIT licence; attribution in its README.md) lies beside the clone in
../shared/data/txl-pbc (or under $LEUKEMIA_MTL_SHARED_DATA); without it this test fails, it never skips. Its four
sources are told apart by image size, and its red-cell boxes say what the scale is: the median box side over
ALL-IDB1's red cell (7.5 um at 0.09 um per pixel). The first 16 images of each source in its `test` folder are
copied into a dataset of their own and estimated as a run estimates a camera.

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
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.preprocess import dataset_scale
from conftest import shared_data

SOURCES = {(575, 575): "Raabin-WBC", (640, 480): "BCCD", (416, 416): "BCD"}  # the rest (about 360x363): PBC
PER_SOURCE = 16
RED_CELL = 1


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """source -> (dataset folder, the scale its red-cell boxes imply)."""
    root = shared_data("txl-pbc")
    if not (root / "images" / "test").is_dir():
        pytest.fail(f"TXL-PBC not found at {root}: this test needs its copy (../shared/data/txl-pbc beside the clone, "
                    "or set LEUKEMIA_MTL_SHARED_DATA to the folder holding txl-pbc)", pytrace=False)
    chosen, sides = defaultdict(list), defaultdict(list)
    for path in sorted((root / "images" / "test").glob("*.jpg")):
        with Image.open(path) as image:
            width, height = image.size
        source = SOURCES.get((width, height), "PBC")
        if len(chosen[source]) == PER_SOURCE:
            continue
        chosen[source].append(path)
        label = root / "labels" / "test" / f"{path.stem}.txt"
        for line in label.read_text().split("\n") if label.is_file() else []:
            parts = line.split()
            if len(parts) == 5 and int(parts[0]) == RED_CELL:
                sides[source].append(np.sqrt(float(parts[3]) * width * float(parts[4]) * height))
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
    scale = dataset_scale(dataset, PreprocessConfig(threshold_method="adaptive"), data)
    assert scale.source.startswith("estimated from the red cells of "), scale.source
    assert scale.scale == pytest.approx(implied, rel=0.15), (scale.source, implied)
    nuclei = float(scale.source.rsplit("the nuclei say ", 1)[1].rstrip(")"))
    disagreement = max(nuclei, scale.scale) / min(nuclei, scale.scale)
    # loud exactly where the two rulers disagree by more than a quarter (Raabin-WBC: its nuclei read ~30 % high)
    assert bool(scale.warnings) == (disagreement > 1.25), (scale.warnings, disagreement)
    if source == "Raabin-WBC":
        assert scale.warnings and "the red cells' is used" in scale.warnings[0]
