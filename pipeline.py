"""The ALL screening pipeline: one DAG definition, run locally (kfp.local) or compiled for Kubeflow.

    python pipeline.py --compile [--profile paper] [--output FILE] [--image-registry R] [--image-tag T]
    python pipeline.py --submit --host URL [--experiment NAME] [--param KEY=VALUE] [--schedule CRON]
    python pipeline.py --run-local [--profile demo] [--smears PATH_OR_URI] [--cells PATH_OR_URI]
                       [--negative-class NAME] [--pixel-size UM] [--output-dir DIR] [--set KEY=VALUE]
                       [--runner subprocess|docker]

No science here: components/ adapts the library, this file wires the DAG and runners/ runs it:
ingest -> preprocess -> segment -> split -> for each (fold, backbone): [tune ->] augment -> the training stages of
leukemia_mtl/stages.py (stage 1 -> stage 2 -> stage 3 detection and FAB; the classical baseline's detection
and FAB from ImageNet); split -> baseline (majority class, colour histogram) -> crossval -> ttest,
release -> report.
"""

import json
import sys
from inspect import Parameter, Signature
from pathlib import Path
from typing import Callable, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import HTML, Artifact, Dataset, Model

from components.augment import augment
from components.baseline import baseline
from components.crossval import crossval
from components.finetune import finetune_from_imagenet, finetune_from_previous
from components.ingest import ingest
from components.preprocess import preprocess
from components.release import release
from components.report import report
from components.segment import segment
from components.split import split
from components.ttest import ttest
from components.tune import tune
from leukemia_mtl.config import Profile, get_profile
from leukemia_mtl.stages import (TRAINING_STAGES, StageError, TrainingStage, check_plan, released_stages, scored_stages,
                                 training_stage)
from runners import local as local_runner
from runners.placement import Placement, cluster_placement, local_placement

PIPELINE_NAME = "leukemia-mtl"
DESCRIPTION = "Acute lymphoblastic leukemia detection and FAB classification by multistage transfer learning"
DEFAULT_COMPILED = Path("build/pipeline.yaml")
STOPS = ("preprocess", "segment", "report")

_BASE_OUTPUTS = [("dataset", Dataset), ("roi", Dataset), ("roi_overlay", HTML)]
_SEGMENT_OUTPUTS = [("segmenter", Model), ("cells", Dataset), ("segmentation", HTML)]
_REPORT_OUTPUTS = [("split", Artifact), ("crossval", Artifact), ("ttest", Artifact), ("release", Model),
                   ("release_manifest", Artifact), ("report", HTML), ("summary", Artifact)]
OUTPUTS = {
    "preprocess": NamedTuple("Outputs", _BASE_OUTPUTS),
    "segment": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS),
    "report": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS + _REPORT_OUTPUTS),
}


def _check_fan_in(plan: tuple[TrainingStage, ...]) -> None:
    """The plan fits the components: the stage runner trains each stage as the plan says (it looks a stage up
    by its kind and task), and every stage a component collects is in the plan, and the other way round."""
    for stage in plan:
        trained = training_stage(stage.kind, stage.task)
        if (stage.head, stage.arrays, stage.dense) != (trained.head, trained.arrays, trained.dense):
            raise StageError(f"training stage {stage.key!r}: the stage runner trains {stage.kind} {stage.task} with a "
                             f"{trained.head} head on {trained.arrays} arrays, dense layers {trained.dense}; the plan says "
                             f"{stage.head}, {stage.arrays}, {stage.dense}")
    known = {s.key for s in TRAINING_STAGES} | {s.key for s in plan}
    wanted = {crossval: scored_stages(plan), release: released_stages(plan), report: plan}
    for component, stages in wanted.items():
        keys, inputs = [s.key for s in stages], component.component_spec.inputs
        missing = [key for key in keys if key not in inputs]
        if missing:
            raise StageError(f"the {component.name} component has no input for the training stage(s) {missing}")
        unfed = sorted(name for name in inputs if name in known and name not in keys)
        if unfed:
            raise StageError(f"the {component.name} component takes the training stage(s) {unfed}, which the plan does not "
                             "train (or score)")


# What the KFP UI shows beside each parameter (kfp reads the pipeline's `Args:`), in the pipeline's order. data_version
# is the local runner's cache key, the data's fingerprint: ingest is never cached on a cluster, so it is not offered there.
PARAMETER_DESCRIPTIONS = {
    "smears": "Smear images (multi-cell; ALL-IDB1's layout or one folder per class): 'synthetic' for generated ones, "
              "s3://bucket/prefix in the object storage the tasks reach, or a folder the tasks can read.",
    "cells": "Single-cell images (ALL-IDB2's layout or one folder per class): 'synthetic', s3://bucket/prefix, a "
             "folder, or 'none' for smears alone.",
    "profile": "The settings every task starts from: demo (small: minutes on a laptop), workstation (a few hundred "
               "real images from any lab) or paper (the paper's sizes).",
    "overrides": 'A JSON object of dotted settings every task applies over the profile, e.g. {"split.folds": 3}.',
    "data_version": "Internal: the cache key pipeline.py --run-local fills in with the data's fingerprint; leave it "
                    "empty.",
    "backbones": "The ImageNet backbones trained and compared in every fold: any of InceptionV3, Xception, "
                 "InceptionResNetV2.",
}


