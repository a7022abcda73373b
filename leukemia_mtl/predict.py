"""Classify new images with a release, by the same steps the evaluation scored.

A smear goes through the segmenter, its white cells are isolated on black (the paper's blue-
channel step), and the stage-3 models give the FAB class and the detection verdict: as the mean
over the smear's isolated cells (the default, `train.stage3_images="cells"`), or from the isolated
smear (or the original) squared to the model's input, as the release was trained. The stage-2
model scores every segmented cell for the overlay. A single-cell image (ALL-IDB2 style)
is scored by the stage-2 model on its central cell.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from leukemia_mtl.config import DataConfig, PreprocessConfig, SegmentConfig
from leukemia_mtl.errors import LeukemiaMtlError

log = logging.getLogger(__name__)

KINDS = ("auto", "smear", "cell")
# auto: an image at most this many pixels on its longer side and nearly square is a single cell
CELL_IMAGE_MAX_SIDE = 512
CELL_IMAGE_MAX_ASPECT = 1.25


class PredictError(LeukemiaMtlError):
    """An image that cannot be classified (no white cell in it, wrong kind)."""


def _config(cls, values: dict):
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields})


@dataclass
class Prediction:
    image: str
    kind: str
    label: str
    probabilities: dict[str, float]
    verdict: str  # detection: the negative class or "ALL"
    all_probability: float
    cells: list[dict] = field(default_factory=list)
    overlay: str | None = None
    pixel_scale: float | None = None  # image pixels per ALL-IDB1 pixel, and where it came from
    pixel_scale_source: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_pixel_size(pixel_size_um: float | None) -> None:
    if pixel_size_um is not None and not 0 < pixel_size_um <= 100:
        raise PredictError(f"pixel size {pixel_size_um!r}: give micrometres per pixel, a number above 0 (ALL-IDB: 0.09)")


class Predictor:
    """`pixel_size_um`: micrometres per pixel of the images to classify (--pixel-size); without it, the training
    images' pixel size of that kind (the release assumes the same microscope), else an estimate from the image."""

    def __init__(self, release_dir: Path | str, pixel_size_um: float | None = None) -> None:
        from leukemia_mtl.release import verify
        from leukemia_mtl.segment.infer import Segmenter
        from leukemia_mtl.train.stage import load_classifier

        _check_pixel_size(pixel_size_um)
        self.release_dir = Path(release_dir)
        self.manifest = verify(self.release_dir)
        gate = self.manifest.get("gate") or {}
        if gate and not gate.get("passed"):  # released with evaluate.release_gate=flag: say so before every run
            log.warning("release %s failed its gate (%s): its answers are no better than a trivial model's",
                        self.manifest["version"], "; ".join(gate.get("reasons", [])))
        settings = self.manifest["settings"]
        self.segment_cfg = _config(SegmentConfig, settings["segment"])
        self.data_cfg = _config(DataConfig, settings["data"])
        self.preprocess_cfg = _config(PreprocessConfig, settings.get("preprocess", {}))
        self.pixel_size_um = pixel_size_um
        self.input_size = int(settings["input_size"])
        self.stage3_images = settings["stage3_images"]
        self.segmenter = Segmenter.load(self.release_dir / "segmenter")
        self.models = {role: load_classifier(self.release_dir / role) for role in ("detection", "fab", "cells")}

    def _batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Images squared to the models' input, as the evaluation arrays were."""
        from leukemia_mtl.train.data import square

        return np.stack([square(image, self.input_size) for image in images]).astype(np.float32)

    def _probabilities(self, role: str, batch: np.ndarray) -> np.ndarray:
        """(images, classes) probabilities of one role's model."""
        from leukemia_mtl.train.stage import class_probabilities, model_outputs

        model, info = self.models[role]
        return class_probabilities(model_outputs(model, batch, len(batch)), info.head)

    def pixel_scale(self, rgb: np.ndarray, kind: str) -> tuple[float, str]:
        """(scale, where it came from) of an image of `kind`: see the class's docstring."""
        from leukemia_mtl.config import REFERENCE_PIXEL_SIZE_UM
        from leukemia_mtl.preprocess import estimate_scale, scale_of, width_guess

        if self.pixel_size_um:
            return scale_of(self.pixel_size_um), f"given ({self.pixel_size_um:g} um per pixel)"
        recorded = self.segmenter.info.pixel_scales
        if recorded is None:  # a release from before pixel scales were recorded: its images were scaled by width
            return width_guess(rgb.shape[1], kind == "cell"), "from the image width, as this release was trained"
        trained = recorded.get(kind)
        if trained and trained["scale"] is not None:
            return trained["scale"], (f"the training {kind} images' ({REFERENCE_PIXEL_SIZE_UM / trained['scale']:.4g} um per "
                                      f"pixel, {trained['source']}; --pixel-size if yours differ)")
        if trained:
            return width_guess(rgb.shape[1], kind == "cell"), "from the image width, as the training images' was"
        estimate = estimate_scale([rgb], self.preprocess_cfg, kind == "cell")
        if estimate is not None:
            return estimate[0], "estimated from this image's nuclei (give --pixel-size for a measured one)"
        return width_guess(rgb.shape[1], kind == "cell"), "assumed from the image width (no nucleus to estimate it from)"

    def _segment(self, rgb: np.ndarray, kind: str):
        from leukemia_mtl.preprocess import compute_roi

        scale, source = self.pixel_scale(rgb, kind)
        roi = compute_roi(rgb, self.preprocess_cfg, scale).roi_mask if self.segmenter.info.isolation == "roi" else None
        return self.segmenter.segment(rgb, scale, self.segment_cfg, central_only=kind == "cell", roi_mask=roi), scale, source

    def kind_of(self, rgb: np.ndarray) -> str:
        height, width = rgb.shape[:2]
        square_ish = max(height, width) / min(height, width) <= CELL_IMAGE_MAX_ASPECT
        return "cell" if max(height, width) <= CELL_IMAGE_MAX_SIDE and square_ish else "smear"

    def predict(self, path: Path | str, kind: str = "auto", overlay_path: Path | str | None = None) -> Prediction:
        from leukemia_mtl.data.images import read_image

        if kind not in KINDS:
            raise PredictError(f"kind must be one of {KINDS}, got {kind!r}")
        rgb = read_image(path, max_pixels=self.data_cfg.max_pixels, min_side=self.data_cfg.min_side).rgb
        kind = self.kind_of(rgb) if kind == "auto" else kind
        negative = self.data_cfg.negative_class
        if kind == "cell":
            result, scale, source = self._segment(rgb, "cell")
            if not result.cells:
                raise PredictError(f"{path}: no white cell found in this single-cell image")
            probability = self._probabilities("cells", self._batch([result.cells[0].image]))[0]
            classes = self.models["cells"][1].classes
            blast = float(probability[1])
            return Prediction(str(path), kind, classes[int(probability.argmax())], dict(zip(classes, map(float, probability))),
                              "ALL" if blast >= 0.5 else negative, blast, pixel_scale=round(scale, 4), pixel_scale_source=source)

        if min(rgb.shape[:2]) < self.input_size:
            raise PredictError(f"{path}: is {rgb.shape[1]}x{rgb.shape[0]} px, smaller than the model's {self.input_size} px "
                               "input: too small for a smear (a single-cell image? try --kind cell)")
        result, scale, source = self._segment(rgb, "smear")
        if self.stage3_images == "cells":  # as the evaluation scored smears: the mean over their cells
            if not result.cells:
                raise PredictError(f"{path}: no white cell found in this smear, so there is nothing to classify")
            batch = self._batch([c.image for c in result.cells])
            fab = self._probabilities("fab", batch).mean(axis=0)
            detection = self._probabilities("detection", batch).mean(axis=0)
        else:
            if self.stage3_images == "isolated" and not result.cells:  # as training: no cell, no (black) image
                raise PredictError(f"{path}: no white cell found in this smear, so there is nothing to classify")
            batch = self._batch([result.isolated if self.stage3_images == "isolated" else rgb])
            fab = self._probabilities("fab", batch)[0]
            detection = self._probabilities("detection", batch)[0]
        fab_classes, detection_classes = self.models["fab"][1].classes, self.models["detection"][1].classes
        all_probability = float(detection[detection_classes.index("ALL")])
        cells = []
        if result.cells:
            scores = self._probabilities("cells", self._batch([c.image for c in result.cells]))[:, 1]
            cells = [{"index": c.index, "bbox": list(c.bbox), "centre": list(c.centre), "blast_probability": float(s)}
                     for c, s in zip(result.cells, scores)]
        prediction = Prediction(str(path), "smear", fab_classes[int(fab.argmax())], dict(zip(fab_classes, map(float, fab))),
                                "ALL" if all_probability >= 0.5 else negative, all_probability, cells,
                                pixel_scale=round(scale, 4), pixel_scale_source=source)
        if overlay_path is not None:
            prediction.overlay = str(write_overlay(rgb, result.refined_mask, cells, prediction, Path(overlay_path)))
        return prediction


