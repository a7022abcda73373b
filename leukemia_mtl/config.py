"""The one place for settings: named profiles (`demo`, `paper`) built from small dataclasses.

Modules take the dataclass they need as an argument; nothing reads constants from elsewhere.
A profile can be tweaked without editing code through `get_profile(name, overrides)`, where
overrides are dotted keys such as ``{"synth.n_smears": 8}``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from leukemia_mtl import __version__
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.models.catalog import BACKBONES
from leukemia_mtl.stages import SCORED_TASKS, TRANSFER_ARMS

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
CV_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                               "precision_weighted", "recall_weighted", "f1_weighted", "auc_macro", "auc_micro")
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


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the generated stand-in for ALL-IDB (ALL_IDB1 smears + ALL_IDB2 crops)."""

    n_smears: int = 24  # demo: 6 per class, so each of the 2 folds trains on 12 and scores 12
    smear_width: int = 640
    smear_height: int = 480
    n_crops: int = 16
    crop_size: int = 257
    jpeg_quality: int = 92
    classes: tuple[str, ...] = FAB_CLASSES


@dataclass(frozen=True)
class DataConfig:
    """How datasets are read and checked."""

    negative_class: str = "normal"
    # an input that names its negatives otherwise (a public smear set says 'benign', a single-cell set
    # 'normal'): ingest renames that input's class to negative_class, with a note. Empty: negative_class.
    smears_negative_class: str = ""
    cells_negative_class: str = ""
    # ALL-IDB1's `_1` suffix means ALL; without a label file its class is this name.
    positive_class_name: str = "ALL"
    # the types a label file may refine ALL into (FAB's L1-L3): anything else, a typo like 'L9' or a
    # stray invisible character, would become a new class
    subtypes: tuple[str, ...] = ("L1", "L2", "L3")
    # a folder-per-class cells input whose images are mostly wide fields (4:3 and wider: a camera's field, not a
    # crop around one cell) is refused as smears given in the wrong place; false where each field holds one cell
    check_cells_are_crops: bool = True
    # Larger images are refused before decoding (decompression bombs): 8x ALL-IDB1's 5 MP.
    max_pixels: int = 8 * 2592 * 1944
    min_side: int = 32
    # Micrometres per pixel of the smears (and of the single-cell images unless cells_pixel_size_um is given, so
    # smears alone cannot be given while the cells are estimated):
    # every size in the settings is in ALL-IDB1's pixels and is rescaled by it. 0: estimated per dataset (and
    # camera) from its red cells, else its nuclei (preprocess.measure_scale), reported in the ROI step's log and
    # page. ALL-IDB's: 0.09.
    pixel_size_um: float = 0.0
    cells_pixel_size_um: float = 0.0


