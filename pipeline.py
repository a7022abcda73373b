"""The ALL screening pipeline: one DAG definition, run locally (kfp.local) or compiled for Kubeflow.

    python pipeline.py --compile [--profile paper] [--output FILE] [--image-registry R] [--image-tag T]
    python pipeline.py --submit --host URL [--experiment NAME] [--param KEY=VALUE] [--schedule CRON]
    python pipeline.py --run-local [--profile demo] [--smears PATH_OR_URI] [--cells PATH_OR_URI]
                       [--negative-class NAME] [--pixel-size UM] [--output-dir DIR] [--set KEY=VALUE]

No science here: components/ adapts the library, this file wires the DAG:
ingest -> preprocess -> segment -> split -> for each (fold, backbone): augment -> stage 1 -> stage 2
-> stage 3 (detection, FAB) and the classical baseline (detection, FAB); split -> baseline (majority
class, colour histogram) -> crossval -> ttest, release -> report.
"""

import argparse
import json
import os
import sys
import time
import warnings
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

PIPELINE_NAME = "leukemia-mtl"
DEFAULT_COMPILED = Path("build/pipeline.yaml")
STOPS = ("preprocess", "segment", "report")
TRAINING_STAGES = (  # (display name, stage, task, starts from, component input name)
    ("stage 1", "stage1", "blast", None, "stage1"),
    ("stage 2", "stage2", "blast", "stage 1", "stage2"),
    ("stage 3 detection", "stage3", "detection", "stage 2", "stage3_detection"),
    ("stage 3 FAB", "stage3", "fab", "stage 2", "stage3_fab"),
    ("classical detection", "classical", "detection", None, "classical_detection"),
    ("classical FAB", "classical", "fab", None, "classical_fab"),
)
STABLE_COPIES = {"report": "report.html", "summary": "summary.json"}  # in --output-dir after a whole run
REPO = Path(__file__).resolve().parent
CODE_VERSION_ENV = "LEUKEMIA_MTL_CODE_VERSION"  # local runs: settings and code, in every task's cache key
SCORED = ("stage3_detection", "stage3_fab", "classical_detection", "classical_fab")

_BASE_OUTPUTS = [("dataset", Dataset), ("roi", Dataset), ("roi_overlay", HTML)]
_SEGMENT_OUTPUTS = [("segmenter", Model), ("cells", Dataset), ("segmentation", HTML)]
_REPORT_OUTPUTS = [("split", Artifact), ("crossval", Artifact), ("ttest", Artifact), ("release", Model),
                   ("release_manifest", Artifact), ("report", HTML), ("summary", Artifact)]
OUTPUTS = {
    "preprocess": NamedTuple("Outputs", _BASE_OUTPUTS),
    "segment": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS),
    "report": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS + _REPORT_OUTPUTS),
}


