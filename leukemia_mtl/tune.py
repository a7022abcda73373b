"""The paper's sequential model-based optimisation of the training settings, nested inside the folds.

The paper tuned its hyperparameters by SMBO and reported cross-validated scores; a search scored on the
evaluation folds inflates the very numbers it reports. Here one search runs per (fold, backbone), on that
fold's training part only: `prepare_training_data(evaluation=False)` never opens an evaluation image, and
every trial is scored on the training part's inner validation split (the one early stopping reads), so the
fold's evaluation part stays an outer, untouched estimate of the searched procedure (nested cross-validation).

A trial is the fold's own training: the stages the objective needs (leukemia_mtl.stages, from ImageNet
through stage 3 and the classical arm), each by `run_finetune_stage`, the finetune tasks' entry point. Its
score is `evaluate.release_metric` on the inner split, averaged over the scored stages of `tune.arms` and
`tune.tasks`; each stage's own inner score is reported to Optuna as an intermediate value, so the median
pruner stops a trial that falls behind. Trial 0 is the profile's own settings: the search shows what it
gained over them on the same split. Optuna's TPE sampler is seeded: the same seeds give the same trials
and, TensorFlow being deterministic on CPU here, the same scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leukemia_mtl import report
from leukemia_mtl.config import Profile, get_profile
from leukemia_mtl.data.files import check_output, mark_output
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import atomic_write_json, atomic_write_text
from leukemia_mtl.models.catalog import BACKBONES
from leukemia_mtl.stages import ARM_NAMES, TRAINING_STAGES, TrainingStage

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
PAGE_FILE = "tuning.html"
# the settings the search sets, as the dotted keys `--set` and the pipeline's overrides take
SPACE = (
    "train.learning_rate",
    "train.batch_size",
    "model.dense_units",
    "model.dropout",
    "train.frozen_fraction",
    "augment.target_per_class",
    "train.stage1_epochs",
    "train.stage2_epochs",
)


class TuneError(LeukemiaMtlError):
    """A search that cannot be run honestly: no inner validation split to score trials on."""


@dataclass(frozen=True)
class FoldData:
    """What a search reads: the ingested images, segment's crops, the split and the fold (its training part)."""

    ingested: Path
    cells: Path
    split: dict
    fold_index: int
    cache: Path | None = None  # where the training part's arrays are kept between trials (default: the search's folder)

    @property
    def fold_id(self) -> str:
        return self.split["folds"][self.fold_index]["id"]


def profile_values(profile: Profile) -> dict:
    """The profile's own point in the search space (trial 0)."""
    kinds = {s.kind for s in trial_stages(profile)}
    untrained = {
        f"train.{kind}_epochs" for kind in ("stage1", "stage2") if kind not in kinds
    }  # the classical arm alone
    return {k: v for k, v in _profile_point(profile).items() if k not in untrained}


def _profile_point(profile: Profile) -> dict:
    train = profile.train
    return {
        "train.learning_rate": train.learning_rate,
        "train.batch_size": train.batch_size,
        "model.dense_units": profile.model.dense_units,
        "model.dropout": profile.model.dropout,
        "train.frozen_fraction": train.frozen_fraction,
        "augment.target_per_class": profile.augment.target_per_class,
        "train.stage1_epochs": train.epochs_of("stage1"),
        "train.stage2_epochs": train.epochs_of("stage2"),
    }


