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

import argparse
import json
import os
import sys
import time
from inspect import signature
from pathlib import Path
from typing import NamedTuple

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
from leukemia_mtl.config import ConfigError, Profile, get_profile, negative_class_overrides, parse_overrides, pixel_size_overrides
from leukemia_mtl.data.files import path_argument
from leukemia_mtl.errors import DatasetError, LeukemiaMtlError, printable
from leukemia_mtl.stages import (TRAINING_STAGES, StageError, TrainingStage, check_plan, released_stages, scored_stages,
                                 training_stage)
from runners import local as local_runner
from runners import submit as submitter
from runners.manifests import images_for
from runners.placement import cluster_placement, local_placement
from runners.submit import redact_url
from runners.summary import describe_run

PIPELINE_NAME = "leukemia-mtl"
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
    # run_overrides (--set) become the `overrides` parameter's default: checked here, applied by every task
    # at run time, and shown in the KFP UI where a person can change them
    if settings is None:
        settings = get_profile(profile, {**(compile_overrides or {}), **(run_overrides or {})})
    default_overrides = json.dumps(run_overrides or {}, sort_keys=True)
    place = cluster_placement(settings) if cluster else local_placement(code_version, local_images)

    def wire(smears, cells, profile, overrides, backbones, data_version: str = ""):
        """The tasks and how they connect; the signatures below are what a run is offered."""
        config = dict(profile=profile, overrides=overrides)
        ingested = ingest(smears=smears, cells=cells, data_version=data_version, **config)
        ingested.set_display_name("ingest")
        ingested.set_caching_options(enable_caching=cache_ingest)
        place(ingested, "light", storage=True)
        roi = preprocess(dataset=ingested.outputs["dataset"], **config)
        roi.set_display_name("preprocess")
        place(roi, "light")
        outputs = [ingested.outputs["dataset"], roi.outputs["roi"], roi.outputs["overlay"]]
        if until == "preprocess":
            return OUTPUTS[until](*outputs)
        segmented = segment(dataset=ingested.outputs["dataset"], roi=roi.outputs["roi"], **config)
        segmented.set_display_name("segment")
        place(segmented, "segment", gpu=True)
        outputs += [segmented.outputs["model"], segmented.outputs["cells"], segmented.outputs["figure"]]
        if until == "segment":
            return OUTPUTS[until](*outputs)

        folds = split(dataset=ingested.outputs["dataset"], backbones=backbones, **config)
        folds.set_display_name("split")
        place(folds, "light")
        parallelism = settings.train.parallel_runs or None
        searches = []
        with dsl.ParallelFor(items=folds.outputs["Output"], parallelism=parallelism) as run:  # one per (fold, backbone)
            fold_config = config
            if settings.tune.trials:  # the search on this fold's training part; its best settings train this fold
                searched = tune(dataset=ingested.outputs["dataset"], cells=segmented.outputs["cells"],
                                split=folds.outputs["split"], fold=run.fold, backbone=run.backbone, **config)
                searched.set_display_name("tune")
                place(searched, "train", gpu=True, storage=True)  # its trials train as the stages do
                searches.append(searched)
                fold_config = dict(profile=profile, overrides=searched.outputs["Output"])
            fold_data = augment(dataset=ingested.outputs["dataset"], cells=segmented.outputs["cells"],
                                split=folds.outputs["split"], fold=run.fold, **fold_config)
            fold_data.set_display_name("augment")
            place(fold_data, "augment")
            tasks = {}
            for stage in plan:
                common = dict(training_data=fold_data.outputs["training_data"], backbone=run.backbone, stage=stage.kind,
                              task=stage.task, **fold_config)
                if stage.from_imagenet:
                    trained = finetune_from_imagenet(**common)
                else:
                    trained = finetune_from_previous(previous=tasks[stage.starts_from].outputs["model"], **common)
                trained.set_display_name(stage.display)
                place(trained, "train", gpu=True, storage=stage.from_imagenet)  # ImageNet weights may come from s3
                tasks[stage.key] = trained

        def collected(output: str, stages) -> dict:
            """Fan-in over every (fold, backbone): one list per training stage."""
            return {stage.key: dsl.Collected(tasks[stage.key].outputs[output]) for stage in stages}

        trivial = baseline(dataset=ingested.outputs["dataset"], split=folds.outputs["split"], **config)
        trivial.set_display_name("baseline")
        place(trivial, "light")
        scored = crossval(baselines=trivial.outputs["predictions"], **collected("evaluation", scored_stages(plan)), **config)
        scored.set_display_name("crossval")
        place(scored, "light")
        compared = ttest(crossval=scored.outputs["results"], **config)
        compared.set_display_name("ttest")
        place(compared, "light")
        released = release(crossval=scored.outputs["results"], data_summary=ingested.outputs["summary"],
                           segmenter=segmented.outputs["model"],
                           **collected("model", released_stages(plan)), **config)
        released.set_display_name("release")
        released.set_caching_options(enable_caching=False)  # it publishes outside the pipeline
        place(released, "light", storage=True)
        reported = report(
            data_summary=ingested.outputs["summary"], split=folds.outputs["split"], roi_metrics=roi.outputs["metrics"],
            roi_overlay=roi.outputs["overlay"], segment_metrics=segmented.outputs["metrics"], segmentation=segmented.outputs["figure"],
            crossval=scored.outputs["results"], ttest=compared.outputs["results"], release_manifest=released.outputs["manifest"],
            **collected("evaluation", plan), **config,
            **({"tuning": dsl.Collected(searches[0].outputs["study"])} if searches else {}),
        )
        reported.set_display_name("report")
        place(reported, "light")
        outputs += [folds.outputs["split"], scored.outputs["results"], compared.outputs["results"], released.outputs["model"],
                    released.outputs["manifest"], reported.outputs["html"], reported.outputs["summary"]]
        return OUTPUTS[until](*outputs)

    # What the KFP UI shows beside each parameter (kfp reads the pipeline's `Args:`). data_version is the local
    # runner's cache key, the data's fingerprint: ingest is never cached on a cluster, so it is not offered there.
    descriptions = dict(
        smears="Smear images (multi-cell; ALL-IDB1's layout or one folder per class): 'synthetic' for generated ones, "
               "s3://bucket/prefix in the object storage the tasks reach, or a folder the tasks can read.",
        cells="Single-cell images (ALL-IDB2's layout or one folder per class): 'synthetic', s3://bucket/prefix, a "
              "folder, or 'none' for smears alone.",
        profile="The settings every task starts from: demo (small: minutes on a laptop), workstation (a few hundred "
                "real images from any lab) or paper (the paper's sizes).",
        overrides='A JSON object of dotted settings every task applies over the profile, e.g. {"split.folds": 3}.',
        data_version="Internal: the cache key pipeline.py --run-local fills in with the data's fingerprint; leave it "
                     "empty.",
        backbones="The ImageNet backbones trained and compared in every fold: any of InceptionV3, Xception, "
                  "InceptionResNetV2.",
    )
    if cluster:
        def leukemia_pipeline(smears: str = "synthetic", cells: str = "synthetic", profile: str = settings.name,
                              overrides: str = default_overrides,
                              backbones: list = list(settings.model.backbones)) -> OUTPUTS[until]:
            return wire(smears, cells, profile, overrides, backbones)
    else:
        def leukemia_pipeline(smears: str = "synthetic", cells: str = "synthetic", profile: str = settings.name,
                              overrides: str = default_overrides, data_version: str = "",
                              backbones: list = list(settings.model.backbones)) -> OUTPUTS[until]:
            return wire(smears, cells, profile, overrides, backbones, data_version)
    args = "".join(f"    {name}: {descriptions[name]}\n" for name in signature(leukemia_pipeline).parameters)
    leukemia_pipeline.__doc__ = f"Screen blood smears for leukemia and type it by FAB.\n\nArgs:\n{args}"
    return dsl.pipeline(name=PIPELINE_NAME, description="Acute lymphoblastic leukemia detection and FAB classification "
                                                        "by multistage transfer learning")(leukemia_pipeline)


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
    return local_runner.run_local(build_pipeline, profile, settings, overrides, smears, cells, output_dir, cache, until,
                                  runner)