def build_pipeline(*, profile: str = "demo", cache_ingest: bool = False, until: str = "report",
                   cluster: bool = False, compile_overrides: dict | None = None, code_version: str = "",
                   run_overrides: dict | None = None):
    """The DAG. Defaults (profile, backbones) come from `profile`; `until` cuts it short.

    `cluster` adds what only a Kubernetes cluster reads (images, GPUs, node selector and
    tolerations, resources, retries, the MinIO secret), from the profile's `image` and `cluster`
    settings with `compile_overrides` applied. `cache_ingest` may be on only when `data_version`
    tracks the data's content (the local runner). `code_version` (the local runner) goes into
    every task's environment, which kfp.local's cache key includes: a task's inputs name the
    profile, not its settings, and the library's code is not part of the component's source.
    """
    from leukemia_mtl.config import get_profile

    if until not in STOPS:
        raise ValueError(f"until must be one of {STOPS}, got {until!r}")
    # run_overrides (--set with --compile) become the `overrides` parameter's default: checked here, applied
    # by every task at run time, and shown in the KFP UI where a person can change them
    settings = get_profile(profile, {**(compile_overrides or {}), **(run_overrides or {})})
    default_overrides = json.dumps(run_overrides or {}, sort_keys=True)
    if cluster:
        place = _cluster_placement(settings)
    else:
        def place(task, kind: str, gpu: bool = False, storage: bool = False):
            return task.set_env_variable(CODE_VERSION_ENV, code_version) if code_version else task

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Acute lymphoblastic leukemia detection and FAB classification by multistage transfer learning",
    )
    def leukemia_pipeline(
        smears: str = "synthetic",
        cells: str = "synthetic",
        profile: str = settings.name,
        overrides: str = default_overrides,
        data_version: str = "",
        backbones: list = list(settings.model.backbones),
    ) -> OUTPUTS[until]:
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
        with dsl.ParallelFor(items=folds.outputs["Output"], parallelism=parallelism) as run:  # one per (fold, backbone)
            fold_data = augment(dataset=ingested.outputs["dataset"], cells=segmented.outputs["cells"],
                                split=folds.outputs["split"], fold=run.fold, **config)
            fold_data.set_display_name("augment")
            place(fold_data, "augment")
            tasks = {}
            for display, stage, task, starts_from, _ in TRAINING_STAGES:
                common = dict(training_data=fold_data.outputs["training_data"], backbone=run.backbone, stage=stage, task=task, **config)
                if starts_from is None:
                    trained = finetune_from_imagenet(**common)
                else:
                    trained = finetune_from_previous(previous=tasks[starts_from].outputs["model"], **common)
                trained.set_display_name(display)
                place(trained, "train", gpu=True, storage=starts_from is None)  # ImageNet weights may come from s3
                tasks[display] = trained

        def collected(output: str, names=SCORED) -> dict:
            """Fan-in over every (fold, backbone): one list per training stage."""
            return {name: dsl.Collected(tasks[display].outputs[output])
                    for display, _, _, _, name in TRAINING_STAGES if name in names}

        trivial = baseline(dataset=ingested.outputs["dataset"], split=folds.outputs["split"], **config)
        trivial.set_display_name("baseline")
        place(trivial, "light")
        scored = crossval(baselines=trivial.outputs["predictions"], **collected("evaluation"), **config)
        scored.set_display_name("crossval")
        place(scored, "light")
        compared = ttest(crossval=scored.outputs["results"], **config)
        compared.set_display_name("ttest")
        place(compared, "light")
        released = release(crossval=scored.outputs["results"], data_summary=ingested.outputs["summary"],
                           segmenter=segmented.outputs["model"],
                           **collected("model", ("stage2",) + SCORED), **config)
        released.set_display_name("release")
        released.set_caching_options(enable_caching=False)  # it publishes outside the pipeline
        place(released, "light", storage=True)
        reported = report(
            data_summary=ingested.outputs["summary"], split=folds.outputs["split"], roi_metrics=roi.outputs["metrics"],
            roi_overlay=roi.outputs["overlay"], segment_metrics=segmented.outputs["metrics"], segmentation=segmented.outputs["figure"],
            crossval=scored.outputs["results"], ttest=compared.outputs["results"], release_manifest=released.outputs["manifest"],
            **collected("evaluation", tuple(name for *_, name in TRAINING_STAGES)), **config,
        )
        reported.set_display_name("report")
        place(reported, "light")
        outputs += [folds.outputs["split"], scored.outputs["results"], compared.outputs["results"], released.outputs["model"],
                    released.outputs["manifest"], reported.outputs["html"], reported.outputs["summary"]]
        return OUTPUTS[until](*outputs)

    return leukemia_pipeline


MINIO_ENV = ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")


