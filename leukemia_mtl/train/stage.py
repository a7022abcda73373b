"""One finetune stage as the pipeline runs it: arrays in; model bundle, history and figure out."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil

from leukemia_mtl import explain, report
from leukemia_mtl.artifacts import log_metrics
from leukemia_mtl.bundles import (
    EVALUATION_FILES,
    EXPLANATIONS_FILE,
    HISTORY_FILE,
    PREDICTIONS_FILE,
    ClassifierInfo,
    class_probabilities,
    load_classifier,
    model_outputs,
    save_classifier,
)
from leukemia_mtl.config import Profile
from leukemia_mtl.devices import devices_for_training
from leukemia_mtl.io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from leukemia_mtl.models.backbones import ResolvedWeights, build_classifier, get_backbone, resolve_weights
from leukemia_mtl.stages import StageError, TrainingStage, display_name, task_classes, task_names, training_stage
from leukemia_mtl.train.data import StageArrays
from leukemia_mtl.train.finetune import FitResult, balanced_sample_weights, carry_over, encode_labels, fit_stage

log = logging.getLogger(__name__)


@dataclass
class StageSummary:
    stage: str
    task: str
    backbone: str
    weights: str
    imagenet: bool
    carried_over: list[str]
    fold_id: str
    repeat: int
    fold: int
    train_source_images: int  # before augmentation
    train_images: int
    eval_images: int  # what is scored: images, or smears seen through their cells
    epochs: int
    seconds: float
    images_per_second: float
    eval_accuracy: float
    eval_loss: float
    val_images: int = 0  # the inner validation split's scored units (0: none, no early stopping)
    best_epoch: int | None = None  # the epoch the model ends with, chosen on the inner validation split
    val_loss: float | None = None
    val_accuracy: float | None = None
    class_weights: dict[str, float] = field(default_factory=dict)
    batchnorm_calibration: dict[str, int] = field(default_factory=dict)
    # where the task's time went, in seconds (bench/dag_breakdown.py adds them up over a run)
    timings: dict[str, float] = field(default_factory=dict)
    weights_source: dict = field(default_factory=dict)  # where the starting weights came from (ClassifierInfo's)
    # per training phase whose frozen layers' features were computed once and reused by every epoch
    frozen_features: list[dict] = field(default_factory=list)

    def model_metadata(self) -> dict[str, object]:
        """What the KFP UI shows beside the Model artifact."""
        return {
            "framework": "keras",
            "backbone": self.backbone,
            "stage": self.stage,
            "task": self.task,
            "fold": self.fold_id,
            "weights": self.weights,
            "imagenet": self.imagenet,
            "carried_over": self.carried_over,
        }

    def metrics(self) -> dict[str, float]:
        values = {
            "eval_accuracy": round(self.eval_accuracy, 4),
            "eval_loss": round(self.eval_loss, 4),
            "train_images": self.train_images,
            "val_images": self.val_images,
            "eval_images": self.eval_images,
            "epochs": self.epochs,
            "train_seconds": round(self.seconds, 1),
            "images_per_second": round(self.images_per_second, 1),
            "imagenet_weights": float(self.imagenet),
        }
        if self.val_accuracy is not None:
            values.update(
                val_accuracy=round(self.val_accuracy, 4), val_loss=round(self.val_loss, 4), best_epoch=self.best_epoch
            )
        return values


def unit_probabilities(
    item_probabilities: np.ndarray, item_sources: np.ndarray, units: np.ndarray, unit_labels: np.ndarray, n_classes: int
) -> np.ndarray:
    """(units, classes): the mean over each unit's items (a smear's cells; an image is its own unit).
    A unit without items (a smear where segment found no cell: predict refuses it) is scored, not
    dropped, and counted as an error: all its probability on a wrong class (the next one)."""
    out = np.zeros((len(units), n_classes), np.float64)
    sources = np.asarray(item_sources)
    for row, (unit, label) in enumerate(zip(np.asarray(units).tolist(), np.asarray(unit_labels).astype(int).tolist())):
        mine = sources == unit
        if mine.any():
            out[row] = np.asarray(item_probabilities, np.float64)[mine].mean(axis=0)
        else:
            out[row, (label + 1) % n_classes] = 1.0
    return out / out.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only within ~1e-7


@contextmanager
def _timed(timings: dict[str, float], step: str):
    """The seconds the block takes, into timings[step] (the summary's record of where the task's time went)."""
    started = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - started


@dataclass
class _Inputs:
    """One stage's arrays with their labels encoded for its head, and the loss's per-image weights."""

    arrays: StageArrays
    data_summary: dict
    classes: tuple[str, ...]
    y_train: np.ndarray
    y_val: np.ndarray
    train_weights: np.ndarray | None
    val_weights: np.ndarray | None
    per_class: dict[int, float]  # each class's weight in the loss (1.0 each without balancing)


@dataclass
class _Start:
    """Where a stage's weights start: ImageNet (or random) weights, or the previous stage's model."""

    weights: str
    imagenet: bool
    source: dict
    carried_over: list[str]


@dataclass
class _Scores:
    """Per scored part ("eval", "val"): (unit probabilities, labels, units); losses and accuracies."""

    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    eval_items: np.ndarray  # the evaluation items' own probabilities (explain picks among them)
    eval_loss: float
    eval_accuracy: float
    val_loss: float | None
    val_accuracy: float | None


def _load(plan: TrainingStage, data_dir: Path, profile: Profile) -> _Inputs:
    """The stage's arrays from augment's folder, labelled as its task names the classes."""
    arrays = StageArrays.load(Path(data_dir) / f"{plan.arrays}.npz")
    data_summary = json.loads((Path(data_dir) / "summary.json").read_text())
    negative = profile.data.negative_class
    classes = task_classes(arrays.classes, plan.task, negative)
    y_train, y_val = (
        encode_labels(task_names(labels, plan.task, negative), classes, plan.head)
        for labels in (arrays.y_train, arrays.y_val)
    )
    if profile.train.balanced_class_weights:
        train_weights, per_class = balanced_sample_weights(y_train, len(classes))
        val_weights = np.array([per_class[int(c)] for c in y_val], np.float32)
    else:
        train_weights = val_weights = None
        per_class = dict.fromkeys(range(len(classes)), 1.0)
    return _Inputs(
        arrays=arrays,
        data_summary=data_summary,
        classes=classes,
        y_train=y_train,
        y_val=y_val,
        train_weights=train_weights,
        val_weights=val_weights,
        per_class=per_class,
    )


def _build(
    plan: TrainingStage,
    backbone: str,
    weights: ResolvedWeights,
    previous_dir: Path | None,
    n_classes: int,
    profile: Profile,
    seed: int,
):
    """The stage's classifier (inside the training strategy's scope): seeded, and started from `weights` or from
    the previous stage's model. Returns (model, _Start)."""
    import keras

    keras.utils.set_random_seed(seed)  # the new head's (and a random backbone's) initial weights
    model = build_classifier(
        backbone,
        profile.model.input_size,
        n_classes,
        weights,
        head=plan.head,
        dense_units=profile.model.dense_units if plan.dense else 0,
        dropout=profile.model.dropout if plan.dense else 0.0,
    )
    if previous_dir is None:
        return model, _Start(
            weights=weights.description, imagenet=weights.imagenet, source=weights.provenance, carried_over=[]
        )
    previous, previous_info = load_classifier(previous_dir)
    if previous_info.backbone != backbone or previous_info.input_size != profile.model.input_size:
        raise StageError(
            f"{previous_dir}: a {previous_info.backbone} at {previous_info.input_size} px cannot start "
            f"a {backbone} at {profile.model.input_size} px"
        )
    carried = carry_over(previous, model)
    return model, _Start(
        weights=f"{previous_info.stage} ({previous_info.weights})",
        imagenet=previous_info.imagenet,
        source=previous_info.weights_source or {},
        carried_over=carried,
    )


