"""The one place for settings: named profiles (`demo`, `paper`) built from small dataclasses.

Modules take the dataclass they need as an argument; nothing reads constants from elsewhere.
A profile can be tweaked without editing code through `get_profile(name, overrides)`, where
overrides are dotted keys such as ``{"synth.n_smears": 8}``. Each setting's one-line doc and the values it
may take sit next to its field (`setting`); `check` enforces them and docs/configuration.md lists them
(`python -m runners.config_reference` writes it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from leukemia_mtl import __version__, paper
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.models.catalog import BACKBONES
from leukemia_mtl.stages import POSITIVE_CLASS, SCORED_TASKS, TRANSFER_ARMS

FAB_CLASSES: tuple[str, ...] = ("normal", "L1", "L2", "L3")

# ALL-IDB1 is 2592x1944; pixel sizes below are given at that resolution and scaled by each image's pixel scale
# (REFERENCE_PIXEL_SIZE_UM / the image's pixel size).
REFERENCE_WIDTH = 2592
# ALL-IDB1's pixel size. Its documentation names the camera (Canon PowerShot G5) and the magnification (300-500x),
# not the pixel size; a red cell (7.5 um) spans about 84 px there, so about 0.09 um per pixel.
REFERENCE_PIXEL_SIZE_UM = 0.09
# Where a dataset's pixel size is not given, its scale is estimated from its white cells' nuclei: the median
# nucleus area of its images against this one (px at REFERENCE_WIDTH; measured on the generator's ALL-IDB2-style
# crops with the fixed threshold). BENCHMARKS.md has the estimate's error.
REFERENCE_NUCLEUS_AREA = 5600.0
# A red cell is about 7.5 um across in every lab and stain: the better ruler for a smear, where red cells lie
# between the white ones (BENCHMARKS.md, issue 32: within 10 % of the scale TXL-PBC's red-cell boxes imply on
# four labs' smears, where the nuclei are off by up to 26 %). Its diameter in px at REFERENCE_WIDTH:
REFERENCE_RED_CELL_UM = 7.5
# The largest white cell a smear shows (um across: a monocyte or a large blast is ~20); a region of a smear larger
# than a few of them (preprocess.oversized) or than half the field is red cells or plasma taken for cells, or a
# wrong pixel scale, and the ROI step says so
LARGEST_WHITE_CELL_UM = 25.0
REFERENCE_RED_CELL_DIAMETER = REFERENCE_RED_CELL_UM / REFERENCE_PIXEL_SIZE_UM
# the two estimates of a smear dataset's scale disagree "loudly" beyond this ratio (larger over smaller)
SCALE_DISAGREEMENT = 1.25
# cross-validated metrics (leukemia_mtl.evaluate), and those also measured on the inner validation split
CV_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
    "auc_macro",
    "auc_micro",
)
INNER_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")
STAGE3_IMAGES: tuple[str, ...] = ("cells", "isolated", "original")
GATE_ACTIONS: tuple[str, ...] = ("refuse", "flag")
# how the ROI step finds white cells (preprocess.compute_roi): the paper's fixed level, a level found per image
# in the offset monochrome, or the nuclear stain's optical density (chosen on real smears of four labs: BENCHMARKS.md)
THRESHOLD_METHODS: tuple[str, ...] = ("fixed", "adaptive", "nuclear")
# stain normalisation onto a target fitted on each fold's training images (leukemia_mtl.stain)
STAIN_METHODS: tuple[str, ...] = ("none", "reinhard", "macenko")
# which mask isolates the cells: the U-Net's, the ROI step's, or the better of the two on held-out smears
ISOLATION_MASKS: tuple[str, ...] = ("auto", "unet", "roi")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    low: Any = None,
    high: Any = None,
    above: Any = None,
    choices: tuple | None = None,
    rule: str = "",
    shown: str = "",
) -> Any:
    """A dataclass field with its one-line doc and the values it may take, next to it.

    `check` enforces them (`choices`: one of, or for a tuple some of; `low` and `high`: between, or for a pair
    [LOW, HIGH] within; `low` alone: at least; `above`: strictly above); `rule` only describes a check made by
    hand in `check` (one that reads other settings); `shown` replaces the default in docs/configuration.md.
    Field metadata rather than pydantic (measured for issue 34): the profiles stay frozen stdlib dataclasses that
    `dataclasses.replace`/`asdict` and every module's type hints already use, config imports nothing new (pydantic
    adds ~0.18 s where it is not already loaded), and errors keep their wording instead of being re-worded from
    pydantic's."""
    metadata = {"doc": doc, "low": low, "high": high, "above": above, "choices": choices, "rule": rule, "shown": shown}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the generated stand-in for ALL-IDB (ALL_IDB1 smears + ALL_IDB2 crops)."""

    # demo: 6 per class, so each of the 2 folds trains on 12 and scores 12
    n_smears: int = setting(24, doc="generated smears (ALL_IDB1-style), spread over the classes")
    smear_width: int = setting(640, doc="width of a generated smear, px")
    smear_height: int = setting(480, doc="height of a generated smear, px")
    n_crops: int = setting(16, doc="generated single-cell crops (ALL_IDB2-style)")
    crop_size: int = setting(257, doc="side of a generated crop, px (ALL-IDB2's)")
    jpeg_quality: int = setting(92, doc="JPEG quality of the generated images")
    classes: tuple[str, ...] = setting(FAB_CLASSES, doc="the classes generated: normal and the FAB types")


@dataclass(frozen=True)
class DataConfig:
    """How datasets are read and checked."""

    negative_class: str = setting("normal", doc="the class of healthy images", rule="not empty")
    # a public smear set says 'benign', a single-cell set 'normal': ingest renames that input's class to
    # negative_class, with a note
    smears_negative_class: str = setting("", doc="the smears input's name for its negatives (empty: negative_class)")
    cells_negative_class: str = setting("", doc="the cells input's name for its negatives (empty: negative_class)")
    positive_class_name: str = setting(
        POSITIVE_CLASS, doc="the class of ALL-IDB1's `_1` smears when no label file is given"
    )
    # anything else, a typo like 'L9' or a stray invisible character, would become a new class
    subtypes: tuple[str, ...] = setting(
        ("L1", "L2", "L3"), doc="the types a label file may refine ALL into (FAB's L1-L3)"
    )
    # mostly wide fields (4:3 and wider: a camera's field, not a crop around one cell)
    check_cells_are_crops: bool = setting(
        True, doc="refuse a folder-per-class cells input of wide fields as smears given in the wrong place"
    )
    # decompression bombs: 8x ALL-IDB1's 5 MP
    max_pixels: int = setting(8 * 2592 * 1944, doc="larger images are refused before decoding")
    min_side: int = setting(32, low=1, doc="smaller images are refused, px")
    # Every size in the settings is in ALL-IDB1's pixels and is rescaled by it; also the single-cell images' unless
    # cells_pixel_size_um is given (so smears alone cannot be given while the cells are estimated). 0: estimated per
    # dataset (and camera) from its red cells, else its nuclei (preprocess.measure_scale), reported in the ROI
    # step's log and page. ALL-IDB's: 0.09.
    pixel_size_um: float = setting(0.0, low=0.0, high=100.0, doc="micrometres per pixel of the smears (0: estimated)")
    cells_pixel_size_um: float = setting(
        0.0, low=0.0, high=100.0, doc="micrometres per pixel of the single-cell images (0: pixel_size_um's rule)"
    )


@dataclass(frozen=True)
class PreprocessConfig:
    """The paper's ROI step: RGB offsets, monochrome, fixed threshold; then a documented clean-up."""

    offset_red: int = setting(88, doc="the paper's offset subtracted from red")
    offset_green: int = setting(41, doc="the paper's offset subtracted from green")
    offset_blue: int = setting(20, doc="the paper's offset subtracted from blue")
    threshold: int = setting(98, doc="the paper's fixed level on the offset monochrome (threshold_method 'fixed')")
    # 'fixed': the paper's level above (fitted to ALL-IDB's stain and camera); 'adaptive': per image, Otsu's
    # level among the pixels darker than the background (itself Otsu's level over all pixels), which follows
    # a brighter or darker stain; 'nuclear': the nuclear stain's optical density (green's minus blue's, against
    # the image's own background), Otsu's level on it, and each nucleus grown over its cell rather than by a
    # fixed margin (docs/pipeline.md, "Finding the white cells"; bench/cell_finder.py measures all three on four labs'
    # annotated smears). paper and demo keep 'fixed'; the workstation profile, for other labs' smears, uses 'nuclear'.
    threshold_method: str = setting("fixed", choices=THRESHOLD_METHODS, doc="how the ROI step finds white cells")
    # below it Otsu's level is not trusted (a field without a white cell: Otsu would split red cells from plasma)
    nuclear_min_density: float = setting(
        0.2, low=0.0, high=3.0, doc="with 'nuclear': the least nuclear-stain density (green-blue OD) of a nucleus"
    )
    # pale cytoplasm sits below the level itself. Chosen on txl-pbc's train split (bench/cell_finder.py --sweep: the
    # best worst-source recall), reported on its val and test splits
    cell_extent_level: float = setting(
        0.5,
        low=0.0,
        high=1.0,
        doc="with 'nuclear': a pixel is a cell's above this "
        "fraction of Otsu's level between cells and plasma (total OD)",
    )
    # with 'nuclear': touching cells are cut apart (preprocess.split_touching). First by their nuclei: a region holding
    # two or more nucleus pieces of at least split_min_nucleus_um2 each is shared out, each pixel to its nearest such
    # piece, but two pieces stay one cell where the border between their shares is not a neck (at least
    # split_neck_fraction of the smaller share's diameter, the border measured as a chord at any angle: a lobed
    # neutrophil's lobes split a round cell across its whole width; touching cells meet along a waist). Then by
    # their outline: a region still holding two nuclear
    # cores and two cores of its own (distance to its edge above split_core_fraction of its largest) is cut along
    # the neck. Chosen on txl-pbc's train split (BENCHMARKS.md, "Touching white cells"): the most touching cells cut
    # without any source's recall falling
    split_touching: bool = setting(True, doc="with 'nuclear': cut touching cells apart")
    split_min_nucleus_um2: float = setting(
        15.0, low=0.0, high=500.0, doc="least area of a nucleus piece that makes a cell of its own, um^2"
    )
    split_neck_fraction: float = setting(
        0.65, low=0.0, high=10.0, doc="a border between two shares is a neck under this fraction of the smaller's width"
    )
    split_core_fraction: float = setting(
        0.6, low=0.05, high=0.95, doc="a core is where the distance to the edge is above this fraction of the largest"
    )
    # stained nuclei measure 170-200 in the generator's smears
    min_stain_saturation: int = setting(
        30, doc="with 'adaptive': dark regions below this mean HSV saturation are no stain (scale bar, dust): dropped"
    )
    # 'none' is the paper's: images as they are; 'reinhard': CIELAB means and deviations; 'macenko': stain vectors.
    # The target is fitted per fold and stage on the training images only and stored with each model, so predict
    # applies the same one.
    stain: str = setting("none", choices=STAIN_METHODS, doc="stain normalisation of every classifier's input")
    # the threshold does not fit this stain or camera, and later stages would see black
    warn_empty_fraction: float = setting(
        0.05,
        low=0.0,
        high=1.0,
        doc="warn (task log, run output, ROI page) when more of a dataset's images than this have no region",
    )
    scale_sample_images: int = setting(
        64, low=1, doc="images read (evenly spaced) to estimate a dataset's pixel scale when data.pixel_size_um is 0"
    )
    # Clean-up of the raw threshold mask, in pixels at REFERENCE_WIDTH (scaled per image):
    min_component_area: float = setting(600.0, doc="smaller components are platelets and stain specks, px^2")
    roi_margin: float = setting(28.0, doc="dilation that grows a nucleus-only mask over the whole white cell, px")
    overlay_examples: int = setting(4, doc="images shown with their ROI on the step's page")