def search_space(profile: Profile) -> dict[str, dict]:
    """`tune`'s space for this profile, by dotted key: {"type": "double" | "int", "min", "max", "log"} or
    {"type": "categorical", "list"}. Every range and list also holds the profile's own value (trial 0), and the
    stage-1/2 epochs are searched only where a trial trains those stages (the multistage arm)."""
    cfg, own = profile.tune, _profile_point(profile)

    def numeric(kind, pair, key, log=False):
        return {"type": kind, "min": min(pair[0], own[key]), "max": max(pair[1], own[key]), "log": log}

    def categorical(values, key):
        return {"type": "categorical", "list": sorted({*values, own[key]})}

    space = {
        "train.learning_rate": numeric("double", cfg.learning_rate, "train.learning_rate", log=True),
        "train.batch_size": categorical(cfg.batch_sizes, "train.batch_size"),
        "model.dense_units": categorical(cfg.dense_units, "model.dense_units"),
        "model.dropout": numeric("double", cfg.dropout, "model.dropout"),
        "train.frozen_fraction": numeric("double", cfg.frozen_fraction, "train.frozen_fraction"),
        "augment.target_per_class": numeric("int", cfg.target_per_class, "augment.target_per_class"),
        "train.stage1_epochs": numeric("int", cfg.stage_epochs, "train.stage1_epochs"),
        "train.stage2_epochs": numeric("int", cfg.stage_epochs, "train.stage2_epochs"),
    }
    return {k: v for k, v in space.items() if k in profile_values(profile)}


def suggest(trial, profile: Profile) -> dict:
    """One point of the space, from Optuna's sampler."""
    point = {}
    for key, spec in search_space(profile).items():
        if spec["type"] == "categorical":
            point[key] = trial.suggest_categorical(key, spec["list"])
        elif spec["type"] == "int":
            point[key] = trial.suggest_int(key, int(spec["min"]), int(spec["max"]))
        else:
            point[key] = trial.suggest_float(key, float(spec["min"]), float(spec["max"]), log=spec["log"])
    return point


def objective_stages(profile: Profile, plan: tuple[TrainingStage, ...] = TRAINING_STAGES) -> tuple[TrainingStage, ...]:
    """The scored stages the objective averages: those of `tune.arms` doing `tune.tasks`, in plan order."""
    return tuple(s for s in plan if s.arm in profile.tune.arms and s.task in profile.tune.tasks)


def trial_stages(profile: Profile, plan: tuple[TrainingStage, ...] = TRAINING_STAGES) -> tuple[TrainingStage, ...]:
    """The stages a trial trains: the objective's stages and those they start from, in plan order."""
    by_key = {s.key: s for s in plan}
    wanted = set()
    for stage in objective_stages(profile, plan):
        key = stage.key
        while key:
            wanted.add(key)
            key = by_key[key].starts_from
    return tuple(s for s in plan if s.key in wanted)


def inner_score(model_dir: Path, metric: str) -> float:
    """`metric` of a trained stage on its inner validation split (predictions.npz's val_*)."""
    from leukemia_mtl.bundles import META_FILE, PREDICTIONS_FILE
    from leukemia_mtl.evaluate import fold_metrics

    classes = tuple(json.loads((model_dir / META_FILE).read_text())["classes"])
    with np.load(model_dir / PREDICTIONS_FILE, allow_pickle=False) as data:
        labels, probabilities = data["val_labels"].astype(int), data["val_probabilities"]
    if not len(labels):
        raise TuneError(f"{model_dir.name}: no inner validation predictions to score the trial on")
    value = fold_metrics(classes, labels, probabilities).get(metric)
    return float("nan") if value is None else float(value)


def fold_training_part(fold: FoldData, settings: Profile, work: Path) -> Path:
    """The fold's stage arrays without its evaluation part, built once per distinct data settings (of the space:
    the augmentation target) and kept beside the prepared images they came from."""
    from leukemia_mtl.train.data import prepare_training_data

    shaping = {k: v for k, v in settings.to_dict().items() if k in ("seed", "data", "preprocess", "augment")}
    shaping.update(
        input_size=settings.model.input_size,
        stage3_images=settings.train.stage3_images,
        validation_fraction=settings.train.validation_fraction,
        fold=fold.split["folds"][fold.fold_index],
    )
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]
    data_dir = (fold.cache or work / "data") / f"fold{fold.fold_index}-{digest}"
    if not (data_dir / "summary.json").is_file():  # written last: a folder without it is rebuilt
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        prepare_training_data(
            fold.ingested, fold.cells, fold.split, fold.fold_index, data_dir, settings, evaluation=False
        )
    built = json.loads((data_dir / "summary.json").read_text())["stages"]
    empty = sorted({s.arrays for s in trial_stages(settings) if not built[s.arrays]["validation_units"]})
    if empty:
        raise TuneError(
            f"fold {fold.fold_id}: the training part's {', '.join(empty)} images have no inner validation "
            "split to score trials on (train.validation_fraction is 0, or a class has a single training "
            "group): a search would have to score on the evaluation fold, which it never does. Give it more "
            "images per class, or fewer folds."
        )
    return data_dir