def _fit(
    model,
    plan: TrainingStage,
    inputs: _Inputs,
    profile: Profile,
    *,
    seed: int,
    random_backbone: bool,
    timings: dict[str, float],
) -> FitResult:
    """Warm-up and fine-tuning for the stage's epochs; where fit's time went, into `timings`."""
    arrays = inputs.arrays
    fit = fit_stage(
        model,
        arrays.x_train,
        inputs.y_train,
        arrays.x_val,
        inputs.y_val,
        cfg=dataclasses.replace(profile.train, epochs=profile.train.epochs_of(plan.kind)),
        head=plan.head,
        seed=seed,
        sample_weight=inputs.train_weights,
        val_sample_weight=inputs.val_weights,
        random_backbone=random_backbone,
    )
    timings.update(
        frozen_features=fit.frozen_features_seconds,
        first_epochs=fit.first_epochs_seconds,
        steady_epochs=fit.steady_epochs_seconds,
        fit_other=fit.seconds - fit.frozen_features_seconds - fit.first_epochs_seconds - fit.steady_epochs_seconds,
    )
    return fit


def _score(model, plan: TrainingStage, inputs: _Inputs, profile: Profile) -> _Scores:
    """The evaluation fold's and the inner validation split's units scored, in one pass over their items."""
    arrays, n_classes = inputs.arrays, len(inputs.classes)
    both = np.concatenate([arrays.x_eval, arrays.x_val])  # one pass: fewer eager calls
    outputs = class_probabilities(model_outputs(model, both, profile.train.inference_batch_size), plan.head)
    per_part = {"eval": outputs[: len(arrays.x_eval)], "val": outputs[len(arrays.x_eval) :]}
    parts = {}
    for part, sources, units, unit_labels in (
        ("eval", arrays.sources_eval, arrays.units_eval, arrays.unit_labels_eval),
        ("val", arrays.sources_val, arrays.units_val, arrays.unit_labels_val),
    ):
        labels = encode_labels(
            task_names(unit_labels, plan.task, profile.data.negative_class), inputs.classes, "softmax"
        )
        parts[part] = (unit_probabilities(per_part[part], sources, units, labels, n_classes), labels, units)
    # no evaluation part: a search's trial (leukemia_mtl.tune), which never holds the fold's evaluation images
    eval_loss, eval_accuracy = (
        _loss_and_accuracy(*parts["eval"][:2], n_classes) if len(arrays.units_eval) else (float("nan"), float("nan"))
    )
    val_loss, val_accuracy = _loss_and_accuracy(*parts["val"][:2], n_classes) if len(arrays.units_val) else (None, None)
    return _Scores(
        parts=parts,
        eval_items=per_part["eval"],
        eval_loss=eval_loss,
        eval_accuracy=eval_accuracy,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
    )