@dataclass(frozen=True)
class SegmentConfig:
    """Residual U-Net white-cell segmentation and the paper's lymphoblast isolation."""

    # one model serves smears and crops of any resolution at a bounded cost
    working_scale: float = setting(
        640 / REFERENCE_WIDTH, doc="pixel scale images are resized to before the U-Net (1.0: ALL-IDB1 at 2592 px)"
    )
    patch_size: int = setting(64, doc="side of a training patch, px")
    depth: int = setting(3, doc="number of 2x2 max-pools")
    # demo: 8 filters, 5 epochs, 32 patches per smear come close to the held-out Dice of 16 / 12 / 48
    # at a fraction of its cost
    base_filters: int = setting(8, doc="filters of the first level (doubled at each)")
    epochs: int = setting(5, low=1, doc="U-Net training epochs")
    batch_size: int = setting(32, low=1, doc="U-Net training batch")
    patches_per_image: int = setting(32, doc="training patches drawn per image and epoch")
    foreground_patch_fraction: float = setting(0.6, doc="patches centred on a white cell, the rest anywhere")
    learning_rate: float = setting(1e-3, doc="the U-Net's Adam learning rate")
    holdout_fraction: float = setting(
        0.25, low=0.05, high=0.5, doc="smears kept out of training to measure Dice and IoU"
    )
    window_overlap: float = setting(0.5, doc="overlap of the sliding windows at prediction")
    predict_batch_size: int = setting(16, doc="windows per prediction call")
    mask_threshold: float = setting(0.5, doc="probability above which a pixel is a white cell's")
    # Clean-up and crops, in pixels at REFERENCE_WIDTH (scaled per image)
    min_cell_area: float = setting(1200.0, doc="smaller mask components are dropped, px^2")
    crop_size: int = setting(96, doc="side of a cell crop as stored, px")
    # 257 is ALL-IDB2's crop, so smear cells and single-cell images share one magnification and a crop keeps the
    # cell's size, an FAB criterion (L1 small, L2 large). A cell larger than the window gets a window of its own
    # size plus crop_margin; 0: every crop is sized to its cell.
    crop_window: float = setting(257.0, doc="side of the window centred on each cell, px at REFERENCE_WIDTH")
    crop_margin: float = setting(0.15, doc="extra border around a cell's box, as a fraction of its size")
    # inside the mask keep pixels whose blue is at least red - margin; red cells (red > blue) overlapping a white
    # cell's edge are removed
    blue_margin: int = setting(12, doc="the blue-channel isolation's margin")
    drop_border_cells: bool = setting(True, doc="drop cells cut by the image's border")
    figure_examples: int = setting(3, doc="images shown on the step's page")
    # "auto": the U-Net's, unless on the held-out smears it is worse than the ROI it learnt from: against
    # ground-truth masks where there are some (a lower Dice), otherwise against the ROI masks themselves (a Dice
    # below min_weak_label_dice: it did not learn to reproduce its own labels). Masks only: no class label takes
    # part in the choice.
    isolation: str = setting("auto", choices=ISOLATION_MASKS, doc="the mask cells are isolated from")
    min_weak_label_dice: float = setting(
        0.5, low=0.0, high=1.0, doc="with 'auto': the U-Net's least Dice against its own ROI labels"
    )
    max_empty_fraction: float = setting(
        0.5, low=0.0, high=1.0, doc="segment stops when more of a dataset's images than this have no white cell"
    )


