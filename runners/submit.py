"""Compiling the DAG for a cluster and submitting it to a Kubeflow Pipelines server (kfp.Client): a run, or a recurring
run."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from leukemia_mtl.config import ConfigError, get_profile

USERINFO = r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/@\s]*@"


def compile_pipeline(
    build_pipeline: Callable,
    output: Path,
    profile: str = "paper",
    compile_overrides: dict | None = None,
    run_overrides: dict | None = None,
) -> Path:
    """The DAG `build_pipeline` builds, for a cluster, as KFP's YAML: images, resources and placement from the
    profile with `compile_overrides`; `run_overrides` become the `overrides` parameter's default."""
    from kfp import compiler

    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        build_pipeline(profile=profile, cluster=True, compile_overrides=compile_overrides, run_overrides=run_overrides),
        package_path=str(output),
    )
    return output


def redact_url(url: str) -> str:
    """`url` with any user:password@ (with or without a scheme) replaced: a password never reaches a log."""
    return re.sub(USERINFO, r"\1***@", url)


def check_run_parameters(params: dict) -> None:
    """The settings and inputs a submitted run will use, refused as they would be by run-local."""
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


def _without_caching(package: Path) -> None:
    """Every task of the compiled package, in the loops' DAGs too, set not to reuse a cached result (kfp's client
    turns off only the root DAG's tasks: the training inside the for-each-fold loop would still be cached)."""
    import yaml

    documents = list(yaml.safe_load_all(package.read_text()))
    spec = documents[0]
    for dag in [spec["root"].get("dag", {})] + [c.get("dag", {}) for c in spec.get("components", {}).values()]:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": False}
    package.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def submit(
    accepted: list[str],
    compile_to: Callable[[Path], Path],
    *,
    host: str | None,
    profile: str,
    params: dict,
    experiment: str,
    schedule: str | None = None,
    run_name: str | None = None,
    pipeline_name: str = "leukemia-mtl",
    enable_caching: bool | None = None,
) -> str:
    """Compile (`compile_to(path)`) and create a run (or, with a cron `schedule`, a recurring run).

    `accepted` are the DAG's own parameters. Auth follows kfp's conventions: KF_PIPELINES_ENDPOINT
    when no host is given, a bearer token in KF_PIPELINES_TOKEN (e.g. a service-account token in
    CI), or kfp's own OAuth variables. `enable_caching` False: every task runs (--no-cache); None: as compiled.
    Returns the run's (or recurring run's) id.
    """
    import kfp

    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes {', '.join(accepted)}")
    params = {"profile": profile, **params}
    check_run_parameters(params)  # here, not in the cluster's first task after a node has spun up
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_to(Path(tmp) / "pipeline.yaml")
        if enable_caching is False:
            _without_caching(package)
        client = kfp.Client(host=host, existing_token=os.environ.get("KF_PIPELINES_TOKEN") or None)
        name = run_name or f"{pipeline_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if schedule:
            experiment_id = client.create_experiment(experiment).experiment_id
            job = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=name,
                cron_expression=schedule,
                pipeline_package_path=str(package),
                params=params,
                enable_caching=enable_caching,
            )
            return job.recurring_run_id
        return client.create_run_from_pipeline_package(
            str(package), arguments=params, run_name=name, experiment_name=experiment, enable_caching=enable_caching
        ).run_id