def _cluster_placement(settings):
    """A function that gives one task its image, resources, retries, GPUs and secrets."""
    from kfp import kubernetes

    from leukemia_mtl.config import ConfigError

    cluster = settings.cluster
    node_label = None
    if cluster.gpu_node_label:
        key, sep, value = cluster.gpu_node_label.partition("=")
        if not (key and sep and value):
            raise ConfigError(f"cluster.gpu_node_label must be KEY=VALUE, got {cluster.gpu_node_label!r}")
        node_label = (key, value)
    tolerations = []
    for text in cluster.gpu_tolerations:
        spec, sep, effect = text.rpartition(":")
        key, has_value, value = spec.partition("=")
        if not (sep and key and effect in ("NoSchedule", "PreferNoSchedule", "NoExecute")):
            raise ConfigError(f"cluster.gpu_tolerations: {text!r} must be KEY[=VALUE]:NoSchedule|PreferNoSchedule|NoExecute")
        tolerations.append(dict(key=key, operator="Equal" if has_value else "Exists", value=value or None, effect=effect))

    def place(task, kind: str, gpu: bool = False, storage: bool = False):
        resources = getattr(cluster, kind)
        task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
        task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
        task.set_retry(num_retries=cluster.retries, backoff_duration=cluster.retry_backoff, backoff_factor=2.0)
        task.set_container_image(settings.image.gpu_image if gpu else settings.image.cpu_image)
        if gpu and settings.train.gpus > 0:
            task.set_accelerator_type(cluster.gpu_resource).set_accelerator_limit(settings.train.gpus)
            if node_label:
                kubernetes.add_node_selector(task, *node_label)
            for toleration in tolerations:
                kubernetes.add_toleration(task, **toleration)
        if storage:  # only the tasks that read or write object storage outside KFP's own artifacts
            kubernetes.use_secret_as_env(task, cluster.minio_secret, {name: name for name in MINIO_ENV})
        return task

    return place


def compile_pipeline(output: Path, profile: str = "paper", compile_overrides: dict | None = None,
                     run_overrides: dict | None = None) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(profile=profile, cluster=True, compile_overrides=compile_overrides,
                                               run_overrides=run_overrides),
                                package_path=str(output))
    return output


def code_version(settings) -> str:
    """sha256 of the resolved settings and of every source file of the library and components:
    a cached local task is reused only while neither has changed."""
    import hashlib

    from leukemia_mtl.io_utils import sha256_file

    digest = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode())
    for path in sorted([*(REPO / "leukemia_mtl").rglob("*.py"), *(REPO / "components").rglob("*.py")]):
        digest.update(f"{path.relative_to(REPO).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


def run_local(profile: str, smears: str, cells: str, output_dir: Path, overrides: dict, cache: bool = True,
              until: str = "report") -> dict:
    """Run the DAG (to `until`) in this Python environment; returns {output: {path, metadata}}."""
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.io_utils import exclusive_folder

    settings = get_profile(profile, overrides)  # fail here, not inside a task, on a bad profile
    output_dir = output_dir.resolve()
    with exclusive_folder(output_dir):
        return _run_local(settings, profile, smears, cells, output_dir, overrides, cache, until)


def _run_local(settings, profile: str, smears: str, cells: str, output_dir: Path, overrides: dict, cache: bool,
               until: str) -> dict:
    from kfp import local

    from leukemia_mtl.data.ingest import fingerprint, precheck
    from leukemia_mtl.io_utils import atomic_write_text

    version = fingerprint(smears, cells, settings)  # a blank or unreadable input stops here, before any task
    precheck(smears, cells, settings)  # and data the split cannot divide into split.folds
    root = output_dir / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache)
    # our base image has Python; kfp warns because its name does not say so
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    # GPU requests and display names matter on a cluster only; kfp.local says so for every task
    warnings.filterwarnings("ignore", message="Task .* have no effect in the current local runner")
    run = build_pipeline(profile=profile, cache_ingest=cache, until=until, code_version=code_version(settings))(
        smears=smears, cells=cells, profile=profile, overrides=json.dumps(overrides, sort_keys=True), data_version=version,
        backbones=list(settings.model.backbones),
    )
    # cached tasks keep their first run's folders, so paths come from the run's outputs
    outputs = {name: {"path": artifact.path, "metadata": artifact.metadata} for name, artifact in run.outputs.items()}
    atomic_write_text(output_dir / "outputs.json", json.dumps(outputs, indent=2, default=str) + "\n")
    if "report" in outputs:  # the files a person opens, under stable names
        import shutil

        for name, copy in STABLE_COPIES.items():
            shutil.copyfile(outputs[name]["path"], output_dir / copy)
    return outputs


USERINFO = r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/@\s]*@"


def redact_url(url: str) -> str:
    """`url` with any user:password@ (with or without a scheme) replaced: a password never reaches a log."""
    import re

    return re.sub(USERINFO, r"\1***@", url)


