"""pipeline.py's command line: --compile, --run-local or --submit the DAG, each mode refusing the options it would not
use. After the TFX template's runners: the DAG's module (pipeline.py) is passed in, never imported, so running
`python pipeline.py` loads it once and nothing here imports it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType

from leukemia_mtl.config import ConfigError, negative_class_overrides, parse_overrides, pixel_size_overrides
from leukemia_mtl.data.files import path_argument
from leukemia_mtl.errors import DatasetError, LeukemiaMtlError, printable
from runners import local as local_runner
from runners import submit as submitter
from runners.manifests import images_for
from runners.submit import redact_url
from runners.summary import describe_run

# which mode each option means something in; anything else given is refused, never dropped
_EVERY_MODE = {"profile", "overrides", "negative_class", "pixel_size"}
_IMAGES = {"image_registry", "image_tag"}
_CLUSTER = _IMAGES | {"gpu_node_label", "gpu_toleration", "minio_secret"}
MODE_OPTIONS = {
    "compile": _EVERY_MODE | _CLUSTER | {"output"},
    "submit": _EVERY_MODE
    | _CLUSTER
    | {"smears", "cells", "data", "no_cache", "host", "experiment", "param", "schedule", "run_name"},
    "run_local": _EVERY_MODE | _IMAGES | {"smears", "cells", "data", "output_dir", "until", "no_cache", "runner"},
}
_MODE_HINTS = {
    ("compile", "smears"): "the compiled pipeline takes the data as run parameters (the KFP UI, or --submit --smears)",
    ("submit", "until"): "a submitted run goes to the report; --until is for --run-local",
    ("submit", "output_dir"): "a submitted run writes to the cluster's pipeline root; --output-dir is for --run-local",
    ("run_local", "param"): "give settings with --set KEY=VALUE and the data with --smears/--cells",
}


def submit(
    dag: ModuleType,
    *,
    host: str | None,
    profile: str,
    compile_overrides: dict,
    params: dict,
    experiment: str,
    schedule: str | None = None,
    run_name: str | None = None,
    enable_caching: bool | None = None,
) -> str:
    """The DAG compiled and submitted (runners/submit.py); returns the run's or recurring run's id. The run's
    overrides shape the DAG where they must: with tune.trials above 0 it has the tune tasks."""
    given = params.get("overrides") or {}
    given = json.loads(given) if isinstance(given, str) else given
    shaping = {k: v for k, v in given.items() if k.startswith("tune.")} if isinstance(given, dict) else {}
    # the compiled DAG's own parameters (the local runner's data_version is not one)
    accepted = list(
        dag.build_pipeline(
            profile=profile, cluster=True, compile_overrides=compile_overrides, run_overrides=shaping
        ).component_spec.inputs
    )
    return submitter.submit(
        accepted,
        lambda path: dag.compile_pipeline(
            path, profile=profile, compile_overrides=compile_overrides, run_overrides=shaping
        ),
        host=host,
        profile=profile,
        params=params,
        experiment=experiment,
        schedule=schedule,
        run_name=run_name,
        pipeline_name=dag.PIPELINE_NAME,
        enable_caching=enable_caching,
    )


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
            hint = _MODE_HINTS.get((mode, dest)) or _MODE_HINTS.get(
                (mode, "smears") if dest in ("cells", "data") else ("", "")
            )
            parser.error(
                f"{flag} is not used by --{mode.replace('_', '-')}"
                + (f" (it is for {used_by})" if used_by else "")
                + (f": {hint}" if hint else "")
            )
    if mode == "run_local" and args.runner == "subprocess":
        for flag in ("--image-registry", "--image-tag"):
            if getattr(args, flag[2:].replace("-", "_")):
                parser.error(
                    f"{flag} is not used by --run-local's default runner (each task runs in this environment): "
                    "it names the images of --runner docker, --compile and --submit"
                )


def _submitted_data(args: argparse.Namespace, params: dict) -> dict:
    """--smears/--cells/--data as the submitted run's parameters: what the cluster can read (s3://, 'synthetic',
    'none'), never a local folder it cannot see."""
    given = {
        "smears": args.smears if args.smears is not None else args.data,
        "cells": args.cells if args.cells is not None else args.data,
    }
    for role, value in given.items():
        if value is None:
            continue
        if role in params:
            raise ConfigError(f"--{role} and --param {role}=... both given; give one")
        if not (value.startswith("s3://") or value in ("synthetic", "none")):
            raise ConfigError(
                f"--{role} {value}: a submitted run reads s3://bucket/prefix (or 'synthetic'); a local "
                "folder is not on the cluster: upload it first (e.g. mc cp --recursive)"
            )
        params[role] = value
    return params


USAGE = """The ALL screening pipeline: one DAG definition (pipeline.py), run locally (kfp.local) or compiled for Kubeflow.

    python pipeline.py --compile [--profile paper] [--output FILE] [--image-registry R] [--image-tag T]
    python pipeline.py --submit --host URL [--experiment NAME] [--param KEY=VALUE] [--schedule CRON]
    python pipeline.py --run-local [--profile demo] [--smears PATH_OR_URI] [--cells PATH_OR_URI]
                       [--negative-class NAME] [--pixel-size UM] [--output-dir DIR] [--set KEY=VALUE]
                       [--runner subprocess|docker]