def run_trial(
    fold: FoldData, backbone: str, profile_name: str, base_overrides: dict, params: dict, work: Path, report_step=None
) -> dict:
    """One point of the space trained on the fold's training part and scored on its inner split. After each scored
    stage `report_step(step, value, last)` gets the mean over the scored stages so far (step: how many), a value
    comparable across trials at the same step, for Optuna's pruner (it may raise TrialPruned)."""
    from leukemia_mtl.train.stage import run_finetune_stage

    settings = get_profile(profile_name, {**base_overrides, **params})
    metric = settings.evaluate.release_metric
    started = time.perf_counter()
    data_dir = fold_training_part(fold, settings, work)
    trial_dir = work / "trial"
    shutil.rmtree(trial_dir, ignore_errors=True)
    models: dict[str, Path] = {}
    stages: dict[str, float] = {}
    objective_keys = [s.key for s in objective_stages(settings)]
    scored: list[float] = []
    try:
        for stage in trial_stages(settings):
            model_dir = trial_dir / stage.key
            run_finetune_stage(
                stage.kind,
                task=stage.task,
                backbone=backbone,
                data_dir=data_dir,
                previous_dir=models.get(stage.starts_from),
                model_dir=model_dir,
                figure_html=trial_dir / f"{stage.key}.html",
                profile=settings,
            )
            models[stage.key] = model_dir
            stages[stage.key] = inner_score(model_dir, metric)
            if stage.key not in objective_keys:
                continue
            if not np.isfinite(stages[stage.key]):
                raise TuneError(
                    f"fold {fold.fold_id}: {stage.key}'s {metric} on the inner validation split is undefined "
                    "(a class missing from the split?): the trial cannot be scored"
                )
            scored.append(stages[stage.key])
            if report_step is not None:
                report_step(len(scored), float(np.mean(scored)), len(scored) == len(objective_keys))
    finally:
        shutil.rmtree(trial_dir, ignore_errors=True)  # a trial's models are not kept: only its scores
    return {"objective": float(np.mean(scored)), "stages": stages, "seconds": time.perf_counter() - started}


def search(
    fold: FoldData, backbone: str, profile_name: str, base_overrides: dict, work: Path, trials: int | None = None
) -> dict:
    """`tune.trials` (or `trials`) trials of Optuna's TPE on one fold's training part; the study as a dict, also
    written to work/study.json with its page (work/tuning.html)."""
    import optuna

    profile = get_profile(profile_name, base_overrides)
    cfg = profile.tune
    n_trials = cfg.trials if trials is None else trials
    if n_trials < 1:
        raise TuneError(f"a search needs at least one trial; tune.trials is {n_trials}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our one error line
    seed = int(hashlib.sha256(f"{cfg.seed}/{profile.seed}/{fold.fold_index}".encode()).hexdigest()[:8], 16)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=max(1, cfg.startup_trials), n_warmup_steps=0)
        if cfg.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction="maximize", sampler=sampler, pruner=pruner, study_name=f"leukemia-mtl-{fold.fold_id}-{backbone}"
    )
    study.enqueue_trial(profile_values(profile))  # trial 0: the profile's own settings

    def objective(trial) -> float:
        params = suggest(trial, profile)
        log.warning(
            "trial %d of %d (fold %s, %s): %s",
            trial.number + 1,
            n_trials,
            fold.fold_id,
            backbone,
            json.dumps(params, sort_keys=True),
        )

        def report_step(step: int, value: float, last: bool) -> None:
            trial.report(value, step)
            if not last and trial.should_prune():  # after the last stage there is nothing left to save
                raise optuna.TrialPruned(f"{step} scored stage(s): {value:.3f}, below the median of earlier trials")

        started = time.perf_counter()
        try:
            result = run_trial(fold, backbone, profile_name, base_overrides, params, work, report_step)
        finally:  # a pruned trial's time counts too
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        trial.set_user_attr("stages", result["stages"])
        return result["objective"]

    study.optimize(objective, n_trials=n_trials, catch=())
    summary = study_summary(study, profile, fold, backbone, base_overrides)
    atomic_write_json(work / STUDY_FILE, summary)
    atomic_write_text(work / PAGE_FILE, study_page(summary))
    return summary