@dataclass(frozen=True)
class AugmentConfig:
    """The paper's augmentation, applied to training images only, to balanced classes."""

    target_per_class: int = setting(
        16, low=0, doc="images per class after augmentation: at least this many, and as many as the largest class"
    )
    flip_horizontal: bool = setting(True, doc="random horizontal flips")
    flip_vertical: bool = setting(True, doc="random vertical flips")
    rotation_max_degrees: float = setting(180.0, doc="a random angle in [0, max]")
    shift_fraction: float = setting(0.1, doc="random shift, of the image side, in x and y")
    scale_range: tuple[float, float] = setting((0.9, 1.1), doc="random zoom range")


@dataclass(frozen=True)
class ModelConfig:
    """Backbones and their weights; training settings come with the finetune stages."""

    # demo and workstation: torchvision's MobileNetV2, whose ImageNet weights come with the packages (offline,
    # checked by sha256), and whose training steps cost a third of Xception's at the same input
    # (BENCHMARKS.md, "Backbones and their ImageNet weights"); the paper's three stay for the paper profile
    backbones: tuple[str, ...] = setting(
        ("MobileNetV2",), choices=tuple(BACKBONES), rule="each once", doc="the backbones trained and compared"
    )
    input_size: int = setting(71, rule="at least the backbones' smallest input", doc="classifier input side, px")
    # 'imagenet' is a package's file for DenseNet121 and MobileNetV2, Keras' download for the paper's three; an s3://
    # URI holds Keras' own weight files (e.g. inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5)
    weights: str = setting("imagenet", doc="'imagenet', 'none' (random init), a local folder or file, or an s3:// URI")
    dense_units: int = setting(256, doc="units of the dense layer of each task's head")
    dropout: float = setting(0.3, doc="dropout before each head's output")


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings shared by every stage and the classical baseline (paper Table I)."""

    # demo: 3. With 2 the demo's models barely leave their starting point; early stopping on the
    # inner validation split picks among them (BENCHMARKS.md: issue 14's measurements)
    epochs: int = setting(3, low=1, doc="epochs per stage")
    # the demo has none: each phase costs one more graph build, and with 90 % of the ImageNet backbone frozen
    # (frozen_fraction) its features stay protected
    warmup_epochs: int = setting(0, doc="head-only epochs on the frozen backbone before fine-tuning")
    batch_size: int = setting(16, low=1, doc="training batch")
    # the paper's 1e-3 (the paper profile) makes the demo's tiny training sets swing: inner-validation
    # losses of 2-15 after one epoch; 3e-4 learns steadily in 3 epochs (BENCHMARKS.md)
    learning_rate: float = setting(3e-4, above=0, doc="Adam's initial learning rate")
    decay_steps: int = setting(50, low=1, doc="Adam's rate is multiplied by decay_rate every decay_steps steps")
    decay_rate: float = setting(0.9, low=0.01, high=1.0, doc="the learning rate's decay factor")
    early_stopping_patience: int = setting(
        3, low=0, doc="epochs without a better validation loss (0: no early stopping)"
    )
    restore_best_weights: bool = setting(True, doc="end with the epoch of the lowest validation loss")
    # 0: all are tuned, as the paper. The demo tunes the top 10 % (Xception: its exit flow): its
    # training graph builds and steps much faster (the ratios are in BENCHMARKS.md).
    frozen_fraction: float = setting(
        0.9, low=0.0, high=0.99, doc="share of the backbone's layers, from the input, frozen while fine-tuning"
    )
    # Where a phase leaves the backbone's first layers frozen (frozen_fraction, a head-only warm-up),
    # their output per image is computed once and every epoch trains only the rest on it (the same
    # numbers, a fraction of the work: BENCHMARKS.md). Above the limit every epoch runs the whole backbone.
    frozen_features_mb: int = setting(
        3072, low=0, doc="cache limit, MB, for a stage's frozen-layer features (0: never cache)"
    )
    # "cells": every white cell segment isolated, at one magnification (segment.crop_window); a smear's
    #   probabilities are the mean over its cells. At 71 px a whole 640x480 smear shrinks a white cell to
    #   ~4 px; a cell crop keeps it at ~55 px (BENCHMARKS.md: the options measured).
    # "isolated": segment's isolated smear squared to the input (the paper's Fig. 6c); "original": the smear as is.
    stage3_images: str = setting(
        "cells", choices=STAGE3_IMAGES, doc="what stage 3 (and the classical arm) look at for a multi-cell smear"
    )
    # Held out grouped and stratified: early stopping, the best epoch and the release's choice of fold model read
    # it; the evaluation fold only scores. 0: no inner split (no early stopping, selection by fold order).
    validation_fraction: float = setting(
        0.25, low=0.0, high=0.5, doc="share of each fold's training groups held out as the inner validation split"
    )
    # scikit-learn's "balanced" class weights over the task's own training labels: detection merges L1-L3 into
    # ALL, 3:1 against normal after the FAB classes were balanced
    balanced_class_weights: bool = setting(True, doc="each task's classes weigh equally in the loss")
    # Before training a randomly initialised backbone (its default statistics make a deep network's activations
    # vanish: Xception's features ~1e-5 at init), and after training for the layers that were trained (population
    # statistics of the final weights, "precise BN").
    batchnorm_calibration_images: int = setting(
        256, low=0, doc="training images batch-norm statistics are computed from (0: Keras' running averages only)"
    )
    # each eager call has a fixed cost however small, so fewer, larger calls are cheaper (BENCHMARKS.md,
    # batch-norm statistics)
    inference_batch_size: int = setting(64, low=1, doc="images per call when calibrating and predicting")
    gpus: int = setting(1, doc="accelerator limit of each training task on a cluster (ignored locally)")
    mixed_precision: str = setting(
        "auto",
        choices=("auto", "on", "off"),
        doc="float16 compute with float32 weights: 'auto' turns it on where a GPU is visible",
    )
    # the paper's 10 folds x 3 backbones would otherwise ask for 30 GPUs at the same moment
    parallel_runs: int = setting(0, doc="(fold, backbone) iterations a cluster runs at once (0: no limit)")
    # the search tunes them
    stage1_epochs: int = setting(0, low=0, doc="epochs of stage 1 where they differ from `epochs` (0: `epochs`)")
    stage2_epochs: int = setting(0, low=0, doc="epochs of stage 2 where they differ from `epochs` (0: `epochs`)")

    def epochs_of(self, kind: str) -> int:
        """A stage's epoch budget: stages 1 and 2 may have their own, stage 3 and the classical arm share `epochs`."""
        own = {"stage1": self.stage1_epochs, "stage2": self.stage2_epochs}.get(kind, 0)
        return own or self.epochs