def _explain(
    model, plan: TrainingStage, backbone: str, inputs: _Inputs, scores: _Scores, profile: Profile
) -> bytes | None:
    """Grad-CAM of the held-out images the model was most and least sure of (None: none held out, or not asked)."""
    arrays = inputs.arrays
    if not (profile.evaluate.explain_examples and len(arrays.units_eval)):
        return None
    labels = encode_labels(task_names(arrays.y_eval, plan.task, profile.data.negative_class), inputs.classes, "softmax")
    title = f"{plan.kind} ({plan.task}), {backbone}, fold {inputs.data_summary['fold_id']}: held-out images"
    return explain.examples_figure(
        model,
        arrays.x_eval,
        labels,
        scores.eval_items,
        list(inputs.classes),
        title,
        min_side=profile.evaluate.explain_min_side,
        per_class=profile.evaluate.explain_examples,
    )


def _save(
    model,
    plan: TrainingStage,
    backbone: str,
    inputs: _Inputs,
    start: _Start,
    fit: FitResult,
    scores: _Scores,
    explanations: bytes | None,
    *,
    model_dir: Path,
    figure_html: Path,
    profile: Profile,
    timings: dict[str, float],
) -> StageSummary:
    """The model bundle with its history, predictions and explanations; the stage's summary and its page."""
    arrays, data_summary, classes = inputs.arrays, inputs.data_summary, inputs.classes
    info = ClassifierInfo(
        backbone=backbone,
        input_size=profile.model.input_size,
        classes=list(classes),
        head=plan.head,
        stage=plan.kind,
        task=plan.task,
        weights=start.weights,
        imagenet=start.imagenet,
        stain=data_summary["stages"][plan.arrays].get("stain"),
        weights_source=start.source,
    )
    save_classifier(model, info, model_dir)
    atomic_write_json(Path(model_dir) / HISTORY_FILE, fit.history)
    _save_predictions(Path(model_dir) / PREDICTIONS_FILE, scores.parts, arrays)
    if explanations is not None:
        atomic_write_bytes(Path(model_dir) / EXPLANATIONS_FILE, explanations)
    summary = StageSummary(
        stage=plan.kind,
        task=plan.task,
        backbone=backbone,
        weights=start.weights,
        imagenet=start.imagenet,
        carried_over=start.carried_over,
        fold_id=data_summary["fold_id"],
        repeat=data_summary["repeat"],
        fold=data_summary["fold"],
        train_source_images=data_summary["stages"][plan.arrays]["train_source_images"],
        train_images=len(arrays.x_train),
        eval_images=len(arrays.units_eval),
        epochs=len(fit.history.get("loss", [])),
        seconds=fit.seconds,
        images_per_second=fit.images_per_second,
        eval_accuracy=float(scores.eval_accuracy),
        eval_loss=float(scores.eval_loss),
        val_images=len(arrays.units_val),
        best_epoch=fit.best_epoch,
        val_loss=scores.val_loss,
        val_accuracy=scores.val_accuracy,
        class_weights={c: round(inputs.per_class[i], 4) for i, c in enumerate(classes)},
        batchnorm_calibration=fit.calibrated or {},
        timings=timings,
        weights_source=start.source,
        frozen_features=fit.frozen_features,
    )
    _write_report(figure_html, summary, fit.history, fit.warmup_epochs)
    return summary