ingest -> preprocess -> segment -> split -> for each (fold, backbone): [tune ->] augment -> the training stages of
leukemia_mtl/stages.py (stage 1 -> stage 2 -> stage 3 detection and FAB; the classical arm's detection and FAB from
ImageNet); split -> baselines (majority class, colour histogram, ImageNet features) -> crossval -> ttest, release ->
report.
"""


def parser_for(dag: ModuleType) -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compile", action="store_true", help="write the pipeline YAML for Kubeflow")
    mode.add_argument("--run-local", action="store_true", help="run the DAG here with kfp.local")
    mode.add_argument("--submit", action="store_true", help="compile and start a run on a Kubeflow Pipelines server")
    parser.add_argument(
        "--output",
        type=path_argument,
        default=dag.DEFAULT_COMPILED,
        help=f"YAML path for --compile (default {dag.DEFAULT_COMPILED})",
    )
    parser.add_argument(
        "--profile",
        help="settings profile: demo, workstation, paper (default: paper for --compile, demo for --run-local)",
    )
    parser.add_argument(
        "--smears",
        help="smear images (multi-cell; ALL-IDB1 or one folder per class): 'synthetic' "
        "(generated, the default), a folder, or s3://bucket/prefix",
    )
    parser.add_argument(
        "--cells",
        help="single-cell images (ALL-IDB2 or one folder per class): 'synthetic' (default), "
        "a folder, s3://bucket/prefix, or 'none'",
    )
    parser.add_argument(
        "--data", help="shorthand for --smears and --cells both: a folder holding ALL_IDB1/ and ALL_IDB2/"
    )
    parser.add_argument(
        "--negative-class",
        help="the class that means 'no leukemia' (default: normal); "
        "NAME for every input, or smears=NAME,cells=NAME when they differ",
    )
    parser.add_argument(
        "--pixel-size",
        metavar="UM",
        help="micrometres per pixel of the images (ALL-IDB: 0.09): UM for "
        "every input, or smears=UM,cells=UM (smears=UM alone covers "
        "the cells too); default: the profile's (paper: ALL-IDB's; "
        "demo, workstation: estimated per dataset, smears from their red "
        "cells (else their nuclei), cells from their nuclei, "
        "as --set data.pixel_size_um=0 does)",
    )
    parser.add_argument(
        "--output-dir",
        type=path_argument,
        default=Path("runs/local"),
        help="where --run-local writes (default runs/local)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a profile setting, e.g. --set split.folds=3",
    )
    parser.add_argument("--until", choices=dag.STOPS, default="report", help="run the DAG only up to this stage")
    parser.add_argument("--no-cache", action="store_true", help="run every task even if a cached result exists")
    parser.add_argument(
        "--runner",
        choices=local_runner.RUNNERS,
        default="subprocess",
        help="--run-local: each task in a subprocess of this environment (default), or in its own "
        "container from the image it gets on a cluster (docker; build them with `make images`; "
        "--image-registry/--image-tag name them)",
    )
    cluster = parser.add_argument_group("cluster (--compile and --submit; the images also for --runner docker)")
    cluster.add_argument(
        "--image-registry", help="registry of the CPU and GPU images (default from leukemia_mtl/config.py)"
    )
    cluster.add_argument("--image-tag", help="tag of both images (default: the project's version)")
    cluster.add_argument(
        "--gpu-node-label", metavar="KEY=VALUE", help="node selector of GPU tasks ('none' for no selector)"
    )
    cluster.add_argument(
        "--gpu-toleration",
        action="append",
        metavar="KEY[=VALUE]:EFFECT",
        help="toleration of GPU tasks, repeatable ('none' for no toleration)",
    )
    cluster.add_argument(
        "--minio-secret",
        help="Kubernetes Secret holding MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY "
        "(or mlpipeline-minio-artifact: KFP's own MinIO)",
    )
    cluster.add_argument("--host", help="KFP API endpoint for --submit (default: $KF_PIPELINES_ENDPOINT)")
    cluster.add_argument(
        "--experiment", default="leukemia-mtl", help="experiment of the submitted run (default leukemia-mtl)"
    )
    cluster.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter for --submit, e.g. --param smears=s3://raw/idb1 (JSON values parsed)",
    )
    cluster.add_argument(
        "--schedule",
        metavar="CRON",
        help="with --submit: a recurring run on this cron schedule (six fields, seconds first, e.g. '0 0 3 * * 1')",
    )
    cluster.add_argument("--run-name", help="name of the submitted run (default leukemia-mtl-<time>)")
    return parser


def _compile_or_submit(dag: ModuleType, args: argparse.Namespace) -> int:
    """--compile writes the YAML; --submit compiles it and starts a run on the server."""
    try:
        compile_overrides = _compile_overrides(args)
        run_overrides = _setting_overrides(args)  # --set: applied, never dropped
        if args.compile:
            written = dag.compile_pipeline(
                args.output,
                profile=args.profile or "paper",
                compile_overrides=compile_overrides,
                run_overrides=run_overrides,
            )
            print(f"wrote {written}")
            return 0
        params = _submitted_data(args, parse_overrides(args.param, flag="--param"))
        given = params.get("overrides") or {}
        given = json.loads(given) if isinstance(given, str) else given  # a str parameter on the cluster
        if run_overrides or "overrides" in params:
            params["overrides"] = (
                json.dumps({**given, **run_overrides}, sort_keys=True) if isinstance(given, dict) else given
            )
        run_id = submit(
            dag,
            host=args.host,
            profile=args.profile or "paper",
            compile_overrides=compile_overrides,
            params=params,
            experiment=args.experiment,
            schedule=args.schedule,
            run_name=args.run_name,
            enable_caching=False if args.no_cache else None,
        )
    except LeukemiaMtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the KFP server refused or could not be reached: one line, not a traceback
        host = args.host or os.environ.get("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_ENDPOINT")
        detail = redact_url(str(exc).splitlines()[0][:300]) if str(exc) else ""
        detail = detail.replace(host, redact_url(host))
        print(f"error: submitting to {redact_url(host)} failed: {type(exc).__name__}: {detail}", file=sys.stderr)
        return 1
    print(f"{'recurring run' if args.schedule else 'run'} {run_id} created in experiment {args.experiment}")
    return 0


def _run_local(dag: ModuleType, args: argparse.Namespace) -> int:
    """--run-local: the DAG run here, then what it wrote."""
    # an empty --smears "" is refused by ingest's rule, not turned into synthetic data
    smears = next(v for v in (args.smears, args.data, "synthetic") if v is not None)
    cells = next(v for v in (args.cells, args.data, "synthetic") if v is not None)
    try:
        started = time.time()
        outputs = dag.run_local(
            profile=args.profile or "demo",
            smears=smears,
            cells=cells,
            output_dir=args.output_dir,
            overrides=_setting_overrides(args),
            cache=not args.no_cache,
            until=args.until,
            runner=args.runner,
            compile_overrides=_compile_overrides(args),
        )
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


def main(argv: list[str] | None, dag: ModuleType) -> int:
    """`python pipeline.py ...`: `dag` is pipeline.py's module (build_pipeline, compile_pipeline, run_local, STOPS,
    DEFAULT_COMPILED, PIPELINE_NAME and the docstring the help shows)."""
    parser = parser_for(dag)
    args = parser.parse_args(argv)
    refuse_other_modes(parser, args)
    if args.submit and args.host and redact_url(args.host) != args.host:  # before kfp can warn with it
        print(
            f"error: --host {redact_url(args.host)} carries credentials; give the host alone (they would be "
            "echoed by the client and logged)",
            file=sys.stderr,
        )
        return 1
    return _compile_or_submit(dag, args) if args.compile or args.submit else _run_local(dag, args)