@dataclass(frozen=True)
class PreprocessConfig:
    """The paper's ROI step: RGB offsets, monochrome, fixed threshold; then a documented clean-up."""

    offset_red: int = 88
    offset_green: int = 41
    offset_blue: int = 20
    threshold: int = 98
    # 'fixed': the paper's level above (fitted to ALL-IDB's stain and camera); 'adaptive': per image, Otsu's
    # level among the pixels darker than the background (itself Otsu's level over all pixels), which follows
    # a brighter or darker stain; 'nuclear': the nuclear stain's optical density (green's minus blue's, against
    # the image's own background), Otsu's level on it, and each nucleus grown over its cell rather than by a
    # fixed margin (README, "Finding the white cells"; bench/cell_finder.py measures all three on four labs'
    # annotated smears). paper and demo keep 'fixed'; the workstation profile, for other labs' smears, uses 'nuclear'.
    threshold_method: str = "fixed"
    # with 'nuclear': the least nuclear-stain density (green minus blue optical density) a nucleus has, below
    # which Otsu's level is not trusted (a field without a white cell: Otsu would split red cells from plasma)
    nuclear_min_density: float = 0.2
    # with 'nuclear': a pixel belongs to a cell, not the plasma, when its total optical density is above this
    # fraction of Otsu's level between the two (pale cytoplasm sits below the level itself). Chosen on txl-pbc's
    # train split (bench/cell_finder.py --sweep: the best worst-source recall), reported on its val and test splits
    cell_extent_level: float = 0.5
    # with 'nuclear': touching cells are cut apart (preprocess.split_touching). First by their nuclei: a region holding
    # two or more nucleus pieces of at least split_min_nucleus_um2 each is shared out, each pixel to its nearest such
    # piece, but two pieces stay one cell where the border between their shares is not a neck (at least
    # split_neck_fraction of the smaller share's diameter, the border measured as a chord at any angle: a lobed
    # neutrophil's lobes split a round cell across its whole width; touching cells meet along a waist). Then by
    # their outline: a region still holding two nuclear
    # cores and two cores of its own (distance to its edge above split_core_fraction of its largest) is cut along
    # the neck. Chosen on txl-pbc's train split (BENCHMARKS.md, "Touching white cells"): the most touching cells cut
    # without any source's recall falling
    split_touching: bool = True
    split_min_nucleus_um2: float = 15.0
    split_neck_fraction: float = 0.65
    split_core_fraction: float = 0.6
    # with 'adaptive': dark regions whose mean HSV saturation is below this are no stain (a scale bar's black
    # label, dust, the frame) and are dropped; stained nuclei measure 170-200 in the generator's smears
    min_stain_saturation: int = 30
    # Stain normalisation of every classifier's input (leukemia_mtl.stain): 'none' (the paper's: images as they are),
    # 'reinhard' (CIELAB means and deviations) or 'macenko' (stain vectors), onto a target fitted per fold and stage
    # on the training images only and stored with each model, so predict applies the same one.
    stain: str = "none"
    # a warning, in the task log, the run's output and the ROI page, when more of a dataset's images than
    # this have no region: the threshold does not fit this stain or camera, and later stages would see black
    warn_empty_fraction: float = 0.05
    # images read to estimate a dataset's pixel scale where data.pixel_size_um is not given (evenly spaced)
    scale_sample_images: int = 64
    # Clean-up of the raw threshold mask, in pixels at REFERENCE_WIDTH (scaled per image):
    # components smaller than this area are platelets and stain specks, not white cells.
    min_component_area: float = 600.0
    # Dilation that grows a nucleus-only mask into a region around the whole white cell.
    roi_margin: float = 28.0
    overlay_examples: int = 4


@dataclass(frozen=True)
class SegmentConfig:
    """Residual U-Net white-cell segmentation and the paper's lymphoblast isolation."""

    # Images are resized to this pixel scale (1.0 = ALL-IDB1 at 2592 px) before the U-Net sees
    # them, so one model serves smears and crops of any resolution at a bounded cost.
    working_scale: float = 640 / REFERENCE_WIDTH
    patch_size: int = 64
    depth: int = 3  # number of 2x2 max-pools
    # demo: 8 filters, 5 epochs, 32 patches per smear come close to the held-out Dice of 16 / 12 / 48
    # at a fraction of its cost
    base_filters: int = 8
    epochs: int = 5
    batch_size: int = 32
    patches_per_image: int = 32
    foreground_patch_fraction: float = 0.6  # patches centred on a white cell, the rest anywhere
    learning_rate: float = 1e-3
    holdout_fraction: float = 0.25  # smears kept out of training to measure Dice and IoU
    window_overlap: float = 0.5
    predict_batch_size: int = 16
    mask_threshold: float = 0.5
    # Clean-up and crops, in pixels at REFERENCE_WIDTH (scaled per image)
    min_cell_area: float = 1200.0
    crop_size: int = 96
    # Each cell's crop is a window of this side (px at REFERENCE_WIDTH, so the same field of view at any
    # resolution) centred on the cell: 257 is ALL-IDB2's crop, so smear cells and single-cell images share
    # one magnification and a crop keeps the cell's size, an FAB criterion (L1 small, L2 large). A cell
    # larger than the window gets a window of its own size plus crop_margin; 0: every crop is sized to its cell.
    crop_window: float = 257.0
    crop_margin: float = 0.15  # extra border around a cell's box, as a fraction of its size
    # Blue-channel isolation: inside the mask keep pixels whose blue is at least red - margin;
    # red cells (red > blue) overlapping a white cell's edge are removed.
    blue_margin: int = 12
    drop_border_cells: bool = True
    figure_examples: int = 3
    # The mask cells are isolated from. "auto": the U-Net's, unless on the held-out smears it is worse than the ROI
    # it learnt from: against ground-truth masks where there are some (a lower Dice), otherwise against the ROI
    # masks themselves (a Dice below min_weak_label_dice: it did not learn to reproduce its own labels). Masks only:
    # no class label takes part in the choice.
    isolation: str = "auto"
    min_weak_label_dice: float = 0.5
    # segment stops, naming the dataset, when no white cell is found in more of a dataset's images than this
    max_empty_fraction: float = 0.5