def submit(host: str | None, profile: str, compile_overrides: dict, params: dict, experiment: str,
           schedule: str | None = None, run_name: str | None = None, enable_caching: bool | None = None) -> str:
    """This DAG compiled and submitted (runners/submit.py); returns the run's or recurring run's id. The run's
    overrides shape the DAG where they must: with tune.trials above 0 it has the tune tasks."""
    given = params.get("overrides") or {}
    given = json.loads(given) if isinstance(given, str) else given
    shaping = {k: v for k, v in given.items() if k.startswith("tune.")} if isinstance(given, dict) else {}
    # the compiled DAG's own parameters (the local runner's data_version is not one)
    accepted = list(build_pipeline(profile=profile, cluster=True, compile_overrides=compile_overrides,
                                   run_overrides=shaping).component_spec.inputs)
    return submitter.submit(accepted, lambda path: compile_pipeline(path, profile, compile_overrides, shaping), host,
                            profile, params, experiment, schedule, run_name, PIPELINE_NAME, enable_caching)


def _compile_overrides(args) -> dict:
    """Cluster settings given on the command line, as profile overrides."""
    overrides = {}
    if args.image_registry or args.image_tag:  # checked as Docker would, before it is written into a YAML
        images = images_for(args.image_registry, args.image_tag)
        if args.image_registry:
            overrides["image.registry"] = images.registry
        if args.image_tag:
            overrides["image.tag"] = images.tag
    if args.gpu_node_label is not None:
        overrides["cluster.gpu_node_label"] = "" if args.gpu_node_label == "none" else args.gpu_node_label
    if args.gpu_toleration:
        overrides["cluster.gpu_tolerations"] = [t for t in args.gpu_toleration if t != "none"]
    if args.minio_secret:
        overrides["cluster.minio_secret"] = args.minio_secret
    return overrides