def describe_run(outputs: dict, output_dir: Path | None = None) -> list[str]:
    """What a person wants to read after a local run: where things are and the headline numbers."""
    from leukemia_mtl.evaluate import describe_threshold

    lines = []
    summary_of = json.loads((Path(outputs["dataset"]["path"]) / "dataset.json").read_text())
    for dataset, info in summary_of["datasets"].items():
        lines.append(f"  {dataset}: " + " ".join(f"{c}={n}" for c, n in info["class_counts"].items()))
    roi = json.loads((Path(outputs["roi"]["path"]) / "summary.json").read_text())
    lines += [f"  WARNING: {warning}" for warning in roi.get("warnings", [])]
    if roi.get("mean_iou") is not None:
        lines.append(f"  ROI vs ground-truth WBC masks: IoU {roi['mean_iou']:.3f}, recall {roi['mean_recall']:.3f}")
    if "cells" in outputs:
        seg = json.loads((Path(outputs["cells"]["path"]) / "summary.json").read_text())
        if seg.get("unet_dice") is not None:
            lines.append(f"  held-out smears: U-Net Dice {seg['unet_dice']:.3f} vs threshold ROI Dice {seg['roi_dice']:.3f} "
                         f"(against ground truth); {seg['crops']} isolated cell crops")
        elif seg.get("unet_vs_roi_dice") is not None:
            lines.append(f"  held-out smears (no ground truth): U-Net against the ROI masks it learnt from, Dice "
                         f"{seg['unet_vs_roi_dice']:.3f}; {seg['crops']} isolated cell crops")
        if seg.get("isolation"):
            lines.append(f"  cells isolated with the {seg['isolation']} mask: {seg.get('isolation_reason', '')}")
        lines += [f"  WARNING: {name}: no white cell found in {count} images" for name, count in seg.get("without_cells", {}).items()
                  if count]
    if "summary" not in outputs:
        lines += [f"  {name:14s} {outputs[name]['path']}" for name in outputs]
        return lines
    summary = json.loads(Path(outputs["summary"]["path"]).read_text())
    lines.append(f"  {len(summary['folds'])}-fold cross-validation (mean ± SD over the evaluation folds, which only score):")
    lines.append(f"    {'task':10s} {'model':18s} {'arm':8s} {'accuracy':>16s} {'balanced acc.':>16s} {'macro F1':>16s} {'AUC':>16s}")
    rows = [(task, backbone, arm, result) for task, by_backbone in summary["tasks"].items()
            for backbone, by_arm in by_backbone.items() for arm, result in sorted(by_arm.items(), key=lambda kv: kv[0] != "mtl")]
    rows += [(task, "baseline", arm, result) for task, by_arm in summary["baselines"].items() for arm, result in by_arm.items()]
    for task, model, arm, result in sorted(rows, key=lambda r: r[0]):
        cells_text = [("n/a" if result["mean"][m] is None else f"{result['mean'][m]:.3f} ± {result['std'][m]:.3f}")
                      for m in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro")]
        lines.append(f"    {task:10s} {model:18s} {arm:8s} " + " ".join(f"{c:>16s}" for c in cells_text))
        for flag in result["degenerate"]:
            lines.append(f"      DEGENERATE: {flag}")
    for comparison in summary["ttest"]:
        if comparison["tests"]:
            test = comparison["tests"][0]
            p_value = f"p = {test['p_value']:.3g}" if test["p_value"] is not None else f"p undefined: {test['note']}"
            lines.append(f"  {comparison['second']} - {comparison['first']} {comparison['metric']}, {comparison['task']} "
                         f"{comparison['backbone']}: {test['mean_difference']:+.3f} (corrected resampled t-test, {p_value})")
    for task, entry in summary["headline"].items():
        point = entry["released"]["operating_point"]
        if point["kind"] == "binary":
            def text(e):
                p = e["operating_point"]
                return ", ".join(f"{k} {_interval(p[k])}" for k in ("sensitivity", "specificity", "ppv", "npv", "auc"))
        else:
            def text(e):
                p = e["operating_point"]
                return f"accuracy {_interval(p['accuracy'])}, balanced accuracy {p['balanced_accuracy']:.3f}, macro F1 {p['f1_macro']:.3f}"
        at = f", at {describe_threshold(point)}" if point["kind"] == "binary" and "target_sensitivity" in point else ""
        lines.append(f"  headline, {task} (pooled held-out smears{at}):")
        lines.append(f"    released {entry['released']['backbone']} {entry['released']['arm']}: {text(entry['released'])}")
        for arm in ("colour", "majority"):
            if arm in entry:
                lines.append(f"    {arm} baseline: {text(entry[arm])}")
    for check in summary["expectations"]:
        value = "n/a" if check["value"] is None else f"{check['value']:.3f}"
        lines.append(f"  learning check {check['check']} ({check['backbone']} multistage, cross-validated mean {value}): "
                     + ("met" if check["met"] else "NOT MET"))
    release = summary["release"]
    if release and release["refused"]:
        lines.append("  RELEASE REFUSED: " + "; ".join(release["gate"]["reasons"]))
    elif release:
        lines.append(f"  released model {release['version']}: {outputs['release']['path']}"
                     + (f" (published to {release['published_to']})" if release["published_to"] else ""))
        if release["gate"] and not release["gate"]["passed"]:
            lines.append("  RELEASE FLAGGED, it fails the gate: " + "; ".join(release["gate"]["reasons"]))
    for note in summary["limitations"]:
        lines.append(f"  note: {note}")
    for name, copy in STABLE_COPIES.items():  # run_local's copies, else the artifacts themselves
        lines.append(f"  {name}: {output_dir.resolve() / copy if output_dir else outputs[name]['path']}")
    return lines


def _interval(entry: dict) -> str:
    if entry.get("value") is None:
        return "n/a"
    return f"{entry['value']:.3f}" + (f" [{entry['low']:.3f}, {entry['high']:.3f}]" if entry.get("low") is not None else "")


def _check_run_parameters(params: dict) -> None:
    """The settings and inputs a submitted run will use, refused as they would be by run-local."""
    from leukemia_mtl.config import ConfigError, get_profile
    from leukemia_mtl.data.ingest import input_source

    overrides = params.get("overrides") or {}
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides or "{}")
        except ValueError as exc:
            raise ConfigError(f"--param overrides=...: not JSON ({exc})") from None
    if not isinstance(overrides, dict):
        raise ConfigError("--param overrides=...: must be a JSON object of dotted settings")
    get_profile(str(params["profile"]), overrides)
    for role in ("smears", "cells"):
        if role in params:
            input_source(role, str(params[role]))