def study_summary(study, profile: Profile, fold: FoldData, backbone: str, base_overrides: dict) -> dict:
    """What the report and the pipeline read: every trial, the best, the profile's own (trial 0), importances."""
    import optuna

    trials = []
    for t in study.trials:
        trials.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "params": t.params,
                "value": t.value,
                "stages": t.user_attrs.get("stages", {}),
                "seconds": t.user_attrs.get("seconds"),
                "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            }
        )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    importance, why_not = None, ""
    varied = len({json.dumps(t.params, sort_keys=True) for t in complete})
    if varied >= 3 and len({t.value for t in complete}) < 2:
        why_not = "every completed trial scored the same: no variance for fANOVA to apportion"
    elif varied >= 3:
        importance = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=profile.tune.seed)
        )
    else:
        why_not = f"{varied} distinct completed trial(s); fANOVA importances need at least 3"
    arms = ", ".join(ARM_NAMES[a] for a in profile.tune.arms)
    return {
        "schema": "leukemia-mtl/tune/1",
        "fold_id": fold.fold_id,
        "fold_index": fold.fold_index,
        "backbone": backbone,
        "profile": profile.name,
        "base_overrides": base_overrides,
        "sampler": "TPE",
        "seed": profile.tune.seed,
        "pruner": "median" if profile.tune.prune else "none",
        "objective": f"mean {profile.evaluate.release_metric} on the fold's inner validation split over the scored "
        f"stages of {arms} ({', '.join(profile.tune.tasks)})",
        "nested": True,
        "evaluation_part_read": False,
        "trials": trials,
        "profile_trial": trials[0] if trials else None,
        "best": {"number": best.number, "value": best.value, "params": best.params} if best else None,
        "importance": importance,
        "importance_note": why_not,
        "best_overrides": {**base_overrides, **best.params} if best else dict(base_overrides),
        "seconds": round(sum(t["seconds"] or 0 for t in trials), 1),
    }


def history_figure(summary: dict) -> bytes:
    """Each trial's score, the best so far, and (where computed) how much each setting mattered."""
    with_importance = bool(summary.get("importance"))
    fig, axes = report.new_figure(1, 2 if with_importance else 1, (10 if with_importance else 6, 3.6))
    ax = axes[0][0]
    trials = summary["trials"]
    done = [t for t in trials if t["state"] == "complete"]
    pruned = [t for t in trials if t["state"] == "pruned"]
    ax.plot([t["number"] for t in done], [t["value"] for t in done], "o", label="trial")
    best, line = -np.inf, []
    for t in done:
        best = max(best, t["value"])
        line.append((t["number"], best))
    if line:
        ax.step(*zip(*line), where="post", label="best so far")
    if pruned:
        ax.plot(
            [t["number"] for t in pruned],
            [max(t["intermediate"].values(), default=0) for t in pruned],
            "x",
            color="grey",
            label="pruned (its mean so far)",
        )
    if summary.get("profile_trial") and summary["profile_trial"]["value"] is not None:
        ax.axhline(summary["profile_trial"]["value"], color="black", linestyle=":", label="profile's own settings")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("inner-validation score")
    ax.legend(fontsize=8)
    report.set_title(ax, f"fold {summary['fold_id']}, {summary['backbone']}: the search")
    if with_importance:
        names = list(summary["importance"])[::-1]
        axes[0][1].barh(names, [summary["importance"][n] for n in names])
        axes[0][1].set_xlabel("fANOVA importance")
        report.set_title(axes[0][1], "how much each setting mattered")
    return report.figure_png(fig)