@dataclass(frozen=True)
class SplitConfig:
    """Grouped, stratified K-fold over source images (and patients where named)."""

    # demo: 2. kfp.local runs two (fold, backbone) iterations at a time and the six trainings of an
    # iteration one after another, so 2 folds take one round, 3 or 4 folds two; the demo spends that
    # round on more smears instead (BENCHMARKS.md, issue 14)
    folds: int = setting(2, low=2, doc="cross-validation folds")
    repeats: int = setting(1, low=1, doc="repeated K-fold (different shuffles): more paired scores for the t-tests")


@dataclass(frozen=True)
class EvaluateConfig:
    """Cross-validation statistics and the release of the best model."""

    # balanced accuracy, because plain accuracy of a model that calls every smear ALL is the share of ALL smears
    ttest_metric: str = setting("balanced_accuracy", choices=CV_METRICS, doc="the per-fold score the t-tests compare")
    confidence: float = setting(0.95, low=0.5, high=0.999, doc="confidence level of the tests and intervals")
    # Per task the backbone and arm with the highest mean of this metric on the folds' inner validation splits, and
    # of those the fold model with the highest inner-validation value. The evaluation folds never take part in the
    # choice, so the cross-validated scores stay an honest estimate of the released configuration.
    release_metric: str = setting(
        "balanced_accuracy", choices=INNER_METRICS, doc="the inner-validation metric the release is chosen by"
    )
    # A released model must beat the majority class and the colour-histogram baseline on the cross-validated
    # release_metric: "refuse" (nothing is released or published, the report says why) or "flag" (released,
    # marked as failing the gate in its manifest, the report and the run's summary).
    release_gate: str = setting("refuse", choices=GATE_ACTIONS, doc="what a release that fails its gate gets")
    colour_bins: int = setting(
        6, low=2, doc="bins per RGB channel of the colour-histogram baseline (6x6x6 = 216 features)"
    )
    # at 224 px such features reach 95-100 % on public ALL sets; not scored without ImageNet weights
    # (model.weights="none")
    features_size: int = setting(224, low=32, doc="square side, px, of the smear the ImageNet-features baseline reads")
    # or when every image gets one class
    degenerate_spread: float = setting(
        0.02,
        low=0.0,
        high=1.0,
        doc="predictions are flagged as degenerate when no "
        "class's probability varies by more than this over the held-out images",
    )
    # the demo's: on the generated data, the method must learn
    expectations: tuple[str, ...] = setting(
        (),
        rule="each TASK.METRIC>=NUMBER",
        doc="learning checks printed after a run, on the multistage arm's cross-validated mean",
    )
    models_uri: str = setting(
        "", doc="where the release is published besides the artifact: s3://bucket/prefix or a folder (empty: nowhere)"
    )
    # a screening test should miss few leukaemias; the evaluation folds are scored at it, the release stores it, and
    # predict uses it unless given --threshold
    target_sensitivity: float = setting(
        0.95,
        low=0.5,
        high=1.0,
        doc="detection's operating point: the highest "
        "threshold on P(ALL) reaching this sensitivity on the inner-validation folds",
    )
    # at 71-80 px the last blocks are 1x1-3x3: no "where"
    explain_min_side: int = setting(
        7, low=1, doc="Grad-CAM reads the backbone's last block with at least this many positions a side"
    )
    explain_examples: int = setting(
        1,
        low=0,
        doc="per class, the held-out images the model was most and least sure "
        "of that the report shows with their heat maps",
    )