def _task_adder(place: Placement) -> Callable:
    """add(component, kind, ...): the one way a task joins the DAG: created from its inputs, shown in the UI by
    `display` (else the component's name), cached as `caching` says (else kfp's default), and placed as a `kind`
    task (runners/placement.py: resources, image, GPU, object storage's secret)."""

    def add(component, kind: str, *, display: str = "", gpu: bool = False, storage: bool = False,
            caching: bool | None = None, **inputs):
        task = component(**inputs)
        task.set_display_name(display or component.name)
        if caching is not None:
            task.set_caching_options(enable_caching=caching)
        place(task, kind, gpu=gpu, storage=storage)
        return task

    return add


def _train_folds(add: Callable, plan: tuple[TrainingStage, ...], settings: Profile, *, folds, dataset, cells,
                 config: dict) -> tuple[dict, list]:
    """One loop iteration per (fold, backbone): [tune ->] augment -> the plan's training stages. Returns the stages'
    tasks by key (their outputs are collected over the iterations) and the tune tasks."""
    searches = []
    with dsl.ParallelFor(items=folds.outputs["Output"], parallelism=settings.train.parallel_runs or None) as run:
        fold_config = config
        if settings.tune.trials:  # the search on this fold's training part; its best settings train this fold
            searched = add(tune, "train", gpu=True, storage=True,  # its trials train as the stages do
                           dataset=dataset, cells=cells, split=folds.outputs["split"], fold=run.fold, backbone=run.backbone,
                           **config)
            searches.append(searched)
            fold_config = dict(profile=config["profile"], overrides=searched.outputs["Output"])
        fold_data = add(augment, "augment", dataset=dataset, cells=cells, split=folds.outputs["split"], fold=run.fold,
                        **fold_config)
        tasks = {}
        for stage in plan:
            common = dict(training_data=fold_data.outputs["training_data"], backbone=run.backbone, stage=stage.kind,
                          task=stage.task, **fold_config)
            if not stage.from_imagenet:
                common = dict(previous=tasks[stage.starts_from].outputs["model"], **common)
            tasks[stage.key] = add(finetune_from_imagenet if stage.from_imagenet else finetune_from_previous, "train",
                                   display=stage.display, gpu=True, storage=stage.from_imagenet,  # ImageNet weights: s3?
                                   **common)
    return tasks, searches


def _pipeline_function(wire: Callable, defaults: dict, returns) -> Callable:
    """The function kfp reads as the pipeline: its parameters are `defaults`' keys, in order, typed by their
    defaults and described by PARAMETER_DESCRIPTIONS; kfp calls it once to wire the DAG. One builder for the
    cluster's DAG and the local runner's, which alone has data_version."""
    names = list(defaults)

    def leukemia_pipeline(*values):
        return wire(**dict(zip(names, values)))

    leukemia_pipeline.__signature__ = Signature(
        [Parameter(name, Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value))
         for name, value in defaults.items()], return_annotation=returns)
    args = "".join(f"    {name}: {PARAMETER_DESCRIPTIONS[name]}\n" for name in names)
    leukemia_pipeline.__doc__ = f"Screen blood smears for leukemia and type it by FAB.\n\nArgs:\n{args}"
    return leukemia_pipeline