def run_finetune_stage(
    stage: str,
    task: str,
    backbone: str,
    data_dir: Path,
    previous_dir: Path | None,
    model_dir: Path,
    figure_html: Path,
    profile: Profile,
) -> StageSummary:
    """Train `stage` doing `task` on augment's arrays in `data_dir`, from ImageNet (or random) weights or from the
    previous stage's model in `previous_dir`: build, fit, score, explain, save. Writes the model bundle into
    `model_dir` (with summary.json) and the stage's page into `figure_html`."""
    timings = {"process_start_to_stage": _seconds_since_process_start()}
    with _timed(timings, "import_tensorflow"):
        import keras

        plan = training_stage(stage, task)  # an impossible pair: one StageError before any data is read
    with ExitStack() as training:  # the strategy's scope holds the model's building and fitting
        with _timed(timings, "load_and_build"):
            inputs = _load(plan, data_dir, profile)
            if plan.from_imagenet == (previous_dir is not None):
                raise StageError(
                    f"{stage} {'starts from ImageNet and takes no' if plan.from_imagenet else 'needs the'} "
                    "previous stage's model"
                )
            weights = resolve_weights(
                profile.model.weights if plan.from_imagenet else "none", get_backbone(backbone), profile.storage
            )
            seed = profile.seed + sum(map(ord, stage + task + backbone))  # a stage's own seed, stable across runs
            strategy, devices = devices_for_training(profile.train.mixed_precision)
            log.info("%s %s %s: training on %s", stage, task, backbone, devices)
            training.enter_context(strategy.scope())  # variables mirrored over the GPUs when there are several
            model, start = _build(plan, backbone, weights, previous_dir, len(inputs.classes), profile, seed)
        fit = _fit(
            model,
            plan,
            inputs,
            profile,
            seed=seed,
            timings=timings,
            random_backbone=previous_dir is None and weights.keras_argument is None,
        )
    with _timed(timings, "predict"):
        scores = _score(model, plan, inputs, profile)
    with _timed(timings, "explain"):
        explanations = _explain(model, plan, backbone, inputs, scores, profile)
    with _timed(timings, "save_and_report"):  # the summary holds `timings` itself: it is written with this step's too
        summary = _save(
            model,
            plan=plan,
            backbone=backbone,
            inputs=inputs,
            start=start,
            fit=fit,
            scores=scores,
            explanations=explanations,
            model_dir=model_dir,
            figure_html=figure_html,
            profile=profile,
            timings=timings,
        )
    atomic_write_json(Path(model_dir) / "summary.json", asdict(summary))
    keras.backend.clear_session()
    return summary


def _seconds_since_process_start() -> float | None:
    """Interpreter start, KFP's executor and our imports before the stage begins."""
    try:
        return time.time() - psutil.Process().create_time()
    except psutil.Error:
        return None