def submit(host: str | None, profile: str, compile_overrides: dict, params: dict, experiment: str,
           schedule: str | None = None, run_name: str | None = None) -> str:
    """Compile and create a run (or, with a cron `schedule`, a recurring run) through kfp.Client.

    Auth follows kfp's conventions: KF_PIPELINES_ENDPOINT when no host is given, a bearer token
    in KF_PIPELINES_TOKEN (e.g. a service-account token in CI), or kfp's own OAuth variables.
    Returns the run's (or recurring run's) id.
    """
    import os
    import tempfile

    import kfp

    accepted = list(build_pipeline(profile=profile).component_spec.inputs)  # the DAG's own parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        from leukemia_mtl.config import ConfigError

        raise ConfigError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes {', '.join(accepted)}")
    params = {"profile": profile, **params}
    _check_run_parameters(params)  # here, not in the cluster's first task after a node has spun up
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", profile, compile_overrides)
        client = kfp.Client(host=host, existing_token=os.environ.get("KF_PIPELINES_TOKEN") or None)
        name = run_name or f"{PIPELINE_NAME}-{time.strftime('%Y%m%d-%H%M%S')}"
        if schedule:
            experiment_id = client.create_experiment(experiment).experiment_id
            job = client.create_recurring_run(experiment_id=experiment_id, job_name=name, cron_expression=schedule,
                                              pipeline_package_path=str(package), params=params)
            return job.recurring_run_id
        return client.create_run_from_pipeline_package(str(package), arguments=params, run_name=name,
                                                       experiment_name=experiment).run_id