def build_pipeline(settings: Profile | None = None, *, profile: str = "demo", cache_ingest: bool = False,
                   until: str = "report", cluster: bool = False, compile_overrides: dict | None = None,
                   code_version: str = "", run_overrides: dict | None = None,
                   plan: tuple[TrainingStage, ...] = TRAINING_STAGES, local_images=None):
    """The DAG. Defaults (profile, backbones, overrides) come from `settings`, resolved once by the
    caller (else from `profile` with the overrides); `until` cuts it short; `plan` is checked first.

    `cluster` adds what only a Kubernetes cluster reads (images, GPUs, node selector and
    tolerations, resources, retries, the MinIO secret), from the profile's `image` and `cluster`
    settings with `compile_overrides` applied. `cache_ingest` may be on only when `data_version`
    tracks the data's content (the local runner; only its DAG has that parameter). `code_version`
    (the local runner) goes into every task's environment, which kfp.local's cache key includes: a
    task's inputs name the profile, not its settings, and the library's code is not part of the
    component's source.
    """
    if until not in STOPS:
        raise ValueError(f"until must be one of {STOPS}, got {until!r}")
    if cluster and cache_ingest:
        raise ValueError("cache_ingest needs data_version, which only the local runner fills in")
    check_plan(plan)
    _check_fan_in(plan)
    if settings is None:  # run_overrides (--set) checked here
        settings = get_profile(profile, {**(compile_overrides or {}), **(run_overrides or {})})
    add = _task_adder(cluster_placement(settings) if cluster else local_placement(code_version=code_version, images=local_images))

    def wire(smears, cells, profile, overrides, backbones, data_version: str = ""):
        """The tasks and how they connect; the pipeline function's parameters are what a run is offered."""
        config = dict(profile=profile, overrides=overrides)
        ingested = add(ingest, "light", storage=True, caching=cache_ingest, smears=smears, cells=cells,
                       data_version=data_version, **config)
        dataset = ingested.outputs["dataset"]
        roi = add(preprocess, "light", dataset=dataset, **config)
        outputs = [dataset, roi.outputs["roi"], roi.outputs["overlay"]]
        if until == "preprocess":
            return OUTPUTS[until](*outputs)
        segmented = add(segment, "segment", gpu=True, dataset=dataset, roi=roi.outputs["roi"], **config)
        outputs += [segmented.outputs["model"], segmented.outputs["cells"], segmented.outputs["figure"]]
        if until == "segment":
            return OUTPUTS[until](*outputs)

        folds = add(split, "light", dataset=dataset, backbones=backbones, **config)
        tasks, searches = _train_folds(add, plan, settings, folds=folds, dataset=dataset, cells=segmented.outputs["cells"],
                                       config=config)

        def collected(output: str, stages) -> dict:
            """Fan-in over every (fold, backbone): one list per training stage."""
            return {stage.key: dsl.Collected(tasks[stage.key].outputs[output]) for stage in stages}

        trivial = add(baseline, "light", dataset=dataset, split=folds.outputs["split"], **config)
        scored = add(crossval, "light", baselines=trivial.outputs["predictions"],
                     **collected("evaluation", scored_stages(plan)), **config)
        compared = add(ttest, "light", crossval=scored.outputs["results"], **config)
        released = add(release, "light", storage=True, caching=False,  # it publishes outside the pipeline
                       crossval=scored.outputs["results"], data_summary=ingested.outputs["summary"],
                       segmenter=segmented.outputs["model"], **collected("model", released_stages(plan)), **config)
        reported = add(
            report, "light",
            data_summary=ingested.outputs["summary"], split=folds.outputs["split"], roi_metrics=roi.outputs["metrics"],
            roi_overlay=roi.outputs["overlay"], segment_metrics=segmented.outputs["metrics"], segmentation=segmented.outputs["figure"],
            crossval=scored.outputs["results"], ttest=compared.outputs["results"], release_manifest=released.outputs["manifest"],
            **collected("evaluation", plan), **config,
            **({"tuning": dsl.Collected(searches[0].outputs["study"])} if searches else {}),
        )
        outputs += [folds.outputs["split"], scored.outputs["results"], compared.outputs["results"], released.outputs["model"],
                    released.outputs["manifest"], reported.outputs["html"], reported.outputs["summary"]]
        return OUTPUTS[until](*outputs)

    # run_overrides (--set) become the `overrides` parameter's default: applied by every task at run time, and shown
    # in the KFP UI where a person can change them
    defaults = {"smears": "synthetic", "cells": "synthetic", "profile": settings.name,
                "overrides": json.dumps(run_overrides or {}, sort_keys=True), "data_version": "",
                "backbones": list(settings.model.backbones)}
    if cluster:
        del defaults["data_version"]
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(_pipeline_function(wire, defaults, OUTPUTS[until]))


def compile_pipeline(output: Path, profile: str = "paper", compile_overrides: dict | None = None,
                     run_overrides: dict | None = None) -> Path:
    """The DAG for a cluster as KFP's YAML: images, resources and placement from the profile."""
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(profile=profile, cluster=True, compile_overrides=compile_overrides,
                                               run_overrides=run_overrides),
                                package_path=str(output))
    return output


def run_local(profile: str, smears: str, cells: str, output_dir: Path, overrides: dict, cache: bool = True,
              until: str = "report", runner: str = "subprocess", compile_overrides: dict | None = None) -> dict:
    """This DAG run here (runners/local.py), each task in a subprocess or in its own container (`runner`);
    returns {output: {path, metadata}}. `compile_overrides` name the images the docker runner uses."""
    settings = get_profile(profile, {**(compile_overrides or {}), **overrides})  # once: a bad profile fails here
    return local_runner.run_local(build_pipeline, profile=profile, settings=settings, overrides=overrides, smears=smears,
                                  cells=cells, output_dir=output_dir, cache=cache, until=until, runner=runner)


def main(argv: list[str] | None = None) -> int:
    """`python pipeline.py --compile|--run-local|--submit ...`: the command line is runners/cli.py's."""
    from runners import cli  # here, not at the top: the DAG needs no command line

    return cli.main(argv, sys.modules[__name__])


if __name__ == "__main__":
    raise SystemExit(main())