def _loss_and_accuracy(probabilities: np.ndarray, y_true: np.ndarray, n_classes: int) -> tuple[float, float]:
    """Cross-entropy and accuracy of (units, classes) probabilities (scikit-learn; no second graph)."""
    from sklearn.metrics import accuracy_score, log_loss

    truth = y_true.astype(int)
    return float(log_loss(truth, probabilities, labels=list(range(n_classes)))), float(
        accuracy_score(truth, probabilities.argmax(axis=1))
    )


def run_finetune_task(
    stage: str,
    task: str,
    backbone: str,
    training_data: str,
    previous: str | None,
    model,
    metrics,
    curves,
    evaluation,
    profile: Profile,
) -> StageSummary:
    """The finetune components' one call: train the stage into KFP's artifacts (model, metrics,
    curves, and the small evaluation folder crossval and the report read)."""
    summary = run_finetune_stage(
        stage,
        task,
        backbone,
        data_dir=Path(training_data),
        previous_dir=Path(previous) if previous else None,
        model_dir=Path(model.path),
        figure_html=Path(curves.path),
        profile=profile,
    )
    model.metadata.update(summary.model_metadata())
    log_metrics(metrics, summary.metrics())
    export_evaluation(Path(model.path), Path(evaluation.path))
    evaluation.metadata.update(summary.model_metadata())
    return summary


def export_evaluation(model_dir: Path, evaluation_dir: Path) -> Path:
    """The small files crossval and the report read (no weights), so they never download models."""
    evaluation_dir = Path(evaluation_dir)
    evaluation_dir.mkdir(parents=True, exist_ok=True)
    for name in EVALUATION_FILES:
        shutil.copyfile(Path(model_dir) / name, evaluation_dir / name)
    if (Path(model_dir) / EXPLANATIONS_FILE).is_file():  # none where nothing was held out, or explain_examples=0
        shutil.copyfile(Path(model_dir) / EXPLANATIONS_FILE, evaluation_dir / EXPLANATIONS_FILE)
    return evaluation_dir


def _save_predictions(path: Path, scored: dict, arrays: StageArrays) -> None:
    """Per scored unit: probabilities (units, classes), class index and id, for the evaluation fold and
    (val_*) the inner validation split; the number of items (cells) behind each evaluation unit."""
    (probabilities, labels, units), (val_probabilities, val_labels, val_units) = scored["eval"], scored["val"]
    items = np.array([int((arrays.sources_eval == u).sum()) for u in units.tolist()], np.int32)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        probabilities=np.asarray(probabilities),
        labels=np.asarray(labels),
        groups=arrays.unit_groups_eval,
        sources=np.asarray(units),
        items=items,
        val_probabilities=np.asarray(val_probabilities),
        val_labels=np.asarray(val_labels),
        val_sources=np.asarray(val_units),
    )
    atomic_write_bytes(path, buffer.getvalue())


def _write_report(
    figure_html: Path, summary: StageSummary, history: dict[str, list[float]], warmup_epochs: int = 0
) -> None:
    """The stage's page in the KFP UI: which stage of which fold, its metrics and its curves."""
    stage = display_name(summary.stage)
    title = (
        f"{stage} ({summary.task}), {summary.backbone}, fold {summary.fold_id} "
        f"(repeat {summary.repeat}, fold {summary.fold})"
    )
    fig, axes = report.new_figure(1, 2, (9, 3.4))
    for ax, metric in zip(axes[0], ("loss", "accuracy")):
        for prefix, style, name in (("", "-o", "training"), ("val_", "--o", "inner validation")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=f"{name} {metric}")
        report.epoch_axis(ax, warmup_epochs)
        ax.set_ylabel(metric)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"{stage} ({summary.task}), {summary.backbone}, fold {summary.fold_id}: loss and accuracy per epoch")
    parts = [
        report.table(summary.metrics(), f"{stage} ({summary.task}), fold {summary.fold_id}"),
        report.png_img(report.figure_png(fig), f"loss and accuracy per epoch, {title}"),
    ]
    if not summary.imagenet:
        parts.insert(
            0,
            report.paragraph(
                "No ImageNet weights: this run started from random initialisation, "
                "so it is not the paper's stage 1 transfer from ImageNet."
            ),
        )
    atomic_write_text(figure_html, report.page(title, *parts))