@dataclass(frozen=True)
class AugmentConfig:
    """The paper's augmentation, applied to training images only, to balanced classes."""

    # images per class after augmentation: at least this many, and as many as the largest class
    target_per_class: int = 16
    flip_horizontal: bool = True
    flip_vertical: bool = True
    rotation_max_degrees: float = 180.0  # a random angle in [0, max]
    shift_fraction: float = 0.1  # of the image side, in x and y
    scale_range: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class ModelConfig:
    """Backbones and their weights; training settings come with the finetune stages."""

    # demo and workstation: torchvision's MobileNetV2, whose ImageNet weights come with the packages (offline,
    # checked by sha256), and whose training steps cost a third of Xception's at the same input
    # (BENCHMARKS.md, "Backbones and their ImageNet weights"); the paper's three stay for the paper profile
    backbones: tuple[str, ...] = ("MobileNetV2",)
    input_size: int = 71
    # 'imagenet' (a package's file for DenseNet121 and MobileNetV2; Keras' download for the paper's three),
    # 'none' (random init), a local folder or file, or an s3:// URI holding Keras' own weight files (e.g.
    # inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5)
    weights: str = "imagenet"
    dense_units: int = 256
    dropout: float = 0.3


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings shared by every stage and the classical baseline (paper Table I)."""

    # demo: 3. With 2 the demo's models barely leave their starting point; early stopping on the
    # inner validation split picks among them (BENCHMARKS.md: issue 14's measurements)
    epochs: int = 3
    # head-only epochs on the frozen backbone before fine-tuning; the demo has none: each phase costs one more
    # graph build, and with 90 % of the ImageNet backbone frozen (frozen_fraction) its features stay protected
    warmup_epochs: int = 0
    batch_size: int = 16
    # the paper's 1e-3 (the paper profile) makes the demo's tiny training sets swing: inner-validation
    # losses of 2-15 after one epoch; 3e-4 learns steadily in 3 epochs (BENCHMARKS.md)
    learning_rate: float = 3e-4
    decay_steps: int = 50  # Adam's rate is multiplied by decay_rate every decay_steps steps
    decay_rate: float = 0.9
    early_stopping_patience: int = 3  # epochs without a better validation loss (0: no early stopping)
    restore_best_weights: bool = True  # end with the epoch of the lowest validation loss
    # share of the backbone's layers, from the input, that stay frozen while fine-tuning (0: all are
    # tuned, as the paper). The demo tunes the top 10 % (Xception: its exit flow): its
    # training graph builds and steps much faster (the ratios are in BENCHMARKS.md).
    frozen_fraction: float = 0.9
    # Where a phase leaves the backbone's first layers frozen (frozen_fraction, a head-only warm-up),
    # their output per image is computed once and every epoch trains only the rest on it (the same
    # numbers, a fraction of the work: BENCHMARKS.md). The cache's limit in MB for a stage's training
    # and validation images; above it every epoch runs the whole backbone. 0: never cache.
    frozen_features_mb: int = 3072
    # What stage 3 (and the classical arm) look at for a multi-cell smear:
    # "cells": every white cell segment isolated, at one magnification (segment.crop_window); a smear's
    #   probabilities are the mean over its cells. At 71 px a whole 640x480 smear shrinks a white cell to
    #   ~4 px; a cell crop keeps it at ~55 px (BENCHMARKS.md: the options measured).
    # "isolated": segment's isolated smear squared to the input (the paper's Fig. 6c); "original": the smear as is.
    stage3_images: str = "cells"
    # Share of each fold's training groups (smears, patients) held out, grouped and stratified, as the
    # inner validation split: early stopping, the best epoch and the release's choice of fold model read
    # it; the evaluation fold only scores. 0: no inner split (no early stopping, selection by fold order).
    validation_fraction: float = 0.25
    # Each task's classes weigh equally in the loss (scikit-learn's "balanced" class weights over the
    # task's own training labels): detection merges L1-L3 into ALL, 3:1 against normal after the FAB
    # classes were balanced.
    balanced_class_weights: bool = True
    # Batch-norm statistics from the data: before training a randomly initialised backbone (its default
    # statistics make a deep network's activations vanish: Xception's features ~1e-5 at init), and after
    # training for the layers that were trained (population statistics of the final weights, "precise
    # BN"), from at most this many training images. 0: Keras' running averages only.
    batchnorm_calibration_images: int = 256
    # images per call when calibrating and predicting: each eager call has a fixed cost however
    # small, so fewer, larger calls are cheaper (BENCHMARKS.md, batch-norm statistics)
    inference_batch_size: int = 64
    gpus: int = 1  # accelerator limit of each training task on a cluster (ignored locally)
    # float16 compute with float32 weights: "auto" turns it on where a GPU is visible
    mixed_precision: str = "auto"
    # (fold, backbone) iterations a cluster runs at once (0: no limit); the paper's 10 folds x 3
    # backbones would otherwise ask for 30 GPUs at the same moment
    parallel_runs: int = 0
    # epochs of stages 1 and 2 where they differ from `epochs` (0: `epochs`); the search tunes them
    stage1_epochs: int = 0
    stage2_epochs: int = 0

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
    folds: int = 2
    # repeated K-fold (different shuffles): more paired scores for the t-tests, as the paper's Table V
    repeats: int = 1


@dataclass(frozen=True)
class EvaluateConfig:
    """Cross-validation statistics and the release of the best model."""

    # the per-fold score the t-tests compare (any cross-validated metric); balanced accuracy, because
    # plain accuracy of a model that calls every smear ALL is the share of ALL smears
    ttest_metric: str = "balanced_accuracy"
    confidence: float = 0.95
    # Release: per task the backbone and arm with the highest mean of this metric on the folds' inner
    # validation splits, and of those the fold model with the highest inner-validation value. The
    # evaluation folds never take part in the choice, so the cross-validated scores stay an honest
    # estimate of the released configuration.
    release_metric: str = "balanced_accuracy"
    # A released model must beat the majority class and the colour-histogram baseline on the
    # cross-validated release_metric: "refuse" (nothing is released or published, the report says why)
    # or "flag" (released, marked as failing the gate in its manifest, the report and the run's summary).
    release_gate: str = "refuse"
    colour_bins: int = 6  # per RGB channel, of the colour-histogram baseline (6x6x6 = 216 features)
    # The ImageNet-features baseline: the first backbone's pooled ImageNet features of the whole smear, resized to a
    # square of this many px (at 224 px such features reach 95-100 % on public ALL sets); not scored without
    # ImageNet weights (model.weights="none")
    features_size: int = 224
    # Predictions are flagged as degenerate when every image gets one class, or when no class's
    # probability varies by more than this over the held-out images.
    degenerate_spread: float = 0.02
    # Learning checks printed after a run: "task.metric>=value" on the multistage arm's cross-validated
    # mean (the demo's: on the generated data, the method must learn).
    expectations: tuple[str, ...] = ()
    # Where the release is published besides the pipeline artifact: s3://bucket/prefix or a folder ("" = nowhere)
    models_uri: str = ""
    # Detection's operating point: the highest threshold on P(ALL) that reaches this sensitivity on the folds'
    # inner-validation predictions (a screening test should miss few leukaemias); the evaluation folds are scored at
    # it, the release stores it, and predict uses it unless given --threshold.
    target_sensitivity: float = 0.95
    # Grad-CAM: the backbone's last block with at least this many positions a side (at 71-80 px the last blocks are
    # 1x1-3x3: no "where"); and per class, how many of the held-out images the model was most and least sure of
    # the run's report shows with their heat maps
    explain_min_side: int = 7
    explain_examples: int = 1


@dataclass(frozen=True)
class StorageConfig:
    """Retry policy for object storage; endpoint and credentials come from the environment."""

    attempts: int = 4
    backoff_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 60.0
    # Uploads up to this size are verified by the PUT's ETag (an MD5 we compute alongside the sha256),
    # larger ones by a HEAD: an MD5 pass costs less than a round trip for small files and more for
    # large ones (bench/storage_throughput.py: 64 KB files 0.5 -> 0.9 of the raw client's rate)
    etag_verify_max_bytes: int = 1 << 20


@dataclass(frozen=True)
class ImageConfig:
    """Container image the components run in (built from docker/)."""

    registry: str = "ghcr.io/leukemia-mtl"
    cpu_name: str = "leukemia-mtl-cpu"
    gpu_name: str = "leukemia-mtl-gpu"
    tag: str = __version__

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

    trials: int = 0  # per (fold, backbone); 0: no search (the demo: its budget has no room for one)
    seed: int = 0  # the sampler's; with the profile's seed, the same trials and scores on CPU
    startup_trials: int = 4  # random trials before TPE models the scores (Optuna's n_startup_trials)
    prune: bool = True  # stop a trial whose intermediate scores (one per stage) fall below the median
    # what a trial trains and its objective averages, evaluate.release_metric on the inner split of each
    # scored stage: both arms by default, so the search favours neither side of the t-test
    arms: tuple[str, ...] = TRANSFER_ARMS
    tasks: tuple[str, ...] = SCORED_TASKS
    # the space; each range (and choice list) also takes in the profile's own value
    learning_rate: tuple[float, float] = (1e-4, 3e-3)  # log scale
    batch_sizes: tuple[int, ...] = (8, 16, 32)
    dense_units: tuple[int, ...] = (64, 128, 256, 512)
    dropout: tuple[float, float] = (0.0, 0.5)
    frozen_fraction: tuple[float, float] = (0.0, 0.95)
    target_per_class: tuple[int, int] = (8, 48)  # augment.target_per_class
    stage_epochs: tuple[int, int] = (1, 6)  # train.stage1_epochs and train.stage2_epochs


@dataclass(frozen=True)
class ServeConfig:
    """`python -m leukemia_mtl serve`: what one request may carry, and the endpoint's name. The bounds refuse a
    request before its body is read (413/411) or before any image is decoded (400), so a client cannot make the
    server hold more than about `max_request_bytes` per request in flight."""

    model_name: str = "leukemia-mtl"
    port: int = 8080
    # a request's body (JSON, base64 images: 4/3 of the files' bytes); 64 MiB holds a few ALL-IDB1 JPEGs
    max_request_bytes: int = 64 << 20
    max_images_per_request: int = 16
    # seconds a client has to send a request's body once its headers arrived: a client that opens a body and stalls
    # is answered 408 and its connection closed, rather than held open (a slow-loris client holds a worker)
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits of one kind of task."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class ClusterConfig:
    """What the compiled pipeline asks of a Kubernetes cluster (kfp.local ignores all of it).

    Memory is sized from measurements on CPU (BENCHMARKS.md): the paper's full-resolution
    segmentation peaks at 1.9 GB, InceptionResNetV2 training at 299 px and batch 48 at 12.3 GB
    (less on a GPU, where the activations live in GPU memory); everything else stays under 1 GB.
    """

    gpu_resource: str = "nvidia.com/gpu"
    # node selector of GPU tasks, "key=value" ("" for none); matches manifests/gpu-node-pool.yaml
    gpu_node_label: str = "leukemia-mtl/pool=gpu"
    # tolerations of GPU tasks, "key[=value]:Effect"; the GPU pool's taint
    gpu_tolerations: tuple[str, ...] = ("nvidia.com/gpu:NoSchedule",)
    # Kubernetes Secret with MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY (manifests/)
    minio_secret: str = "leukemia-mtl-minio"
    retries: int = 2  # per task, on any failure (preempted nodes, object-store hiccups)
    retry_backoff: str = "60s"
    light: Resources = field(default_factory=lambda: Resources("500m", "2", "1Gi", "4Gi"))
    augment: Resources = field(default_factory=lambda: Resources("1", "4", "4Gi", "8Gi"))
    segment: Resources = field(default_factory=lambda: Resources("4", "8", "6Gi", "12Gi"))
    train: Resources = field(default_factory=lambda: Resources("4", "8", "16Gi", "24Gi"))


@dataclass(frozen=True)
class Profile:
    name: str
    seed: int = 0
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
    "demo": Profile(name="demo", evaluate=EvaluateConfig(
        expectations=("detection.balanced_accuracy>=0.90", "fab.f1_macro>=0.70"))),
    # The paper's data sizes: ALL-IDB1's 108 smears at 2592x1944, ALL-IDB2's 260 crops.
    "paper": Profile(
        name="paper",
        synth=SynthConfig(n_smears=108, smear_width=2592, smear_height=1944, n_crops=260),
        data=DataConfig(pixel_size_um=REFERENCE_PIXEL_SIZE_UM),  # ALL-IDB's smears and crops: one camera
        segment=SegmentConfig(
            working_scale=0.5, patch_size=256, depth=4, base_filters=32, epochs=60, batch_size=16,
            patches_per_image=64, crop_size=257,
        ),
        model=ModelConfig(backbones=("InceptionV3", "Xception", "InceptionResNetV2"), input_size=299, weights="imagenet"),
        # ALL-IDB1's 108 smears to ~125 per class, as the paper's 500 augmented smears for 4 classes
        augment=AugmentConfig(target_per_class=125),
        train=TrainConfig(epochs=160, warmup_epochs=5, frozen_fraction=0.0, batch_size=48, learning_rate=1e-3,
                          decay_steps=1000, early_stopping_patience=20, parallel_runs=6),
        split=SplitConfig(folds=10),
    ),
    # A few hundred real multi-cell images (224 px fields or larger) and a few hundred single-cell images from
    # any lab, on a 2-core workstation (README; BENCHMARKS.md has the measured run). The ROI
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


def get_profile(name: str, overrides: Mapping[str, Any] | None = None) -> Profile:
    """The named profile with dotted-key overrides applied, e.g. {"synth.n_smears": 8}."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}")
    profile = PROFILES[name]
    for key, value in (overrides or {}).items():
        profile = _override(profile, key.split("."), value, key)
    check(profile)
    return profile