def _compile_overrides(args) -> dict:
    """Cluster settings given on the command line, as profile overrides."""
    overrides = {}
    if args.image_registry:
        overrides["image.registry"] = args.image_registry
    if args.image_tag:
        overrides["image.tag"] = args.image_tag
    if args.gpu_node_label is not None:
        overrides["cluster.gpu_node_label"] = "" if args.gpu_node_label == "none" else args.gpu_node_label
    if args.gpu_toleration:
        overrides["cluster.gpu_tolerations"] = [t for t in args.gpu_toleration if t != "none"]
    if args.minio_secret:
        overrides["cluster.minio_secret"] = args.minio_secret
    return overrides


def _setting_overrides(args) -> dict:
    """The run's settings from the command line, every mode alike: --set, then --negative-class and --pixel-size."""
    from leukemia_mtl.cli import parse_overrides
    from leukemia_mtl.config import negative_class_overrides, pixel_size_overrides

    overrides = parse_overrides(args.overrides)
    if args.negative_class:
        overrides.update(negative_class_overrides(args.negative_class))
    if args.pixel_size:
        overrides.update(pixel_size_overrides(args.pixel_size))
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compile", action="store_true", help="write the pipeline YAML for Kubeflow")
    mode.add_argument("--run-local", action="store_true", help="run the DAG here with kfp.local")
    mode.add_argument("--submit", action="store_true", help="compile and start a run on a Kubeflow Pipelines server")
    parser.add_argument("--output", type=Path, default=DEFAULT_COMPILED, help=f"YAML path for --compile (default {DEFAULT_COMPILED})")
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
    parser.add_argument("--output-dir", type=Path, default=Path("runs/local"), help="where --run-local writes (default runs/local)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile setting, e.g. --set split.folds=3")
    parser.add_argument("--until", choices=STOPS, default="report", help="run the DAG only up to this stage")
    parser.add_argument("--no-cache", action="store_true", help="run every task even if a cached result exists")
    cluster = parser.add_argument_group("cluster (--compile and --submit)")
    cluster.add_argument("--image-registry", help="registry of the CPU and GPU images (default from leukemia_mtl/config.py)")
    cluster.add_argument("--image-tag", help="tag of both images (default: the project's version)")
    cluster.add_argument("--gpu-node-label", metavar="KEY=VALUE", help="node selector of GPU tasks ('none' for no selector)")
    cluster.add_argument("--gpu-toleration", action="append", metavar="KEY[=VALUE]:EFFECT",
                         help="toleration of GPU tasks, repeatable ('none' for no toleration)")
    cluster.add_argument("--minio-secret", help="Kubernetes Secret holding MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY")
    cluster.add_argument("--host", help="KFP API endpoint for --submit (default: $KF_PIPELINES_ENDPOINT)")
    cluster.add_argument("--experiment", default="leukemia-mtl", help="experiment of the submitted run (default leukemia-mtl)")
    cluster.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="pipeline parameter for --submit, e.g. --param smears=s3://raw/idb1 (JSON values parsed)")
    cluster.add_argument("--schedule", metavar="CRON", help="with --submit: a recurring run on this cron schedule "
                                                           "(six fields, seconds first, e.g. '0 0 3 * * 1')")
    cluster.add_argument("--run-name", help="name of the submitted run (default leukemia-mtl-<time>)")
    args = parser.parse_args(argv)

    from leukemia_mtl.cli import parse_overrides
    from leukemia_mtl.errors import DatasetError, LeukemiaMtlError, printable

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
            params = parse_overrides(args.param, flag="--param")
            given = params.get("overrides") or {}
            given = json.loads(given) if isinstance(given, str) else given  # a str parameter on the cluster
            if run_overrides or "overrides" in params:
                params["overrides"] = json.dumps({**given, **run_overrides}, sort_keys=True) if isinstance(given, dict) else given
            run_id = submit(args.host, args.profile or "paper", compile_overrides, params, args.experiment,
                            args.schedule, args.run_name)
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
                            cache=not args.no_cache, until=args.until)
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