@dataclass(frozen=True)
class StorageConfig:
    """Retry policy for object storage; endpoint and credentials come from the environment."""

    attempts: int = setting(4, low=1, doc="tries of each object-store call")
    backoff_seconds: float = setting(0.5, doc="first wait between tries, doubled each time")
    backoff_max_seconds: float = setting(8.0, doc="longest wait between tries")
    connect_timeout_seconds: float = setting(5.0, doc="connection timeout")
    read_timeout_seconds: float = setting(60.0, doc="read timeout")
    # an MD5 pass costs less than a round trip for small files and more for large ones
    # (bench/storage_throughput.py: 64 KB files 0.5 -> 0.9 of the raw client's rate)
    etag_verify_max_bytes: int = setting(
        1 << 20,
        doc="uploads up to this size are verified by the PUT's ETag (an MD5 "
        "computed alongside the sha256), larger ones by a HEAD",
    )


@dataclass(frozen=True)
class ImageConfig:
    """Container image the components run in (built from docker/)."""

    registry: str = setting("ghcr.io/leukemia-mtl", doc="the images' registry")
    cpu_name: str = setting("leukemia-mtl-cpu", doc="name of the CPU image")
    gpu_name: str = setting("leukemia-mtl-gpu", doc="name of the GPU image")
    tag: str = setting(__version__, shown="the package's version", doc="tag of both images")

    @property
    def cpu_image(self) -> str:
        return f"{self.registry}/{self.cpu_name}:{self.tag}"

    @property
    def gpu_image(self) -> str:
        return f"{self.registry}/{self.gpu_name}:{self.tag}"


@dataclass(frozen=True)
class TuneConfig:
    """Sequential model-based optimisation of the training settings (Optuna's TPE sampler, median pruning),
    nested in the folds: each (fold, backbone) searches on its own training part, every trial scored on that
    part's inner validation split (the one early stopping uses), and never reads the fold's evaluation
    images; the best trial's settings then train that fold. The first trial is always the profile's own
    settings, so the search shows what it gained over them on the same split."""

    # 0 in the demo: its budget has no room for one
    trials: int = setting(0, low=0, doc="trials per (fold, backbone); 0: no search")
    seed: int = setting(0, doc="the sampler's; with the profile's seed, the same trials and scores on CPU")
    startup_trials: int = setting(4, low=0, doc="random trials before TPE models the scores (n_startup_trials)")
    prune: bool = setting(True, doc="stop a trial whose intermediate scores (one per stage) fall below the median")
    # evaluate.release_metric on the inner split of each scored stage: both arms by default, so the search favours
    # neither side of the t-test
    arms: tuple[str, ...] = setting(TRANSFER_ARMS, choices=TRANSFER_ARMS, doc="the arms a trial trains")
    tasks: tuple[str, ...] = setting(SCORED_TASKS, choices=SCORED_TASKS, doc="the tasks its objective averages")
    # the space; each range (and choice list) also takes in the profile's own value
    learning_rate: tuple[float, float] = setting(
        (1e-4, 3e-3), low=1e-7, high=1.0, doc="the range searched for train.learning_rate (log scale)"
    )
    batch_sizes: tuple[int, ...] = setting(
        (8, 16, 32), rule="whole numbers above 0", doc="the choices searched for train.batch_size"
    )
    dense_units: tuple[int, ...] = setting(
        (64, 128, 256, 512), rule="whole numbers above 0", doc="the choices searched for model.dense_units"
    )
    dropout: tuple[float, float] = setting((0.0, 0.5), low=0.0, high=0.9, doc="the range searched for model.dropout")
    frozen_fraction: tuple[float, float] = setting(
        (0.0, 0.95), low=0.0, high=0.99, doc="the range searched for train.frozen_fraction"
    )
    target_per_class: tuple[int, int] = setting(
        (8, 48), low=0, high=100000, doc="the range searched for augment.target_per_class"
    )
    stage_epochs: tuple[int, int] = setting(
        (1, 6), low=1, high=100000, doc="the range searched for train.stage1_epochs and train.stage2_epochs"
    )