def task_settings(profile: str, overrides: str) -> Profile:
    """A pipeline task's settings from its two parameters: the profile's name and the run's overrides
    as a JSON object of dotted keys (the form the KFP UI shows and a person can edit)."""
    try:
        parsed = json.loads(overrides or "{}")
    except ValueError as exc:
        raise ConfigError(f"the overrides parameter is not JSON ({exc}): {overrides[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"the overrides parameter must be a JSON object of dotted settings, got {overrides[:200]!r}")
    return get_profile(profile, parsed)


def parse_expectation(text: str) -> tuple[str, str, float]:
    """'detection.balanced_accuracy>=0.9' -> ('detection', 'balanced_accuracy', 0.9)."""
    name, sep, threshold = str(text).partition(">=")
    task, dot, metric = name.strip().partition(".")
    try:
        value = float(threshold)
    except ValueError:
        value = None
    if not (sep and dot) or value is None or task not in SCORED_TASKS or metric not in CV_METRICS:
        raise ConfigError(f"evaluate.expectations: {text!r} must read TASK.METRIC>=NUMBER with TASK one of "
                          f"{', '.join(SCORED_TASKS)} and METRIC one of {', '.join(CV_METRICS)}, e.g. detection.balanced_accuracy>=0.9")
    return task, metric, value


def negative_class_overrides(value: str) -> dict[str, str]:
    """`--negative-class benign` (every input) or `--negative-class smears=benign,cells=normal` as settings."""
    if "=" not in value:
        return {"data.negative_class": value.strip()}
    overrides: dict[str, str] = {}
    for part in value.split(","):
        role, _, name = part.partition("=")
        if role.strip() not in ("smears", "cells") or not name.strip():
            raise ConfigError(f"--negative-class {value!r}: expected NAME or smears=NAME,cells=NAME, got {part!r}")
        if f"data.{role.strip()}_negative_class" in overrides:
            raise ConfigError(f"--negative-class {value!r}: {role.strip()} is given twice; give each input once")
        overrides[f"data.{role.strip()}_negative_class"] = name.strip()
    return overrides


def pixel_size_overrides(value: str) -> dict[str, float]:
    """`--pixel-size 0.09` (every input) or `--pixel-size smears=0.36,cells=0.09` as settings (um per pixel)."""
    def number(text: str) -> float:
        try:
            size = float(text)
        except ValueError:
            size = -1.0
        if not 0 < size <= 100:
            raise ConfigError(f"--pixel-size {value!r}: {text.strip()!r} is not a pixel size in micrometres (a number "
                              "above 0, e.g. 0.09 for ALL-IDB)")
        return size

    if "=" not in value:
        return {"data.pixel_size_um": number(value)}
    overrides: dict[str, float] = {}
    for part in value.split(","):
        role, _, size = part.partition("=")
        if role.strip() not in ("smears", "cells"):
            raise ConfigError(f"--pixel-size {value!r}: expected SIZE or smears=SIZE,cells=SIZE, got {part!r}")
        if ("data.pixel_size_um" if role.strip() == "smears" else "data.cells_pixel_size_um") in overrides:
            raise ConfigError(f"--pixel-size {value!r}: {role.strip()} is given twice; give each input once")
        overrides["data.pixel_size_um" if role.strip() == "smears" else "data.cells_pixel_size_um"] = number(size)
    return overrides


def check(profile: Profile) -> None:
    """Settings that fit their type but not their meaning, refused before anything runs."""
    train, evaluate, model = profile.train, profile.evaluate, profile.model
    if not model.backbones:
        raise ConfigError("setting 'model.backbones' names no backbone; choose from " + ", ".join(BACKBONES))
    for name in model.backbones:
        if name not in BACKBONES:
            raise ConfigError(f"setting 'model.backbones': unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if len(set(model.backbones)) != len(model.backbones):
        raise ConfigError(f"setting 'model.backbones' names a backbone twice: {list(model.backbones)}")
    smallest = max(BACKBONES[name].min_size for name in model.backbones)
    if model.input_size < smallest:
        raise ConfigError(f"setting 'model.input_size' is {model.input_size} px; {', '.join(model.backbones)} "
                          f"{'needs' if len(model.backbones) == 1 else 'need'} at least {smallest}")
    choices = (("train.stage3_images", train.stage3_images, STAGE3_IMAGES),
               ("preprocess.threshold_method", profile.preprocess.threshold_method, THRESHOLD_METHODS),
               ("preprocess.stain", profile.preprocess.stain, STAIN_METHODS),
               ("segment.isolation", profile.segment.isolation, ISOLATION_MASKS),
               ("evaluate.release_gate", evaluate.release_gate, GATE_ACTIONS),
               ("evaluate.release_metric", evaluate.release_metric, INNER_METRICS),
               ("evaluate.ttest_metric", evaluate.ttest_metric, CV_METRICS))
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"setting {key!r} must be one of {', '.join(allowed)}, got {value!r}")
    if not train.learning_rate > 0:
        raise ConfigError(f"setting 'train.learning_rate' must be above 0, got {train.learning_rate!r}")
    if not profile.data.negative_class.strip():
        raise ConfigError("setting 'data.negative_class' is empty; name the class of healthy images")
    ranges = (("train.validation_fraction", train.validation_fraction, 0.0, 0.5),
              ("train.frozen_fraction", train.frozen_fraction, 0.0, 0.99),
              ("train.decay_rate", train.decay_rate, 0.01, 1.0),
              ("segment.holdout_fraction", profile.segment.holdout_fraction, 0.05, 0.5),
              ("segment.min_weak_label_dice", profile.segment.min_weak_label_dice, 0.0, 1.0),
              ("segment.max_empty_fraction", profile.segment.max_empty_fraction, 0.0, 1.0),
              ("preprocess.warn_empty_fraction", profile.preprocess.warn_empty_fraction, 0.0, 1.0),
              ("preprocess.nuclear_min_density", profile.preprocess.nuclear_min_density, 0.0, 3.0),
              ("preprocess.cell_extent_level", profile.preprocess.cell_extent_level, 0.0, 1.0),
              ("preprocess.split_core_fraction", profile.preprocess.split_core_fraction, 0.05, 0.95),
              ("preprocess.split_min_nucleus_um2", profile.preprocess.split_min_nucleus_um2, 0.0, 500.0),
              ("preprocess.split_neck_fraction", profile.preprocess.split_neck_fraction, 0.0, 10.0),
              ("data.pixel_size_um", profile.data.pixel_size_um, 0.0, 100.0),
              ("data.cells_pixel_size_um", profile.data.cells_pixel_size_um, 0.0, 100.0),
              ("evaluate.confidence", evaluate.confidence, 0.5, 0.999),
              ("evaluate.degenerate_spread", evaluate.degenerate_spread, 0.0, 1.0),
              ("evaluate.target_sensitivity", evaluate.target_sensitivity, 0.5, 1.0))
    for key, value, low, high in ranges:
        if not low <= value <= high:
            raise ConfigError(f"setting {key!r} must be between {low} and {high}, got {value!r}")
    minimums = (("split.folds", profile.split.folds, 2), ("split.repeats", profile.split.repeats, 1),
                ("train.epochs", train.epochs, 1), ("train.batch_size", train.batch_size, 1),
                ("train.decay_steps", train.decay_steps, 1), ("train.early_stopping_patience", train.early_stopping_patience, 0),
                ("train.frozen_features_mb", train.frozen_features_mb, 0),
                ("segment.epochs", profile.segment.epochs, 1), ("segment.batch_size", profile.segment.batch_size, 1),
                ("train.stage1_epochs", train.stage1_epochs, 0), ("train.stage2_epochs", train.stage2_epochs, 0),
                ("augment.target_per_class", profile.augment.target_per_class, 0),  # 0: balance to the largest class
                ("storage.attempts", profile.storage.attempts, 1), ("data.min_side", profile.data.min_side, 1),
                ("preprocess.scale_sample_images", profile.preprocess.scale_sample_images, 1),
                ("train.inference_batch_size", train.inference_batch_size, 1),
                ("train.batchnorm_calibration_images", train.batchnorm_calibration_images, 0),
                ("evaluate.colour_bins", evaluate.colour_bins, 2), ("evaluate.features_size", evaluate.features_size, 32),
                ("evaluate.explain_min_side", evaluate.explain_min_side, 1), ("evaluate.explain_examples", evaluate.explain_examples, 0))
    for key, value, low in minimums:
        if value < low:
            raise ConfigError(f"setting {key!r} must be at least {low}, got {value!r}")
    for text in evaluate.expectations:
        parse_expectation(text)
    _check_tune(profile.tune)


def _check_tune(tune: TuneConfig) -> None:
    if tune.trials < 0 or tune.startup_trials < 0:
        raise ConfigError(f"settings 'tune.trials' and 'tune.startup_trials' must be at least 0, got {tune.trials} and "
                          f"{tune.startup_trials}")
    for key, values, allowed in (("tune.arms", tune.arms, TRANSFER_ARMS), ("tune.tasks", tune.tasks, SCORED_TASKS)):
        if not values or any(v not in allowed for v in values):
            raise ConfigError(f"setting {key!r} must name some of {', '.join(allowed)}, got {list(values)}")
    bounds = (("tune.learning_rate", tune.learning_rate, 1e-7, 1.0), ("tune.dropout", tune.dropout, 0.0, 0.9),
              ("tune.frozen_fraction", tune.frozen_fraction, 0.0, 0.99), ("tune.target_per_class", tune.target_per_class, 0, 100000),
              ("tune.stage_epochs", tune.stage_epochs, 1, 100000))
    for key, pair, low, high in bounds:
        if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
            raise ConfigError(f"setting {key!r} must be [LOW, HIGH] with {low} <= LOW <= HIGH <= {high}, got {list(pair)}")
    for key, choices in (("tune.batch_sizes", tune.batch_sizes), ("tune.dense_units", tune.dense_units)):
        if not choices or any(not isinstance(c, int) or isinstance(c, bool) or c < 1 for c in choices):
            raise ConfigError(f"setting {key!r} must list whole numbers above 0, got {list(choices)}")


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
        raise ConfigError(
            f"setting {full_key!r} must be {expected.__name__}, got {type(value).__name__} {value!r}"
        )
    return dataclasses.replace(obj, **{head: value})