def _setting_overrides(args) -> dict:
    """The run's settings from the command line, every mode alike: --set, then --negative-class and --pixel-size."""
    overrides = parse_overrides(args.overrides)
    if args.negative_class:
        overrides.update(negative_class_overrides(args.negative_class))
    if args.pixel_size:
        overrides.update(pixel_size_overrides(args.pixel_size))
    return overrides


# which mode each option means something in; anything else given is refused, never dropped
_EVERY_MODE = {"profile", "overrides", "negative_class", "pixel_size"}
_IMAGES = {"image_registry", "image_tag"}
_CLUSTER = _IMAGES | {"gpu_node_label", "gpu_toleration", "minio_secret"}
MODE_OPTIONS = {
    "compile": _EVERY_MODE | _CLUSTER | {"output"},
    "submit": _EVERY_MODE | _CLUSTER | {"smears", "cells", "data", "no_cache", "host", "experiment", "param", "schedule",
                                        "run_name"},
    "run_local": _EVERY_MODE | _IMAGES | {"smears", "cells", "data", "output_dir", "until", "no_cache", "runner"},
}
_MODE_HINTS = {
    ("compile", "smears"): "the compiled pipeline takes the data as run parameters (the KFP UI, or --submit --smears)",
    ("submit", "until"): "a submitted run goes to the report; --until is for --run-local",
    ("submit", "output_dir"): "a submitted run writes to the cluster's pipeline root; --output-dir is for --run-local",
    ("run_local", "param"): "give settings with --set KEY=VALUE and the data with --smears/--cells",
}