def study_parts(summary: dict) -> list:
    """The search of one (fold, backbone) as page parts: the report's tuning section and tuning.html."""
    best, own = summary["best"], summary["profile_trial"]
    parts = [
        report.paragraph(
            f"Nested: every trial trained on fold {summary['fold_id']}'s training part and was scored on its inner "
            f"validation split ({summary['objective']}); the fold's evaluation images were never read, so the "
            "cross-validated scores stay an outer estimate. Sampler: Optuna's TPE (seed "
            f"{summary['seed']}), pruner: {summary['pruner']}. Trial 0 is the profile's own settings."
        )
    ]
    if best and own and own["value"] is not None:
        parts.append(
            report.paragraph(
                f"Best trial {best['number']}: {best['value']:.3f}; the profile's own settings "
                f"(trial 0): {own['value']:.3f}, on the same inner split."
            )
        )
    parts.append(
        report.png_img(history_figure(summary), f"the search of fold {summary['fold_id']}, {summary['backbone']}")
    )
    if best:
        own_params = own["params"] if own else {}
        parts.append(
            report.grid(
                ["setting", "best trial", "profile's own"],
                [[k, v, own_params.get(k)] for k, v in best["params"].items()],
                "the best trial's settings",
            )
        )
    if not summary.get("importance"):
        parts.append(report.paragraph(f"Importances not computed: {summary['importance_note']}."))
    rows = [
        [
            t["number"],
            t["state"],
            "" if t["value"] is None else round(t["value"], 4),
            t["seconds"],
            ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in t["params"].items()),
        ]
        for t in summary["trials"]
    ]
    parts.append(report.grid(["trial", "state", "score", "seconds", "settings"], rows, "every trial"))
    return parts


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def study_page(summary: dict) -> str:
    return report.page(
        f"Hyperparameter search, fold {summary['fold_id']}, {summary['backbone']}", *study_parts(summary)
    )


def run_tune_task(
    dataset, cells, split, fold: int, backbone: str, profile_name: str, overrides: str, study, page, metrics
) -> str:
    """The tune component's one call: the search of one (fold, backbone) into KFP's artifacts; returns the
    overrides its training tasks run with (the run's own, with the best trial's settings over them)."""
    from leukemia_mtl.artifacts import log_metrics
    from leukemia_mtl.config import task_settings

    task_settings(profile_name, overrides)  # one clear error for bad overrides, before anything is read
    base = json.loads(overrides or "{}")
    fold_data = FoldData(Path(dataset.path), Path(cells.path), json.loads(Path(split.path).read_text()), fold)
    work = Path(study.path)  # the artifact: study.json and tuning.html
    summary = search(fold_data, backbone, profile_name, base, work)
    shutil.rmtree(
        work / "data", ignore_errors=True
    )  # the training part's arrays, between trials; augment rebuilds them
    shutil.copyfile(work / PAGE_FILE, page.path)  # the page search wrote, for the KFP UI's HTML view
    study.metadata.update(
        {
            "fold": summary["fold_id"],
            "backbone": backbone,
            "trials": len(summary["trials"]),
            "best_trial": summary["best"]["number"] if summary["best"] else None,
            "nested": True,
        }
    )
    values = {
        "trials": len(summary["trials"]),
        "pruned": sum(t["state"] == "pruned" for t in summary["trials"]),
        "search_seconds": summary["seconds"],
    }
    if summary["best"]:
        values["best_inner_score"] = round(summary["best"]["value"], 4)
    if summary["profile_trial"] and summary["profile_trial"]["value"] is not None:
        values["profile_inner_score"] = round(summary["profile_trial"]["value"], 4)
    log_metrics(metrics, values)
    return json.dumps(summary["best_overrides"], sort_keys=True)


# what the preparation (ingest, ROI, U-Net, crops, split) depends on: a change elsewhere reuses it
_PREPARATION_SECTIONS = ("seed", "synth.", "data.", "preprocess.", "segment.", "split.")


