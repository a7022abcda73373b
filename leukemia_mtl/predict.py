"""Classify new images with a release, by the same steps the evaluation scored, and say it so a
haematologist can act on it.

A smear goes through the segmenter, its white cells are isolated on black (the paper's blue-
channel step), and the stage-3 models give the detection verdict and the FAB type: as the mean
over the smear's isolated cells (the default, `train.stage3_images="cells"`), or from the isolated
smear (or the original) squared to the model's input, as the release was trained. The stage-2
model scores every segmented cell. A single-cell image (ALL-IDB2 style) is scored by the stage-2
model on its central cell.

What an answer says, in this order: the detection verdict at the release's operating point (the
threshold on P(ALL) that reached the target sensitivity on cross-validation's inner splits;
`--threshold` to choose another), the FAB type only for a smear called ALL, and a flag where the
smear's verdict and its cells' scores disagree. Every answer carries the model's version and the
settings used; `explain=True` adds Grad-CAM heat maps (leukemia_mtl.explain). Research use only.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from leukemia_mtl.bundles import class_probabilities, compiled_forward, load_classifier, model_outputs, square
from leukemia_mtl.config import REFERENCE_PIXEL_SIZE_UM, DataConfig, EvaluateConfig, PreprocessConfig, SegmentConfig
from leukemia_mtl.data.files import mark_output, not_regular, walk
from leukemia_mtl.data.images import IMAGE_EXTENSIONS, decode_image, read_image
from leukemia_mtl.errors import LeukemiaMtlError, printable
from leukemia_mtl.evaluate import describe_threshold
from leukemia_mtl.explain import GradCam, HeatMapper, write_heatmap_panels
from leukemia_mtl.io_utils import write_image
from leukemia_mtl.model_card import RESEARCH_USE
from leukemia_mtl.preprocess import compute_roi, field_problem, measure_scale, scale_of, width_guess
from leukemia_mtl.release import fetch, verify
from leukemia_mtl.segment.infer import Segmentation, Segmenter, SegmentRequest
from leukemia_mtl.stages import CELL_NEGATIVE, CELL_POSITIVE, POSITIVE_CLASS
from leukemia_mtl.stain import normalise_batch, target_from_dict

log = logging.getLogger(__name__)

KINDS = ("auto", "smear", "cell")
# auto: an image at most this many pixels on its longer side and nearly square is a single cell
CELL_IMAGE_MAX_SIDE = 512
CELL_IMAGE_MAX_ASPECT = 1.25
# predict over a folder answers this many images per call of the models (--batch): bench/predict_side_by_side.py
BATCH_IMAGES = 16
# a call of the U-Net at predict holds at least this many pixels of windows (64 of the demo's 64 px patches: 25 %
# less time per window than 16 on 2 cores; a paper-sized 256 px patch keeps the release's segment.predict_batch_size)
WINDOW_PIXELS_PER_CALL = 64 * 64 * 64
# a call of a classifier at predict holds at most this many cells (a batch of 16 smears has about 100 at the demo's)
CROPS_PER_CALL = 64
# the stage-2 cell model's boundary: a cell "scores as a blast" at P(blast) >= this (its sigmoid's middle; untuned)
CELL_BLAST_THRESHOLD = 0.5
NOTICE = RESEARCH_USE
CSV_COLUMNS = (
    "image",
    "status",
    "error",
    "kind",
    "verdict",
    "all_probability",
    "threshold",
    "fab_type",
    "fab_probability",
    "cells",
    "cells_scored_as_blasts",
    "disagreement",
    "overlay",
    "explanation",
    "pixel_scale",
    "conversions",
    "model_version",
)
BLAST_COLOUR, OTHER_COLOUR = (230, 40, 40), (40, 200, 60)  # RGB: outlines of cells scored as blasts and not


def _why(rgb: np.ndarray, scale: float) -> str:
    """Where no white cell was found: what is wrong with the field, if anything is (blank, overexposed, out of focus)."""
    problem = field_problem(rgb, scale)
    return f" (the image is {problem})" if problem else ""


class PredictError(LeukemiaMtlError):
    """An image that cannot be classified (no white cell in it, wrong kind)."""


def _config(cls, values: dict):
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields})


@dataclass
class Prediction:
    image: str
    kind: str
    verdict: str  # a smear's detection at `threshold`: POSITIVE_CLASS or the negative class; a cell's: CELL_POSITIVE or CELL_NEGATIVE
    all_probability: float
    threshold: float
    fab: dict | None  # {"type", "probability", "probabilities"}: smears called ALL only
    cells: list[dict] = field(default_factory=list)  # per cell: index, bbox, centre, blast_probability, blast
    cells_scored_as_blasts: int = 0
    disagreement: str | None = None  # the smear's verdict and its cells' scores point different ways
    overlay: str | None = None
    explanation: str | None = None  # Grad-CAM heat maps (explain=True)
    pixel_scale: float | None = None  # image pixels per ALL-IDB1 pixel, and where it came from
    pixel_scale_source: str = ""
    model_version: str = ""
    conversions: list[str] = field(default_factory=list)  # what reading the file changed (16-bit, alpha, EXIF turn)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ImageRequest:
    """One image to answer (`Predictor.predict_many`): the file, or `data` named by `path`; where to write its
    overlay and heat maps."""

    path: Path | str
    kind: str = "auto"
    overlay_path: Path | str | None = None
    explain_path: Path | str | None = None
    data: bytes | None = None


@dataclass
class _Staged:
    """An image read and ready for the segmenter."""

    request: ImageRequest
    conversions: list[str]
    kind: str
    segment: SegmentRequest
    scale_source: str


def _check_pixel_size(pixel_size_um: float | None) -> None:
    if pixel_size_um is not None and not 0 < pixel_size_um <= 100:
        raise PredictError(
            f"pixel size {pixel_size_um!r}: give micrometres per pixel, a number above 0 (ALL-IDB: 0.09)"
        )


def _check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0 < threshold <= 1:
        raise PredictError(f"threshold {threshold!r}: give a probability of ALL above 0 and at most 1")


class Predictor:
    """A release loaded for prediction.

    `pixel_size_um`: micrometres per pixel of the images to classify (--pixel-size); without it, the training
    images' pixel size of that kind (the release assumes the same microscope), else an estimate from the image.
    `threshold`: P(ALL) at or above which a smear is called ALL; without it, the release's operating point.
    `compiled`: the classifiers and the U-Net called through one traced function each (`compiled_forward`, traced
    and warmed at load: `warmup_seconds`), the U-Net on `windows_per_call` windows at a time; False calls the
    classifiers eagerly through `model_outputs`, as the evaluation does, and the U-Net as the segment stage does
    (the same answers to the printed precision; the tests compare the two). `load_seconds`: the whole load, the warm-up included."""

    def __init__(
        self,
        release_dir: Path | str,
        pixel_size_um: float | None = None,
        threshold: float | None = None,
        compiled: bool = True,
    ) -> None:
        started = time.perf_counter()
        _check_pixel_size(pixel_size_um)
        _check_threshold(threshold)
        self.release_dir = Path(release_dir)
        self.manifest = verify(self.release_dir)
        self.version = str(self.manifest.get("version") or "")
        gate = self.manifest.get("gate") or {}
        if gate and not gate.get("passed"):  # released with evaluate.release_gate=flag: say so before every run
            log.warning(
                "release %s failed its gate (%s): its answers are no better than a trivial model's",
                self.manifest["version"],
                "; ".join(gate.get("reasons", [])),
            )
        settings = self.manifest["settings"]
        self.segment_cfg = _config(SegmentConfig, settings["segment"])
        self.data_cfg = _config(DataConfig, settings["data"])
        self.preprocess_cfg = _config(PreprocessConfig, settings.get("preprocess", {}))
        self.pixel_size_um = pixel_size_um
        self.input_size = int(settings["input_size"])
        self.stage3_images = settings["stage3_images"]
        recorded = (self.manifest.get("operating_point") or {}).get("threshold")
        if threshold is not None:
            self.threshold, self.threshold_source = float(threshold), "given (--threshold)"
        elif recorded is not None:
            self.threshold = float(recorded)
            self.threshold_source = (
                f"the release's operating point: {describe_threshold(self.manifest['operating_point'])}"
            )
        else:
            self.threshold, self.threshold_source = 0.5, "0.5 (this release records no operating point)"
        self.segmenter = Segmenter.load(self.release_dir / "segmenter")
        self.models = {role: load_classifier(self.release_dir / role) for role in ("detection", "fab", "cells")}
        self._explainers: dict = {}
        self._forward: dict = {}
        self._unet = None  # the segmenter's network called through `compiled_forward`; None: its predict_on_batch
        # uncompiled, the U-Net is called as the pipeline's segment stage calls it
        self.windows_per_call = self.segment_cfg.predict_batch_size
        warming = time.perf_counter()
        if compiled:  # traced now, on a zero batch of one, so the first answer does not pay the trace
            for role, (model, _) in self.models.items():
                self._forward[role] = compiled_forward(model)
                self._forward[role](np.zeros((1, *tuple(model.input_shape[1:])), np.float32))
            patch = self.segmenter.info.patch_size
            self.windows_per_call = max(self.windows_per_call, WINDOW_PIXELS_PER_CALL // patch**2)
            if self.segmenter.info.isolation != "roi":
                self._unet = compiled_forward(self.segmenter.model, frozen=True)
                self._unet(np.zeros((1, patch, patch, 3), np.float32))
        self.warmup_seconds = time.perf_counter() - warming
        self.load_seconds = time.perf_counter() - started

    def settings(self) -> dict:
        """What every answer was made with: the model, the threshold, the pixel size, the stain targets."""
        return {
            "model_version": self.version,
            "release": str(self.release_dir),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source + " (smears; a single-cell image is called at the cell "
            "model's P(blast) >= cell_blast_threshold)",
            "cell_blast_threshold": CELL_BLAST_THRESHOLD,
            "pixel_size_um": self.pixel_size_um,
            "stage3_images": self.stage3_images,
            "stain": {role: (info.stain or {}).get("method", "none") for role, (_, info) in self.models.items()},
            "gate_passed": (self.manifest.get("gate") or {}).get("passed"),
        }

    def _square(self, images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.input_size, self.input_size, 3), np.uint8)
        return np.stack([square(image, self.input_size) for image in images])

    def _stained(self, squared: np.ndarray, role: str) -> np.ndarray:
        """Squared images stain-normalised with the role's model's own target, as the evaluation arrays were (each
        image on its own: a batch of many images' crops gives each the same pixels as alone)."""
        if self.models[role][1].stain and len(squared):
            squared, _ = normalise_batch(
                squared, target_from_dict(self.models[role][1].stain, f"{self.release_dir / role}: stain")
            )
        return squared

    def _batch(self, images: list[np.ndarray], role: str) -> np.ndarray:
        """Images squared to the models' input and stain-normalised for one role's model (the heat maps')."""
        return self._stained(self._square(images), role)

    def _probabilities(self, role: str, batch: np.ndarray) -> np.ndarray:
        """(images, classes) probabilities of one role's model."""
        model, info = self.models[role]
        batch = batch.astype(np.float32)
        if not len(batch):
            return np.zeros((0, len(info.classes)), np.float32)
        if role in self._forward:  # at most CROPS_PER_CALL a call: a batch of many smears' cells stays bounded
            calls = [self._forward[role](batch[i : i + CROPS_PER_CALL]) for i in range(0, len(batch), CROPS_PER_CALL)]
            return class_probabilities(np.concatenate(calls), info.head)
        return class_probabilities(model_outputs(model, batch, len(batch)), info.head)

    def _scores(self, role: str, squared: list[np.ndarray]) -> list[np.ndarray]:
        """One role's model on several images' squared inputs in one call: its probabilities split back per image."""
        if not squared:
            return []
        counts = np.cumsum([len(part) for part in squared])[:-1]
        return np.split(self._probabilities(role, self._stained(np.concatenate(squared), role)), counts)

    def pixel_scale(self, rgb: np.ndarray, kind: str) -> tuple[float, str]:
        """(scale, where it came from) of an image of `kind`: see the class's docstring."""
        if self.pixel_size_um:
            return scale_of(self.pixel_size_um), f"given ({self.pixel_size_um:g} um per pixel)"
        recorded = self.segmenter.info.pixel_scales
        if recorded is None:  # a release from before pixel scales were recorded: its images were scaled by width
            return width_guess(rgb.shape[1], kind == "cell"), "from the image width, as this release was trained"
        trained = recorded.get(kind)
        size = f"{rgb.shape[1]}x{rgb.shape[0]}"  # a camera that recorded no EXIF was told apart by its image size
        if trained and size in (trained.get("cameras") or {}):
            return trained["cameras"][size], (
                f"the training {kind} images of this size's ({size}, "
                f"{REFERENCE_PIXEL_SIZE_UM / trained['cameras'][size]:.4g} um per pixel, "
                "estimated per camera; --pixel-size if yours differ)"
            )
        if trained and trained["scale"] is not None:
            return trained["scale"], (
                f"the training {kind} images' ({REFERENCE_PIXEL_SIZE_UM / trained['scale']:.4g} um per "
                f"pixel, {trained['source']}; --pixel-size if yours differ)"
            )
        if trained:
            return width_guess(rgb.shape[1], kind == "cell"), "from the image width, as the training images' was"
        found = measure_scale([rgb], self.preprocess_cfg, kind == "cell")
        if found is not None:
            return found.scale, f"estimated from this image's {found.ruler} (give --pixel-size for a measured one)"
        return width_guess(
            rgb.shape[1], kind == "cell"
        ), "assumed from the image width (no nucleus or red cell to estimate it from)"

    def _read(self, request: ImageRequest) -> _Staged:
        """An image decoded, its kind decided and its pixel scale and ROI found: ready for the segmenter."""
        if request.kind not in KINDS:
            raise PredictError(f"kind must be one of {KINDS}, got {request.kind!r}")
        limits = {"max_pixels": self.data_cfg.max_pixels, "min_side": self.data_cfg.min_side}
        path = request.path
        loaded = read_image(path, **limits) if request.data is None else decode_image(request.data, path, **limits)
        rgb = loaded.rgb
        kind = self.kind_of(rgb) if request.kind == "auto" else request.kind
        if kind == "smear" and min(rgb.shape[:2]) < self.input_size:
            raise PredictError(
                f"{path}: is {rgb.shape[1]}x{rgb.shape[0]} px, smaller than the model's {self.input_size} px "
                "input: too small for a smear (a single-cell image? try --kind cell)"
            )
        scale, source = self.pixel_scale(rgb, kind)
        roi = compute_roi(rgb, self.preprocess_cfg, scale).roi_mask if self.segmenter.info.isolation == "roi" else None
        segment = SegmentRequest(rgb, scale, central_only=kind == "cell", roi_mask=roi)
        return _Staged(request, loaded.conversions, kind, segment, source)

    def _segment_all(self, staged: list[_Staged]) -> list[Segmentation | LeukemiaMtlError]:
        """The segmenter on all images at once (the U-Net's windows pooled); where that fails on bad input, on each
        alone, so one image's problem is that image's answer."""
        requests = [s.segment for s in staged]
        try:
            return self.segmenter.segment_many(requests, self.segment_cfg, self._unet, self.windows_per_call)
        except LeukemiaMtlError as exc:
            if len(requests) == 1:
                return [exc]
        answers: list[Segmentation | LeukemiaMtlError] = []
        for request in requests:
            try:
                answers.extend(
                    self.segmenter.segment_many([request], self.segment_cfg, self._unet, self.windows_per_call)
                )
            except LeukemiaMtlError as exc:
                answers.append(exc)
        return answers

    def kind_of(self, rgb: np.ndarray) -> str:
        height, width = rgb.shape[:2]
        square_ish = max(height, width) / min(height, width) <= CELL_IMAGE_MAX_ASPECT
        return "cell" if max(height, width) <= CELL_IMAGE_MAX_SIDE and square_ish else "smear"

    def _explainer(self, role: str):
        if role not in self._explainers:  # the layer the run's report explained with (older releases: the default)
            min_side = self.manifest["settings"].get("explain_min_side", EvaluateConfig().explain_min_side)
            self._explainers[role] = GradCam(self.models[role][0], int(min_side))
        return self._explainers[role]

    def heatmap(self, role: str, rgb: np.ndarray, result, class_name: str) -> np.ndarray:
        """Grad-CAM of one role's model for `class_name`, in the image's own pixels: each cell's map put back
        where its crop was cut (models that see cells), or the squared image's map unsquared."""
        classes = self.models[role][1].classes
        mapper = HeatMapper(rgb.shape[:2], self.input_size)
        explainer = self._explainer(role)
        if role == "cells" or self.stage3_images == "cells":
            if result.cells:
                maps, _ = explainer.heatmaps(
                    self._batch([c.image for c in result.cells], role), classes.index(class_name), together=True
                )
                for cell, cam in zip(result.cells, maps):
                    mapper.add_crop(cam, cell.window, cell.image)
        else:
            image = result.isolated if self.stage3_images == "isolated" else rgb
            maps, _ = explainer.heatmaps(self._batch([image], role), classes.index(class_name))
            mapper.add_squared(maps[0])
        return mapper.heatmap

    def predict(
        self,
        path: Path | str,
        kind: str = "auto",
        overlay_path: Path | str | None = None,
        explain_path: Path | str | None = None,
        data: bytes | None = None,
    ) -> Prediction:
        """One image's answer; the overlay and (given `explain_path`) the Grad-CAM heat maps written as PNGs.
        `data`: the image's bytes when they come from elsewhere than the file `path` (an upload); `path` names them."""
        (answer,) = self.predict_many([ImageRequest(path, kind, overlay_path, explain_path, data)])
        if isinstance(answer, LeukemiaMtlError):
            raise answer
        return answer

    def predict_many(self, requests: list[ImageRequest]) -> list[Prediction | LeukemiaMtlError]:
        """Several images' answers, in their order, computed together: the U-Net's windows of all of them in shared
        calls, each classifier once on all their crops (issue 35). Each answer is the one `predict` gives the image
        alone, to the printed precision; an image that cannot be classified gets its error in its place, and the
        others their answers."""
        answers: list[Prediction | LeukemiaMtlError | None] = [None] * len(requests)
        staged: list[tuple[int, _Staged]] = []
        for index, request in enumerate(requests):
            try:
                staged.append((index, self._read(request)))
            except LeukemiaMtlError as exc:
                answers[index] = exc
        ready: list[tuple[int, _Staged, Segmentation]] = []
        for (index, item), result in zip(staged, self._segment_all([item for _, item in staged]) if staged else []):
            if isinstance(result, LeukemiaMtlError):
                answers[index] = result
            elif not result.cells and (item.kind == "cell" or self.stage3_images in ("cells", "isolated")):
                what = (
                    "single-cell image" if item.kind == "cell" else "smear"
                )  # as training: no cell, nothing to classify
                answers[index] = PredictError(
                    f"{item.request.path}: no white cell found in this {what}{_why(item.segment.rgb, item.segment.scale)}"
                    + ("" if item.kind == "cell" else ", so there is nothing to classify")
                )
            else:
                ready.append((index, item, result))
        for (index, item, result), prediction in zip(ready, self._classify([(i, r) for _, i, r in ready])):
            try:
                answers[index] = self._finish(item, result, prediction)
            except LeukemiaMtlError as exc:
                answers[index] = exc
        return answers  # type: ignore[return-value]  (every place is filled above)

    def _classify(self, items: list[tuple[_Staged, Segmentation]]) -> list[Prediction]:
        """The classifiers on every image's crops at once: the cell model on all cells, the detection model on all
        smears, the FAB model on the smears called ALL (the only ones whose answer shows a type)."""
        # each image's cells squared once, shared by every role that sees cells (a single cell: its central one)
        cells = [self._square([c.image for c in (r.cells[:1] if i.kind == "cell" else r.cells)]) for i, r in items]
        blast = [p[:, 1] for p in self._scores("cells", cells)]
        smears = [k for k, (item, _) in enumerate(items) if item.kind == "smear"]
        whole = {
            k: cells[k]  # as the evaluation scored smears: the mean over their cells
            if self.stage3_images == "cells"
            else self._square([items[k][1].isolated if self.stage3_images == "isolated" else items[k][0].segment.rgb])
            for k in smears
        }
        detection = dict(zip(smears, (p.mean(axis=0) for p in self._scores("detection", [whole[k] for k in smears]))))
        classes = self.models["detection"][1].classes
        called = [k for k in smears if float(detection[k][classes.index(POSITIVE_CLASS)]) >= self.threshold]
        fab = dict(zip(called, (p.mean(axis=0) for p in self._scores("fab", [whole[k] for k in called]))))
        return [
            self._cell_prediction(item, result, float(blast[k][0]))
            if item.kind == "cell"
            else self._smear_prediction(item, result, detection[k], fab.get(k), blast[k])
            for k, (item, result) in enumerate(items)
        ]

    def _finish(self, item: _Staged, result: Segmentation, prediction: Prediction) -> Prediction:
        """The pixel scale and conversions told, the heat maps and the overlay written."""
        request, rgb = item.request, item.segment.rgb
        prediction.pixel_scale, prediction.pixel_scale_source = round(item.segment.scale, 4), item.scale_source
        prediction.conversions = list(item.conversions)
        panels = []
        if request.explain_path:
            if item.kind == "cell":
                panels.append(("cell model: blast", self.heatmap("cells", rgb, result, "blast")))
            else:
                panels.append(
                    (f"detection: {prediction.verdict}", self.heatmap("detection", rgb, result, prediction.verdict))
                )
                if prediction.fab:
                    panels.append(
                        (
                            f"FAB type: {prediction.fab['type']}",
                            self.heatmap("fab", rgb, result, prediction.fab["type"]),
                        )
                    )
                if result.cells:
                    panels.append(("cell model: blast", self.heatmap("cells", rgb, result, "blast")))
        if request.overlay_path is not None:
            prediction.overlay = str(write_overlay(rgb, result.refined_mask, prediction, Path(request.overlay_path)))
        if request.explain_path is not None:
            prediction.explanation = str(write_heatmap_panels(rgb, panels, Path(request.explain_path)))
        return prediction

    @staticmethod
    def _cell_entry(cell, blast: float) -> dict:
        return {
            "index": cell.index,
            "bbox": list(cell.bbox),
            "centre": list(cell.centre),
            "blast_probability": blast,
            "blast": blast >= CELL_BLAST_THRESHOLD,
        }

    def _cell_prediction(self, item: _Staged, result: Segmentation, blast: float) -> Prediction:
        cell = self._cell_entry(result.cells[0], blast)
        return Prediction(
            image=str(item.request.path),
            kind="cell",
            verdict=CELL_POSITIVE if blast >= CELL_BLAST_THRESHOLD else CELL_NEGATIVE,
            all_probability=blast,
            threshold=CELL_BLAST_THRESHOLD,
            fab=None,
            cells=[cell],
            cells_scored_as_blasts=int(cell["blast"]),
            model_version=self.version,
        )

    def _smear_prediction(
        self, item: _Staged, result: Segmentation, detection: np.ndarray, fab: np.ndarray | None, blast: np.ndarray
    ) -> Prediction:
        """A smear's answer from its models' outputs: `fab` is None unless it is called ALL."""
        negative = self.data_cfg.negative_class
        fab_classes, detection_classes = self.models["fab"][1].classes, self.models["detection"][1].classes
        all_probability = float(detection[detection_classes.index(POSITIVE_CLASS)])
        verdict = POSITIVE_CLASS if all_probability >= self.threshold else negative
        cells = [self._cell_entry(c, float(s)) for c, s in zip(result.cells, blast)]
        blasts = sum(c["blast"] for c in cells)
        fab_answer = None
        if verdict == POSITIVE_CLASS:  # the type is a question only once the smear is called ALL; among the ALL types
            subtypes = [i for i, c in enumerate(fab_classes) if c != negative]
            best = max(subtypes, key=lambda i: fab[i])
            fab_answer = {
                "type": fab_classes[best],
                "probability": float(fab[best]),
                "probabilities": dict(zip(fab_classes, map(float, fab))),
                "note": None,
            }
            if negative in fab_classes and int(fab.argmax()) == fab_classes.index(negative):
                fab_answer["note"] = (
                    f"the FAB model itself favours {negative} ({fab[fab_classes.index(negative)]:.2f}): the type "
                    "is a weak suggestion"
                )
        disagreement = None
        if verdict == POSITIVE_CLASS and cells and not blasts:
            disagreement = (
                f"called ALL (P(ALL) {all_probability:.2f}), but none of its {len(cells)} cells scores as a blast: "
                "look at the smear"
            )
        elif verdict != POSITIVE_CLASS and blasts:
            disagreement = (
                f"called {negative} (P(ALL) {all_probability:.2f}), but {blasts} of its {len(cells)} cells score as "
                "blasts: look at those cells"
            )
        return Prediction(
            image=str(item.request.path),
            kind="smear",
            verdict=verdict,
            all_probability=all_probability,
            threshold=self.threshold,
            fab=fab_answer,
            cells=cells,
            cells_scored_as_blasts=blasts,
            disagreement=disagreement,
            model_version=self.version,
        )


def _text_size(image_width: int) -> tuple[float, int]:
    """(OpenCV font scale, thickness) that reads at ~1.6 % of the image's width, whatever its size."""
    scale = max(0.45, image_width / 1100)
    return scale, max(1, round(scale * 1.6))


def _label(canvas: np.ndarray, text: str, origin: tuple[int, int], colour, scale: float, thickness: int) -> None:
    """Text on a dark box, so it reads on a pale smear and on a dark cell alike."""
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = origin
    x, y = max(0, min(x, canvas.shape[1] - width - 4)), max(height + 4, y)
    cv2.rectangle(canvas, (x - 2, y - height - 4), (x + width + 2, y + base + 1), (20, 20, 20), -1)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def write_overlay(rgb: np.ndarray, mask: np.ndarray, prediction: Prediction, path: Path) -> Path:
    """Each segmented cell outlined (red: scores as a blast, green: not) with its P(blast) in per cent; a header
    with the verdict on a dark band, a legend, and the research-use notice at the foot."""
    scale, thickness = _text_size(rgb.shape[1])
    line = int(cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][1] * 1.9)
    header, footer = 2 * line + 8, line + 6
    canvas = cv2.copyMakeBorder(rgb, header, footer, 0, 0, cv2.BORDER_CONSTANT, value=(20, 20, 20))
    body = canvas[header : header + rgb.shape[0]]
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = {tuple(int(v) for v in cv2.boundingRect(c)): c for c in contours}
    outline = max(2, rgb.shape[1] // 300)
    for cell in prediction.cells:
        colour = BLAST_COLOUR if cell["blast"] else OTHER_COLOUR
        x, y, w, h = cell["bbox"]
        contour = boxes.get((x, y, w, h))
        if contour is not None:
            cv2.drawContours(body, [contour], -1, colour, outline)
        else:
            cv2.rectangle(body, (x, y), (x + w, y + h), colour, outline)
        _label(body, f"{cell['blast_probability']:.0%}", (x, y - 6), colour, scale * 0.8, thickness)
    if prediction.kind == "smear":
        verdict = (
            f"ALL suspected: P(ALL) {prediction.all_probability:.2f} >= threshold {prediction.threshold:.2f}"
            if prediction.verdict == POSITIVE_CLASS
            else f"No ALL found: P(ALL) {prediction.all_probability:.2f} < threshold {prediction.threshold:.2f}"
        )
        if prediction.fab:
            verdict += f"; FAB type {prediction.fab['type']} ({prediction.fab['probability']:.2f})"
    else:
        verdict = f"single cell: {prediction.verdict}, P(blast) {prediction.all_probability:.2f}"
    cv2.putText(canvas, verdict, (8, line), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    legend_y = 2 * line
    x = 8
    for colour, text in (
        (BLAST_COLOUR, f"cell scores as a blast (P >= {CELL_BLAST_THRESHOLD:.0%})"),
        (OTHER_COLOUR, "cell does not"),
        ((255, 210, 80), prediction.disagreement and "! verdict and cells disagree"),
    ):
        if not text:
            continue
        cv2.rectangle(canvas, (x, legend_y - line // 2), (x + line // 2, legend_y), colour, -1)
        cv2.putText(
            canvas,
            text,
            (x + line // 2 + 6, legend_y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale * 0.85,
            colour,
            thickness,
            cv2.LINE_AA,
        )
        x += line // 2 + 18 + cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale * 0.85, thickness)[0][0]
    cv2.putText(
        canvas,
        f"{NOTICE.split('.')[0]}. {prediction.model_version}",
        (8, canvas.shape[0] - footer // 3),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale * 0.75,
        (220, 220, 220),
        max(1, thickness - 1),
        cv2.LINE_AA,
    )
    return write_image(path, canvas)


def image_paths(inputs: list[str]) -> Iterator[tuple[Path | None, str | None]]:
    """(image, None) for every file given and every image file under a folder given (sorted,
    recursive); (None, message) for what is not there or not an image, so nothing drops silently."""
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
            for note in tree.notes():  # a note, not a failed image: ._ files and our own outputs must not fail a run
                log.warning("%s", printable(str(note)))
            if not found:
                yield None, f"{item}: folder holds no image files"
        elif item.exists() or item.is_symlink():
            problem = not_regular(item)
            yield (item, None) if problem is None else (None, f"{item}: {problem}")
        else:
            yield None, f"{item}: no such file or folder"


def open_predictor(
    model: str, cache_dir: Path | None = None, pixel_size_um: float | None = None, threshold: float | None = None
) -> Predictor:
    """The Predictor of a release folder or s3:// URI (mirrored into `cache_dir`); the settings are checked
    before anything is fetched from object storage."""
    _check_pixel_size(pixel_size_um)
    _check_threshold(threshold)
    return Predictor(fetch(model, cache_dir), pixel_size_um, threshold)


def iter_predictions(
    predictor: Predictor,
    inputs: list[str],
    kind: str = "auto",
    overlay_dir: Path | None = None,
    explain: bool = False,
    batch_images: int = BATCH_IMAGES,
) -> Iterator[tuple[str | None, dict | None, str | None]]:
    """(image, prediction, None) or (image or None, None, error) per image, in order: a folder of thousands streams
    through in `batch_images` at a time (`Predictor.predict_many`: the models called once per batch), in constant
    memory, and one bad image does not stop the others. `explain` writes Grad-CAM heat maps beside the overlays
    (<stem>_gradcam.png)."""
    if explain and overlay_dir is None:  # never beside the inputs: a rerun over the folder would read them as images
        raise PredictError("explain writes the heat maps beside the overlays: give an overlay folder")
    if batch_images < 1:
        raise PredictError(f"batch of {batch_images!r} images: give 1 or more")
    overlay_names: set[str] = set()
    if overlay_dir is not None:  # marked first: a rerun over a folder holding it skips it
        mark_output(overlay_dir)
    pending: list[tuple[Path | None, ImageRequest | str]] = []  # a problem in its place among the images

    def answered():
        requests = [item for _, item in pending if isinstance(item, ImageRequest)]
        answers = iter(predictor.predict_many(requests) if requests else [])
        for path, item in pending:
            if isinstance(item, str):
                yield None, None, item
                continue
            answer = next(answers)
            if isinstance(answer, LeukemiaMtlError):
                yield str(path), None, str(answer)
            else:
                yield str(path), answer.to_dict(), None
        pending.clear()

    for path, problem in image_paths(inputs):
        if problem is not None:
            pending.append((None, problem))
            continue
        overlay = _overlay_path(overlay_dir, path, overlay_names)
        explanation = overlay.with_name(overlay.name.replace("_overlay.png", "_gradcam.png")) if explain else None
        pending.append((path, ImageRequest(path, kind, overlay, explanation)))
        if sum(isinstance(item, ImageRequest) for _, item in pending) >= batch_images:
            yield from answered()
    yield from answered()


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
    """An answer in the order a haematologist reads it: verdict, then type, then what to look at."""
    if p["kind"] == "cell":
        lines = [
            f"{p['image']} (single cell): {p['verdict']}, "
            f"P(blast) {p['all_probability']:.3f} (cell model, threshold {p['threshold']:.2f})"
        ]
    else:
        called = (
            f"ALL suspected: P(ALL) {p['all_probability']:.3f} >= {p['threshold']:.3f}"
            if p["verdict"] == POSITIVE_CLASS
            else f"no ALL found: P(ALL) {p['all_probability']:.3f} < {p['threshold']:.3f}"
        )
        lines = [f"{p['image']} (smear): {called}"]
        if p["fab"]:
            others = ", ".join(f"{c} {v:.2f}" for c, v in p["fab"]["probabilities"].items() if c != p["fab"]["type"])
            lines.append(
                f"  FAB type {p['fab']['type']} ({p['fab']['probability']:.2f}; {others})"
                + (f"; note: {p['fab']['note']}" if p["fab"].get("note") else "")
            )
        lines.append(
            f"  {len(p['cells'])} cells, {p['cells_scored_as_blasts']} scored as blasts "
            f"(cell model, P(blast) >= {CELL_BLAST_THRESHOLD})"
        )
        if p["disagreement"]:
            lines.append(f"  ! disagreement: {p['disagreement']}")
    extras = [
        f"overlay {p['overlay']}" if p.get("overlay") else "",
        f"heat maps {p['explanation']}" if p.get("explanation") else "",
        f"pixel scale {p['pixel_scale']:g} ({p['pixel_scale_source']})" if p.get("pixel_scale") is not None else "",
    ]
    lines += [f"  {e}" for e in extras if e]
    return "\n".join(lines)


def csv_row(image: str | None, prediction: dict | None, error: str | None, version: str) -> dict:
    """One row of --csv: an answer, or the error that stopped one (status "error")."""
    if prediction is None:
        return {"image": image or "", "status": "error", "error": error, "model_version": version}
    fab = prediction["fab"] or {}
    return {
        "image": prediction["image"],
        "status": "ok",
        "error": "",
        "kind": prediction["kind"],
        "verdict": prediction["verdict"],
        "all_probability": round(prediction["all_probability"], 4),
        "threshold": round(prediction["threshold"], 4),
        "fab_type": fab.get("type", ""),
        "fab_probability": round(fab["probability"], 4) if fab else "",
        "cells": len(prediction["cells"]),
        "cells_scored_as_blasts": prediction["cells_scored_as_blasts"],
        "disagreement": prediction["disagreement"] or "",
        "overlay": prediction["overlay"] or "",
        "explanation": prediction["explanation"] or "",
        "pixel_scale": prediction["pixel_scale"],
        "conversions": "; ".join(prediction.get("conversions") or []),
        "model_version": version,
    }
