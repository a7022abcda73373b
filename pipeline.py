"""The ALL screening pipeline's DAG: the pipeline function kfp compiles or kfp.local runs (`python pipeline.py
--help`: runners/cli.py). No science here: components/ adapts the library, runners/ run and place the tasks.
"""

import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

from kfp import dsl
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
from leukemia_mtl.stages import (
    TRAINING_STAGES,
    TrainingStage,
    check_fan_in,
    check_plan,
    released_stages,
    scored_stages,
)
from runners import local as local_runner
from runners import submit as submitter
from runners.dag import pipeline_function, task_adder
from runners.placement import cluster_placement, local_placement

PIPELINE_NAME = "leukemia-mtl"
DESCRIPTION = "Acute lymphoblastic leukemia detection and FAB classification by multistage transfer learning"
DEFAULT_COMPILED = Path("build/pipeline.yaml")
STOPS = ("preprocess", "segment", "report")

_BASE_OUTPUTS = [("dataset", Dataset), ("roi", Dataset), ("roi_overlay", HTML)]
_SEGMENT_OUTPUTS = [("segmenter", Model), ("cells", Dataset), ("segmentation", HTML)]
_REPORT_OUTPUTS = [
    ("split", Artifact),
    ("crossval", Artifact),
    ("ttest", Artifact),
    ("release", Model),
    ("release_manifest", Artifact),
    ("report", HTML),
    ("summary", Artifact),
]
OUTPUTS = {
    "preprocess": NamedTuple("Outputs", _BASE_OUTPUTS),
    "segment": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS),
    "report": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS + _REPORT_OUTPUTS),
}


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


def _train_folds(
    add: Callable, plan: tuple[TrainingStage, ...], settings: Profile, *, folds, dataset, cells, config: dict
) -> tuple[dict, list]:
    """One loop iteration per (fold, backbone): [tune ->] augment -> the plan's training stages. Returns the stages'
    tasks by key (their outputs are collected over the iterations) and the tune tasks."""
    searches = []
    with dsl.ParallelFor(items=folds.outputs["Output"], parallelism=settings.train.parallel_runs or None) as run:
        fold_config = config
        if settings.tune.trials:  # the search on this fold's training part; its best settings train this fold
            searched = add(
                tune,
                "train",
                gpu=True,
                storage=True,  # its trials train as the stages do
                dataset=dataset,
                cells=cells,
                split=folds.outputs["split"],
                fold=run.fold,
                backbone=run.backbone,
                **config,
            )
            searches.append(searched)
            fold_config = dict(profile=config["profile"], overrides=searched.outputs["Output"])
        fold_data = add(
            augment, "augment", dataset=dataset, cells=cells, split=folds.outputs["split"], fold=run.fold, **fold_config
        )
        tasks = {}
        for stage in plan:
            common = dict(
                training_data=fold_data.outputs["training_data"],
                backbone=run.backbone,
                stage=stage.kind,
                task=stage.task,
                **fold_config,
            )
            if not stage.from_imagenet:
                common = dict(previous=tasks[stage.starts_from].outputs["model"], **common)
            tasks[stage.key] = add(
                finetune_from_imagenet if stage.from_imagenet else finetune_from_previous,
                "train",
                display=stage.display,
                gpu=True,
                storage=stage.from_imagenet,  # ImageNet weights: s3?
                **common,
            )
    return tasks, searches