def prepare(smears: str, cells: str, out: Path, profile_name: str, overrides: dict) -> tuple[Path, Path, dict]:
    """ingest -> ROI -> U-Net and crops -> split of a folder (or s3:// prefix, or 'synthetic') under out/prepared,
    as the pipeline's first tasks do; reused while the inputs and the settings it depends on are unchanged."""
    from leukemia_mtl.data.datasets import load_datasets
    from leukemia_mtl.data.ingest import ingest
    from leukemia_mtl.data.layout import DATA_DIR
    from leukemia_mtl.preprocess import run_preprocess_stage
    from leukemia_mtl.segment.stage import run_segment_stage
    from leukemia_mtl.train.data import make_folds

    profile = get_profile(profile_name, overrides)
    mark_output(out)  # its ROI images and crops: never read back as a data set's images, and a rerun may use it
    root = Path(out) / "prepared"
    key = {
        "smears": smears,
        "cells": cells,
        "profile": profile_name,
        "settings": {k: v for k, v in sorted(overrides.items()) if k.startswith(_PREPARATION_SECTIONS)},
    }
    done = root / "prepared.json"
    if done.is_file() and json.loads(done.read_text()) == key:
        log.warning("reusing %s (same inputs and data settings)", root)
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        ingest(smears, cells, root / "ingest", profile)
        run_preprocess_stage(root / "ingest", root / "roi", root / "roi.html", profile)
        run_segment_stage(
            root / "ingest", root / "roi", root / "segmenter", root / "cells", root / "segment.html", profile
        )
        split = make_folds(load_datasets(root / "ingest" / DATA_DIR, profile.data, check=False), profile)
        atomic_write_json(root / "split.json", split)
        atomic_write_json(done, key)  # last: a folder without it is prepared again
    return root / "ingest", root / "cells", json.loads((root / "split.json").read_text())


def tune_folder(
    smears: str,
    cells: str,
    out: Path,
    profile_name: str,
    overrides: dict,
    *,
    fold: int = 0,
    backbone: str | None = None,
    trials: int | None = None,
    one_trial: bool = False,
) -> dict:
    """`python -m leukemia_mtl tune`: a search on one fold of a folder, or (`one_trial`: Katib's trials) one trial at
    the settings `overrides` give."""
    profile = get_profile(profile_name, overrides)
    backbone = backbone or profile.model.backbones[0]
    # the arguments first, before a minute of ingest and ROI work
    if backbone not in BACKBONES:
        raise TuneError(f"--backbone {backbone}: unknown; choose one of {', '.join(BACKBONES)}")
    if not 0 <= fold < profile.split.folds:
        raise TuneError(
            f"--fold {fold}: the profile's split has folds 0 to {profile.split.folds - 1} "
            f"(split.folds {profile.split.folds})"
        )
    local_inputs = [
        Path(source)
        for source in (smears, cells)
        if source not in ("synthetic", "none") and not source.startswith("s3://")
    ]
    check_output("--output", Path(out), local_inputs, kind="folder", marks=True)
    mark_output(out)
    params = profile_values(profile) if one_trial else None
    ingested, cells_dir, split = prepare(smears, cells, out, profile_name, overrides)
    if not 0 <= fold < len(split["folds"]):
        raise TuneError(f"--fold {fold}: the split has folds 0 to {len(split['folds']) - 1}")
    fold_data = FoldData(ingested, cells_dir, split, fold, cache=ingested.parent / "arrays")
    work = Path(out) / f"fold{fold}-{backbone}"
    if params is not None:
        result = run_trial(fold_data, backbone, profile_name, overrides, params, work)
        result.update(params=params, fold_id=fold_data.fold_id, backbone=backbone, nested=True)
        atomic_write_json(work / "trial.json", result)
        return result
    summary = search(fold_data, backbone, profile_name, overrides, work, trials)
    atomic_write_json(work / "best_overrides.json", summary["best_overrides"])
    return summary