def write_overlay(rgb: np.ndarray, mask: np.ndarray, cells: list[dict], prediction: Prediction, path: Path) -> Path:
    """Each segmented cell outlined (red: likely blast, green: not) with its blast probability."""
    from leukemia_mtl.io_utils import write_image

    canvas = rgb.copy()
    thickness = max(1, rgb.shape[1] // 400)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = {tuple(int(v) for v in cv2.boundingRect(c)): c for c in contours}
    for cell in cells:
        colour = (220, 30, 30) if cell["blast_probability"] >= 0.5 else (30, 180, 30)
        x, y, w, h = cell["bbox"]
        contour = boxes.get((x, y, w, h))
        if contour is not None:
            cv2.drawContours(canvas, [contour], -1, colour, thickness)
        else:
            cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness)
        cv2.putText(canvas, f"{cell['blast_probability']:.2f}", (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, colour, thickness, cv2.LINE_AA)
    banner = f"{prediction.label} ({prediction.probabilities[prediction.label]:.2f}); detection: {prediction.verdict}"
    cv2.putText(canvas, banner, (8, 8 + 14 * thickness), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thickness, (255, 255, 255),
                thickness + 1, cv2.LINE_AA)
    return write_image(path, canvas)


def image_paths(inputs: list[str]) -> Iterator[tuple[Path | None, str | None]]:
    """(image, None) for every file given and every image file under a folder given (sorted,
    recursive); (None, message) for what is not there or not an image, so nothing drops silently."""
    from leukemia_mtl.data.files import not_regular, walk
    from leukemia_mtl.errors import printable
    from leukemia_mtl.data.images import IMAGE_EXTENSIONS

    for item in map(Path, inputs):
        if item.is_dir():  # the walk validate and ingest use: links followed, loops and FIFOs refused
            tree = walk(item)
            found = False
            for path in tree.files:
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    found = True
                    yield path, None
                else:
                    yield None, f"{path}: skipped, not an image file (suffix {path.suffix or 'none'})"
            for problem in tree.problems:
                yield None, str(problem)
            if tree.hidden_note():  # a note, not a failed image: ._ files must not fail a run
                log.warning("%s", printable(str(tree.hidden_note())))
            if not found:
                yield None, f"{item}: folder holds no image files"
        elif item.exists() or item.is_symlink():
            problem = not_regular(item)
            yield (item, None) if problem is None else (None, f"{item}: {problem}")
        else:
            yield None, f"{item}: no such file or folder"


def iter_predictions(model: str, inputs: list[str], kind: str = "auto", overlay_dir: Path | None = None,
                     cache_dir: Path | None = None, pixel_size_um: float | None = None) -> Iterator[tuple[dict | None, str | None]]:
    """(prediction, None) or (None, error) per image, one at a time: a folder of thousands streams
    through in constant memory, and one bad image does not stop the others."""
    from leukemia_mtl.release import fetch

    _check_pixel_size(pixel_size_um)  # before fetching a release from object storage
    predictor = Predictor(fetch(model, cache_dir), pixel_size_um)
    overlay_names: set[str] = set()
    for path, problem in image_paths(inputs):
        if problem is not None:
            yield None, problem
            continue
        try:
            prediction = predictor.predict(path, kind, _overlay_path(overlay_dir, path, overlay_names))
        except LeukemiaMtlError as exc:
            yield None, str(exc)
        else:
            yield prediction.to_dict(), None


def _overlay_path(overlay_dir: Path | None, image: Path, used: set[str]) -> Path | None:
    """<stem>_overlay.png, numbered when images of one name come from different folders, so no
    overlay overwrites another; the same inputs in the same order give the same names."""
    if overlay_dir is None:
        return None
    name, n = f"{image.stem}_overlay.png", 1
    while name in used:
        n += 1
        name = f"{image.stem}-{n}_overlay.png"
    used.add(name)
    return Path(overlay_dir) / name


def format_prediction(p: dict) -> str:
    probabilities = " ".join(f"{c}={v:.3f}" for c, v in p["probabilities"].items())
    line = f"{p['image']}: {p['kind']} -> {p['label']} [{probabilities}]; detection {p['verdict']} (P(ALL)={p['all_probability']:.3f})"
    if p["kind"] == "smear":
        blasts = sum(c["blast_probability"] >= 0.5 for c in p["cells"])
        line += f"; {len(p['cells'])} cells, {blasts} scored as blasts"
    if p.get("overlay"):
        line += f"; overlay {p['overlay']}"
    if p.get("pixel_scale") is not None:
        line += f"; pixel scale {p['pixel_scale']:g} ({p['pixel_scale_source']})"
    return line