def build_pipeline(
    settings: Profile | None = None,
    *,
    profile: str = "demo",
    cache_ingest: bool = False,
    until: str = "report",
    cluster: bool = False,
    compile_overrides: dict | None = None,
    code_version: str = "",
    run_overrides: dict | None = None,
    plan: tuple[TrainingStage, ...] = TRAINING_STAGES,
    local_images=None,
):
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
    check_fan_in(plan, {crossval: scored_stages(plan), release: released_stages(plan), report: plan})
    if settings is None:  # run_overrides (--set) checked here
        settings = get_profile(profile, {**(compile_overrides or {}), **(run_overrides or {})})
    add = task_adder(
        cluster_placement(settings) if cluster else local_placement(code_version=code_version, images=local_images)
    )

    def wire(smears, cells, profile, overrides, backbones, data_version: str = ""):
        """The tasks and how they connect; the pipeline function's parameters are what a run is offered."""
        config = dict(profile=profile, overrides=overrides)
        ingested = add(
            ingest,
            "light",
            storage=True,
            caching=cache_ingest,
            smears=smears,
            cells=cells,
            data_version=data_version,
            **config,
        )
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
        tasks, searches = _train_folds(
            add, plan, settings, folds=folds, dataset=dataset, cells=segmented.outputs["cells"], config=config
        )

        def collected(output: str, stages) -> dict:
            """Fan-in over every (fold, backbone): one list per training stage."""
            return {stage.key: dsl.Collected(tasks[stage.key].outputs[output]) for stage in stages}

        trivial = add(baseline, "light", dataset=dataset, split=folds.outputs["split"], **config)
        scored = add(
            crossval,
            "light",
            baselines=trivial.outputs["predictions"],
            **collected("evaluation", scored_stages(plan)),
            **config,
        )
        compared = add(ttest, "light", crossval=scored.outputs["results"], **config)
        released = add(
            release,
            "light",
            storage=True,
            caching=False,  # it publishes outside the pipeline
            crossval=scored.outputs["results"],
            data_summary=ingested.outputs["summary"],
            segmenter=segmented.outputs["model"],
            **collected("model", released_stages(plan)),
            **config,
        )
        reported = add(
            report,
            "light",
            data_summary=ingested.outputs["summary"],
            split=folds.outputs["split"],
            roi_metrics=roi.outputs["metrics"],
            roi_overlay=roi.outputs["overlay"],
            segment_metrics=segmented.outputs["metrics"],
            segmentation=segmented.outputs["figure"],
            crossval=scored.outputs["results"],
            ttest=compared.outputs["results"],
            release_manifest=released.outputs["manifest"],
            **collected("evaluation", plan),
            **config,
            **({"tuning": dsl.Collected(searches[0].outputs["study"])} if searches else {}),
        )
        outputs += [
            folds.outputs["split"],
            scored.outputs["results"],
            compared.outputs["results"],
            released.outputs["model"],
            released.outputs["manifest"],
            reported.outputs["html"],
            reported.outputs["summary"],
        ]
        return OUTPUTS[until](*outputs)

    # run_overrides (--set) become the `overrides` parameter's default: applied by every task at run time, and shown
    # in the KFP UI where a person can change them
    defaults = {
        "smears": "synthetic",
        "cells": "synthetic",
        "profile": settings.name,
        "overrides": json.dumps(run_overrides or {}, sort_keys=True),
        "data_version": "",
        "backbones": list(settings.model.backbones),
    }
    if cluster:
        del defaults["data_version"]
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(
        pipeline_function(wire, defaults, OUTPUTS[until], PARAMETER_DESCRIPTIONS)
    )


# The two entry points, bound to this DAG (the runners take its builder): compile_pipeline(output, profile="paper",
# compile_overrides=None, run_overrides=None) -> the YAML's path; run_local(profile=, smears=, cells=, output_dir=,
# overrides=, cache=, until=, runner=, compile_overrides=) -> {output: {path, metadata}}
compile_pipeline = partial(submitter.compile_pipeline, build_pipeline)
run_local = partial(local_runner.run_local, build_pipeline)


def main(argv: list[str] | None = None) -> int:
    """`python pipeline.py --compile|--run-local|--submit ...`: the command line is runners/cli.py's."""
    from runners import cli  # here, not at the top: the DAG needs no command line

    return cli.main(argv, sys.modules[__name__])


if __name__ == "__main__":
    raise SystemExit(main())