def refuse_other_modes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One error for the first option given that the chosen mode would not use."""
    mode = next(m for m in MODE_OPTIONS if getattr(args, m))
    for action in parser._actions:
        dest = action.dest
        if dest in ("help", "compile", "submit", "run_local") or dest in MODE_OPTIONS[mode]:
            continue
        if getattr(args, dest) != action.default:
            flag = action.option_strings[-1]
            used_by = " and ".join(f"--{m.replace('_', '-')}" for m in MODE_OPTIONS if dest in MODE_OPTIONS[m])
            hint = _MODE_HINTS.get((mode, dest)) or _MODE_HINTS.get((mode, "smears") if dest in ("cells", "data") else ("", ""))
            parser.error(f"{flag} is not used by --{mode.replace('_', '-')}" + (f" (it is for {used_by})" if used_by else "")
                         + (f": {hint}" if hint else ""))
    if mode == "run_local" and args.runner == "subprocess":
        for flag in ("--image-registry", "--image-tag"):
            if getattr(args, flag[2:].replace("-", "_")):
                parser.error(f"{flag} is not used by --run-local's default runner (each task runs in this environment): "
                             "it names the images of --runner docker, --compile and --submit")


def _submitted_data(args: argparse.Namespace, params: dict) -> dict:
    """--smears/--cells/--data as the submitted run's parameters: what the cluster can read (s3://, 'synthetic',
    'none'), never a local folder it cannot see."""
    given = {"smears": args.smears if args.smears is not None else args.data,
             "cells": args.cells if args.cells is not None else args.data}
    for role, value in given.items():
        if value is None:
            continue
        if role in params:
            raise ConfigError(f"--{role} and --param {role}=... both given; give one")
        if not (value.startswith("s3://") or value in ("synthetic", "none")):
            raise ConfigError(f"--{role} {value}: a submitted run reads s3://bucket/prefix (or 'synthetic'); a local "
                              "folder is not on the cluster: upload it first (e.g. mc cp --recursive)")
        params[role] = value
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compile", action="store_true", help="write the pipeline YAML for Kubeflow")
    mode.add_argument("--run-local", action="store_true", help="run the DAG here with kfp.local")
    mode.add_argument("--submit", action="store_true", help="compile and start a run on a Kubeflow Pipelines server")
    parser.add_argument("--output", type=path_argument, default=DEFAULT_COMPILED, help=f"YAML path for --compile (default {DEFAULT_COMPILED})")
    parser.add_argument("--profile", help="settings profile: demo, workstation, paper (default: paper for --compile, demo for "
                                          "--run-local)")
    parser.add_argument("--smears", help="smear images (multi-cell; ALL-IDB1 or one folder per class): 'synthetic' "
                                         "(generated, the default), a folder, or s3://bucket/prefix")
    parser.add_argument("--cells", help="single-cell images (ALL-IDB2 or one folder per class): 'synthetic' (default), "
                                        "a folder, s3://bucket/prefix, or 'none'")
    parser.add_argument("--data", help="shorthand for --smears and --cells both: a folder holding ALL_IDB1/ and ALL_IDB2/")
    parser.add_argument("--negative-class", help="the class that means 'no leukemia' (default: normal); "
                                                 "NAME for every input, or smears=NAME,cells=NAME when they differ")
    parser.add_argument("--pixel-size", metavar="UM", help="micrometres per pixel of the images (ALL-IDB: 0.09): UM for "
                                                           "every input, or smears=UM,cells=UM (smears=UM alone covers "
                                                           "the cells too); default: the profile's (paper: ALL-IDB's; "
                                                           "demo, workstation: estimated per dataset from its nuclei, "
                                                           "as --set data.pixel_size_um=0 does)")
    parser.add_argument("--output-dir", type=path_argument, default=Path("runs/local"), help="where --run-local writes (default runs/local)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile setting, e.g. --set split.folds=3")
    parser.add_argument("--until", choices=STOPS, default="report", help="run the DAG only up to this stage")
    parser.add_argument("--no-cache", action="store_true", help="run every task even if a cached result exists")
    parser.add_argument("--runner", choices=local_runner.RUNNERS, default="subprocess",
                        help="--run-local: each task in a subprocess of this environment (default), or in its own "
                             "container from the image it gets on a cluster (docker; build them with `make images`; "
                             "--image-registry/--image-tag name them)")
    cluster = parser.add_argument_group("cluster (--compile and --submit; the images also for --runner docker)")
    cluster.add_argument("--image-registry", help="registry of the CPU and GPU images (default from leukemia_mtl/config.py)")
    cluster.add_argument("--image-tag", help="tag of both images (default: the project's version)")
    cluster.add_argument("--gpu-node-label", metavar="KEY=VALUE", help="node selector of GPU tasks ('none' for no selector)")
    cluster.add_argument("--gpu-toleration", action="append", metavar="KEY[=VALUE]:EFFECT",
                         help="toleration of GPU tasks, repeatable ('none' for no toleration)")
    cluster.add_argument("--minio-secret", help="Kubernetes Secret holding MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY "
                                                "(or mlpipeline-minio-artifact: KFP's own MinIO)")
    cluster.add_argument("--host", help="KFP API endpoint for --submit (default: $KF_PIPELINES_ENDPOINT)")
    cluster.add_argument("--experiment", default="leukemia-mtl", help="experiment of the submitted run (default leukemia-mtl)")
    cluster.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="pipeline parameter for --submit, e.g. --param smears=s3://raw/idb1 (JSON values parsed)")
    cluster.add_argument("--schedule", metavar="CRON", help="with --submit: a recurring run on this cron schedule "
                                                           "(six fields, seconds first, e.g. '0 0 3 * * 1')")
    cluster.add_argument("--run-name", help="name of the submitted run (default leukemia-mtl-<time>)")
    args = parser.parse_args(argv)
    refuse_other_modes(parser, args)

    if args.submit and args.host and redact_url(args.host) != args.host:  # before kfp can warn with it
        print(f"error: --host {redact_url(args.host)} carries credentials; give the host alone (they would be "
              "echoed by the client and logged)", file=sys.stderr)
        return 1
    if args.compile or args.submit:
        try:
            compile_overrides = _compile_overrides(args)
            run_overrides = _setting_overrides(args)  # --set: applied, never dropped
            if args.compile:
                print(f"wrote {compile_pipeline(args.output, args.profile or 'paper', compile_overrides, run_overrides)}")
                return 0
            params = _submitted_data(args, parse_overrides(args.param, flag="--param"))
            given = params.get("overrides") or {}
            given = json.loads(given) if isinstance(given, str) else given  # a str parameter on the cluster
            if run_overrides or "overrides" in params:
                params["overrides"] = json.dumps({**given, **run_overrides}, sort_keys=True) if isinstance(given, dict) else given
            run_id = submit(args.host, args.profile or "paper", compile_overrides, params, args.experiment,
                            args.schedule, args.run_name, enable_caching=False if args.no_cache else None)
        except LeukemiaMtlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # the KFP server refused or could not be reached: one line, not a traceback
            host = args.host or os.environ.get("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_ENDPOINT")
            detail = redact_url(str(exc).splitlines()[0][:300]) if str(exc) else ""
            detail = detail.replace(host, redact_url(host))
            print(f"error: submitting to {redact_url(host)} failed: {type(exc).__name__}: "
                  f"{detail}", file=sys.stderr)
            return 1
        print(f"{'recurring run' if args.schedule else 'run'} {run_id} created in experiment {args.experiment}")
        return 0

    # an empty --smears "" is refused by ingest's rule, not turned into synthetic data
    smears = next(v for v in (args.smears, args.data, "synthetic") if v is not None)
    cells = next(v for v in (args.cells, args.data, "synthetic") if v is not None)
    try:
        started = time.time()
        outputs = run_local(args.profile or "demo", smears, cells, args.output_dir, _setting_overrides(args),
                            cache=not args.no_cache, until=args.until, runner=args.runner,
                            compile_overrides=_compile_overrides(args))
    except LeukemiaMtlError as exc:
        problems = exc.problems if isinstance(exc, DatasetError) else [exc]
        for problem in problems:
            print(f"error: {printable(str(problem))}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a task failed; kfp.local printed its log above
        print(f"error: pipeline run failed: {exc}", file=sys.stderr)
        return 1
    print(f"\npipeline finished in {time.time() - started:.0f}s")
    print("\n".join(describe_run(outputs, args.output_dir if args.until == "report" else None)))
    print(f"(every output's path is in {args.output_dir.resolve() / 'outputs.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