@dataclass(frozen=True)
class ServeConfig:
    """`python -m leukemia_mtl serve`: what one request may carry, and the endpoint's name. The bounds refuse a
    request before its body is read (413/411) or before any image is decoded (400), so a client cannot make the
    server hold more than about `max_request_bytes` per request in flight."""

    model_name: str = setting("leukemia-mtl", doc="the endpoint's model name")
    port: int = setting(8080, doc="the port it listens on")
    # JSON, base64 images: 4/3 of the files' bytes; 64 MiB holds a few ALL-IDB1 JPEGs
    max_request_bytes: int = setting(64 << 20, doc="largest request body")
    max_images_per_request: int = setting(16, doc="most images in one request")
    # a client that opens a body and stalls is answered 408 and its connection closed, rather than held open (a
    # slow-loris client holds a worker)
    request_timeout_s: float = setting(30.0, doc="seconds a client has to send a request's body after its headers")
    # requests that arrive together are answered by one call of the models (leukemia_mtl.batching): concurrent
    # clients share the calls; bench/serve_load.py measured the defaults
    batch_max_images: int = setting(16, low=1, high=256, doc="most images answered in one call of the models")
    batch_wait_ms: float = setting(
        10.0,
        low=0.0,
        high=1000.0,
        doc="how long a request waits for others to join its batch while the models are idle",
    )
    queue_max_images: int = setting(
        64, low=1, doc="images waiting for the models beyond which a request is refused (503: retry later)"
    )


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits of one kind of task."""

    cpu_request: str = setting(doc="CPU request")
    cpu_limit: str = setting(doc="CPU limit")
    memory_request: str = setting(doc="memory request")
    memory_limit: str = setting(doc="memory limit")


@dataclass(frozen=True)
class ClusterConfig:
    """What the compiled pipeline asks of a Kubernetes cluster (kfp.local ignores all of it).

    Memory is sized from measurements on CPU (BENCHMARKS.md): the paper's full-resolution
    segmentation peaks at 1.9 GB, InceptionResNetV2 training at 299 px and batch 48 at 12.3 GB
    (less on a GPU, where the activations live in GPU memory); everything else stays under 1 GB.
    """

    gpu_resource: str = setting("nvidia.com/gpu", doc="the extended resource GPU tasks ask for")
    # matches manifests/gpu-node-pool.yaml
    gpu_node_label: str = setting("leukemia-mtl/pool=gpu", doc="node selector of GPU tasks, 'key=value' (empty: none)")
    # the GPU pool's taint
    gpu_tolerations: tuple[str, ...] = setting(
        ("nvidia.com/gpu:NoSchedule",), doc="tolerations of GPU tasks, 'key[=value]:Effect'"
    )
    # holding MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY (manifests/)
    minio_secret: str = setting("leukemia-mtl-minio", doc="the Kubernetes Secret with the object store's credentials")
    retries: int = setting(2, doc="retries per task, on any failure (preempted nodes, object-store hiccups)")
    retry_backoff: str = setting("60s", doc="wait before a task's retry")
    light: Resources = field(default_factory=lambda: Resources("500m", "2", "1Gi", "4Gi"))
    augment: Resources = field(default_factory=lambda: Resources("1", "4", "4Gi", "8Gi"))
    segment: Resources = field(default_factory=lambda: Resources("4", "8", "6Gi", "12Gi"))
    train: Resources = field(default_factory=lambda: Resources("4", "8", "16Gi", "24Gi"))


@dataclass(frozen=True)
class Profile:
    name: str = setting(doc="the profile's name")
    seed: int = setting(0, doc="seed of every random choice (generator, splits, augmentation, initialisation)")
    synth: SynthConfig = field(default_factory=SynthConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    # Small enough that the whole DAG runs on a 2-core laptop in minutes.
    # The demo's learning checks: on the generated data the method must learn (issue 14).
    "demo": Profile(
        name="demo", evaluate=EvaluateConfig(expectations=("detection.balanced_accuracy>=0.90", "fab.f1_macro>=0.70"))
    ),
    # The paper's data sizes: ALL-IDB1's 108 smears at 2592x1944, ALL-IDB2's 260 crops; its folds, epochs and input
    # size from leukemia_mtl.paper, which the reports compare a run against.
    "paper": Profile(
        name="paper",
        synth=SynthConfig(n_smears=108, smear_width=2592, smear_height=1944, n_crops=260),
        data=DataConfig(pixel_size_um=REFERENCE_PIXEL_SIZE_UM),  # ALL-IDB's smears and crops: one camera
        segment=SegmentConfig(
            working_scale=0.5,
            patch_size=256,
            depth=4,
            base_filters=32,
            epochs=60,
            batch_size=16,
            patches_per_image=64,
            crop_size=257,
        ),
        model=ModelConfig(
            backbones=("InceptionV3", "Xception", "InceptionResNetV2"), input_size=paper.INPUT_SIZE, weights="imagenet"
        ),
        # ALL-IDB1's 108 smears to ~125 per class, as the paper's 500 augmented smears for 4 classes
        augment=AugmentConfig(target_per_class=125),
        train=TrainConfig(
            epochs=paper.EPOCHS,
            warmup_epochs=5,
            frozen_fraction=0.0,
            batch_size=48,
            learning_rate=1e-3,
            decay_steps=1000,
            early_stopping_patience=20,
            parallel_runs=6,
        ),
        split=SplitConfig(folds=paper.FOLDS),
    ),
    # A few hundred real multi-cell images (224 px fields or larger) and a few hundred single-cell images from
    # any lab, on a 2-core workstation (docs/real-data.md; BENCHMARKS.md has the measured run). The ROI
    # threshold adapts to the stain, the pixel scale is estimated per dataset unless --pixel-size gives it, and
    # nothing is expected of the scores: on real data the colour baseline beside them is the bar.
    "workstation": Profile(
        name="workstation",
        synth=SynthConfig(n_smears=400, n_crops=300),  # the generated stand-in, when no --smears/--cells is given
        preprocess=PreprocessConfig(threshold_method="nuclear"),
        segment=SegmentConfig(patches_per_image=16, epochs=6),
        # 80 px and 5 epochs keep 400 + 300 images within the profile's budget (BENCHMARKS.md, workstation run)
        model=ModelConfig(input_size=80),
        # the classes of a real set are rarely balanced: augment each to the largest, not to a fixed count
        augment=AugmentConfig(target_per_class=0),
        train=TrainConfig(epochs=5, batch_size=32, early_stopping_patience=2, validation_fraction=0.2),
        split=SplitConfig(folds=4),
    ),
}


class ConfigError(LeukemiaMtlError, ValueError):
    """A profile name or override that does not exist or does not fit."""


# Overrides come in three forms: `--set KEY=VALUE` (parse_overrides), a pipeline parameter's JSON object
# (overrides_from_json, task_settings) and the per-input options --negative-class and --pixel-size; each becomes a
# dict of dotted keys, and get_profile -> apply_overrides is the one place a dotted key is applied and checked.


def parse_overrides(pairs: list[str], flag: str = "--set") -> dict[str, object]:
    """['synth.n_smears=8', ...] -> {'synth.n_smears': 8}; values are JSON when they parse as JSON."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise ConfigError(f"{flag} {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def overrides_from_json(text: str) -> dict[str, Any]:
    """A pipeline parameter's overrides, a JSON object of dotted keys (the form the KFP UI shows), as a dict."""
    try:
        parsed = json.loads(text or "{}")
    except ValueError as exc:
        raise ConfigError(f"the overrides parameter is not JSON ({exc}): {text[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"the overrides parameter must be a JSON object of dotted settings, got {text[:200]!r}")
    return parsed


def get_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile with dotted-key overrides applied, e.g. {"synth.n_smears": 8}."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}")
    profile = apply_overrides(PROFILES[name], overrides or {})
    check(profile)
    return profile


def task_settings(profile: str, overrides: str) -> Profile:
    """A pipeline task's settings from its two parameters: the profile's name and the run's overrides
    as a JSON object of dotted keys (the form the KFP UI shows and a person can edit)."""
    return get_profile(profile, overrides_from_json(overrides))


def apply_overrides(profile: Profile, overrides: Mapping[str, Any]) -> Profile:
    """`profile` with each dotted key set (a JSON list becomes a tuple, an int a float where the field is one);
    a key that names no setting, or a value of the wrong type, is refused naming the key."""
    for key, value in overrides.items():
        profile = _override(profile, key.split("."), value, key)
    return profile


def _override(obj: Any, path: list[str], value: Any, full_key: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = path[0]
    if head not in names:
        raise ConfigError(f"unknown setting {full_key!r}; {type(obj).__name__} has: {', '.join(names)}")
    current = getattr(obj, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"setting {full_key!r}: {head!r} is a value, not a section")
        return dataclasses.replace(obj, **{head: _override(current, path[1:], value, full_key)})
    if dataclasses.is_dataclass(current):
        raise ConfigError(f"setting {full_key!r} is a section; name one of its fields")
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    expected = type(current)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"setting {full_key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return dataclasses.replace(obj, **{head: value})


def parse_expectation(text: str) -> tuple[str, str, float]:
    """'detection.balanced_accuracy>=0.9' -> ('detection', 'balanced_accuracy', 0.9)."""
    name, sep, threshold = str(text).partition(">=")
    task, dot, metric = name.strip().partition(".")
    try:
        value = float(threshold)
    except ValueError:
        value = None
    if not (sep and dot) or value is None or task not in SCORED_TASKS or metric not in CV_METRICS:
        raise ConfigError(
            f"evaluate.expectations: {text!r} must read TASK.METRIC>=NUMBER with TASK one of "
            f"{', '.join(SCORED_TASKS)} and METRIC one of {', '.join(CV_METRICS)}, e.g. detection.balanced_accuracy>=0.9"
        )
    return task, metric, value


def _per_input_overrides(
    option: str, value: str, every: str, keys: dict[str, str], form: str, convert: Any, well_formed: Any = bool
) -> dict[str, Any]:
    """`OPTION X` (every input: the setting `every`) or `OPTION smears=X,cells=Y` (the settings `keys` names) as
    settings; `form` is how a message names the accepted forms, `convert` turns a value into the setting's, and
    `well_formed` refuses a value (stripped) as malformed before any conversion."""
    if "=" not in value:
        return {every: convert(value)}
    overrides: dict[str, Any] = {}
    for part in value.split(","):
        role, _, given = part.partition("=")
        if role.strip() not in keys or not well_formed(given.strip()):
            raise ConfigError(f"{option} {value!r}: expected {form}, got {part!r}")
        if keys[role.strip()] in overrides:
            raise ConfigError(f"{option} {value!r}: {role.strip()} is given twice; give each input once")
        overrides[keys[role.strip()]] = convert(given)
    return overrides


def negative_class_overrides(value: str) -> dict[str, str]:
    """`--negative-class benign` (every input) or `--negative-class smears=benign,cells=normal` as settings."""
    return _per_input_overrides(
        "--negative-class",
        value,
        "data.negative_class",
        {"smears": "data.smears_negative_class", "cells": "data.cells_negative_class"},
        "NAME or smears=NAME,cells=NAME",
        str.strip,
    )


def pixel_size_overrides(value: str) -> dict[str, float]:
    """`--pixel-size 0.09` (every input) or `--pixel-size smears=0.36,cells=0.09` as settings (um per pixel)."""

    def number(text: str) -> float:
        try:
            size = float(text)
        except ValueError:
            size = -1.0
        if not 0 < size <= 100:
            raise ConfigError(
                f"--pixel-size {value!r}: {text.strip()!r} is not a pixel size in micrometres (a number "
                "above 0, e.g. 0.09 for ALL-IDB)"
            )
        return size

    return _per_input_overrides(
        "--pixel-size",
        value,
        "data.pixel_size_um",
        {"smears": "data.pixel_size_um", "cells": "data.cells_pixel_size_um"},
        "SIZE or smears=SIZE,cells=SIZE",
        number,
        well_formed=lambda text: True,
    )


def check(profile: Profile) -> None:
    """Settings that fit their type but not their meaning, refused before anything runs: first the checks that read
    more than one setting (or word their message their own way), then every field against its `setting` bounds."""
    model, tune = profile.model, profile.tune
    if not model.backbones:
        raise ConfigError("setting 'model.backbones' names no backbone; choose from " + ", ".join(BACKBONES))
    for name in model.backbones:
        if name not in BACKBONES:
            raise ConfigError(
                f"setting 'model.backbones': unknown backbone {name!r}; choose from {', '.join(BACKBONES)}"
            )
    if len(set(model.backbones)) != len(model.backbones):
        raise ConfigError(f"setting 'model.backbones' names a backbone twice: {list(model.backbones)}")
    smallest = max(BACKBONES[name].min_size for name in model.backbones)
    if model.input_size < smallest:
        raise ConfigError(
            f"setting 'model.input_size' is {model.input_size} px; {', '.join(model.backbones)} "
            f"{'needs' if len(model.backbones) == 1 else 'need'} at least {smallest}"
        )
    if not profile.data.negative_class.strip():
        raise ConfigError("setting 'data.negative_class' is empty; name the class of healthy images")
    if tune.trials < 0 or tune.startup_trials < 0:
        raise ConfigError(
            f"settings 'tune.trials' and 'tune.startup_trials' must be at least 0, got {tune.trials} and "
            f"{tune.startup_trials}"
        )
    for key, choices in (("tune.batch_sizes", tune.batch_sizes), ("tune.dense_units", tune.dense_units)):
        if not choices or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in choices):
            raise ConfigError(f"setting {key!r} must list whole numbers above 0, got {list(choices)}")
    _check_fields(profile, "")
    for text in profile.evaluate.expectations:
        parse_expectation(text)


def _check_fields(obj: Any, prefix: str) -> None:
    """Every setting of `obj` (its sections' too, walked as the reference walks them) against its bounds."""
    for key, f, value in _leaves(obj, prefix):
        meta = f.metadata
        choices, low, high, above = meta.get("choices"), meta.get("low"), meta.get("high"), meta.get("above")
        if isinstance(value, tuple):
            if choices is not None and (not value or any(v not in choices for v in value)):
                raise ConfigError(f"setting {key!r} must name some of {', '.join(choices)}, got {list(value)}")
            if low is not None and (len(value) != 2 or not low <= value[0] <= value[1] <= high):
                raise ConfigError(
                    f"setting {key!r} must be [LOW, HIGH] with {low} <= LOW <= HIGH <= {high}, got {list(value)}"
                )
        elif choices is not None and value not in choices:
            raise ConfigError(f"setting {key!r} must be one of {', '.join(choices)}, got {value!r}")
        elif above is not None and not value > above:
            raise ConfigError(f"setting {key!r} must be above {above}, got {value!r}")
        elif low is not None and high is not None and not low <= value <= high:
            raise ConfigError(f"setting {key!r} must be between {low} and {high}, got {value!r}")
        elif low is not None and high is None and value < low:
            raise ConfigError(f"setting {key!r} must be at least {low}, got {value!r}")


# docs/configuration.md: generated by reference_markdown, checked by tests/test_config.py
REFERENCE_PROFILES: tuple[str, ...] = ("demo", "workstation", "paper")
REFERENCE_COMMAND = "python -m runners.config_reference"


def _leaves(obj: Any, prefix: str = ""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f, value


def _allowed(f: dataclasses.Field) -> str:
    meta = f.metadata
    choices, low, high, above = meta.get("choices"), meta.get("low"), meta.get("high"), meta.get("above")
    pair = str(f.type).startswith("tuple")
    parts = []
    if choices is not None:
        parts.append(("some of " if pair else "one of ") + ", ".join(f"`{c}`" for c in choices))
    if low is not None and high is not None:
        parts.append(f"[LOW, HIGH] within {low} to {high}" if pair else f"{low} to {high}")
    elif low is not None:
        parts.append(f"at least {low}")
    if above is not None:
        parts.append(f"above {above}")
    if meta.get("rule"):
        parts.append(meta["rule"])
    return "; ".join(parts)


def reference_markdown() -> str:
    """docs/configuration.md: every setting by dotted key, with its type, its value in each profile (bold where it
    differs from the setting's default), the values it may take and its one-line doc."""
    profiles = [PROFILES[name] for name in REFERENCE_PROFILES]
    defaults = {key: value for key, _, value in _leaves(Profile(name=""))}
    lines = [
        "# Configuration reference",
        "",
        f"<!-- generated by `{REFERENCE_COMMAND}` from leukemia_mtl/config.py; do not edit by hand -->",
        "",
        (
            "Every setting of a profile, by the dotted key that `--set KEY=VALUE` (pipeline.py, `python -m "
            "leukemia_mtl`) and a pipeline's `overrides` parameter take. A value in **bold** differs from the "
            "setting's default; a setting is refused before anything runs when it is outside its allowed values."
        ),
        "",
    ]
    for section in dataclasses.fields(Profile):
        value = getattr(profiles[0], section.name)
        if not dataclasses.is_dataclass(value):
            continue
        lines += [
            f"## {section.name}",
            "",
            " ".join((type(value).__doc__ or "").strip().split("\n\n")[0].split()),
            "",
            "| Setting | Type | " + " | ".join(REFERENCE_PROFILES) + " | Allowed | Description |",
            "|---|---|" + "---|" * len(REFERENCE_PROFILES) + "---|---|",
        ]
        for key, f, _ in _leaves(value, section.name + "."):
            cells = []
            for profile in profiles:
                current = next(v for k, _, v in _leaves(profile) if k == key)
                shown = (
                    f.metadata.get("shown")
                    if current == defaults[key] and f.metadata.get("shown")
                    else f"`{json.dumps(current)}`"
                )
                cells.append(f"**{shown}**" if current != defaults[key] else shown)
            row = [f"`{key}`", f"`{f.type}`", *cells, _allowed(f), f.metadata.get("doc", "")]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        lines.append("")
    top = [f for f in dataclasses.fields(Profile) if not dataclasses.is_dataclass(getattr(profiles[0], f.name))]
    lines += [
        "## Profile",
        "",
        "| Setting | Type | " + " | ".join(REFERENCE_PROFILES) + " | Allowed | Description |",
        "|---|---|" + "---|" * len(REFERENCE_PROFILES) + "---|---|",
    ]
    for f in top:
        cells = [f"`{json.dumps(getattr(p, f.name))}`" for p in profiles]
        lines.append("| " + " | ".join([f"`{f.name}`", f"`{f.type}`", *cells, _allowed(f), f.metadata["doc"]]) + " |")
    return "\n".join(lines) + "\n"
