"""manifests/tuning (the search as a Katib Experiment), checked without a cluster: rendered by kustomize, loaded
into the kubeflow-katib SDK's models with nothing dropped (its CRD carries no schema: ../shared/crds/README.md),
held to the rules of Katib's admission webhook (pkg/webhook/v1beta1/experiment/validator), its trial Job (trial
parameters substituted as Katib does) validated against the Kubernetes schemas, and what it runs cross-checked
against the CLI, the pipeline's tune step's space and the training's GPU placement."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from leukemia_mtl.cli import build_parser
from leukemia_mtl.config import ClusterConfig, ImageConfig, get_profile, parse_overrides
from leukemia_mtl.tune import SPACE, objective_stages, search_space

REPO = Path(__file__).resolve().parents[1]
TUNING = REPO / "manifests" / "tuning"
PARAMETER = re.compile(r"\$\{trialParameters\.([^}]+)\}")  # Katib's TrialTemplateParamReplaceFormatRegex
# the suggestion services of Katib's default katib-config, and the settings its Optuna-based tpe service accepts
ALGORITHMS = {
    "random",
    "grid",
    "hyperband",
    "bayesianoptimization",
    "tpe",
    "multivariate-tpe",
    "cmaes",
    "sobol",
    "enas",
    "darts",
    "pbt",
}
TPE_SETTINGS = {"n_startup_trials", "n_ei_candidates", "random_state"}
COLLECTORS = {"StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None"}


def _experiment() -> dict:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render manifests/tuning (Debian: apt-get install kubernetes-client)"
    rendered = subprocess.run([kubectl, "kustomize", str(TUNING)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    [experiment] = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    return experiment


def _sdk_round_trip(document: dict) -> dict:
    """The document as the SDK's V1beta1Experiment reads it, serialised back: a field the SDK does not know is dropped."""
    from kubeflow.katib import ApiClient

    client = ApiClient()

    class Response:
        data = json.dumps(document)

    model = client.deserialize(Response(), "V1beta1Experiment")
    return client.sanitize_for_serialization(model)


def webhook_errors(experiment: dict) -> list[str]:
    """What Katib's validating webhook (ValidateExperiment) would refuse, for a Job trial with parameters."""
    errors = []
    spec = experiment.get("spec", {})
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", experiment.get("metadata", {}).get("name", "")):
        errors.append("metadata.name: lower case alphanumerics and '-', starting with a letter")
    max_trials, parallel, max_failed = (
        spec.get("maxTrialCount"),
        spec.get("parallelTrialCount"),
        spec.get("maxFailedTrialCount"),
    )
    if max_trials is not None and max_trials <= 0:
        errors.append("spec.maxTrialCount: must be greater than 0")
    if parallel is not None and (parallel <= 0 or (max_trials is not None and parallel > max_trials)):
        errors.append("spec.parallelTrialCount: above 0 and at most spec.maxTrialCount")
    if max_failed is not None and (max_failed < 0 or (max_trials is not None and max_failed > max_trials)):
        errors.append("spec.maxFailedTrialCount: at least 0 and at most spec.maxTrialCount")
    objective = spec.get("objective") or {}
    if objective.get("type") not in ("maximize", "minimize"):
        errors.append("spec.objective.type: maximize or minimize")
    if not objective.get("objectiveMetricName"):
        errors.append("spec.objective.objectiveMetricName: must be specified")
    if objective.get("objectiveMetricName") in (objective.get("additionalMetricNames") or []):
        errors.append("spec.objective.additionalMetricNames: must not hold the objective")
    algorithm = spec.get("algorithm") or {}
    if algorithm.get("algorithmName") not in ALGORITHMS:
        errors.append(f"spec.algorithm.algorithmName: {algorithm.get('algorithmName')!r} has no suggestion service")
    if algorithm.get("algorithmName") == "tpe":
        for setting in algorithm.get("algorithmSettings") or []:
            if setting["name"] not in TPE_SETTINGS or not str(setting["value"]).isdigit():
                errors.append(
                    f"spec.algorithm.algorithmSettings: {setting} (tpe takes {sorted(TPE_SETTINGS)}, whole numbers)"
                )
    if spec.get("resumePolicy", "") not in ("", "Never", "LongRunning", "FromVolume"):
        errors.append("spec.resumePolicy: invalid ResumePolicyType")
    parameters = spec.get("parameters") or []
    if not parameters:
        errors.append("spec.parameters: must be specified")
    for i, parameter in enumerate(parameters):
        where, space = f"spec.parameters[{i}]", parameter.get("feasibleSpace") or {}
        kind = parameter.get("parameterType")
        if kind not in ("int", "double", "categorical", "discrete"):
            errors.append(f"{where}.parameterType: {kind!r} is not supported")
        if space.get("distribution", "") not in ("", "uniform", "logUniform", "normal", "logNormal"):
            errors.append(f"{where}.feasibleSpace.distribution: not supported")
        if not space:
            errors.append(f"{where}.feasibleSpace: must be specified")
        elif kind in ("int", "double") and (space.get("list") or not space.get("min") or not space.get("max")):
            errors.append(f"{where}.feasibleSpace: min and max, no list, for {kind}")
        elif kind in ("categorical", "discrete") and (space.get("min") or space.get("max") or space.get("step")):
            errors.append(f"{where}.feasibleSpace: a list, no min, max or step, for {kind}")
    template = spec.get("trialTemplate") or {}
    if not template.get("primaryContainerName"):
        errors.append("spec.trialTemplate.primaryContainerName: must be specified")
    if not (template.get("successCondition") and template.get("failureCondition")):
        errors.append("spec.trialTemplate: successCondition and failureCondition must be specified")
    text = json.dumps(template.get("trialSpec"))
    names = {p["name"] for p in parameters}
    seen_names, seen_refs = set(), set()
    for i, trial_parameter in enumerate(template.get("trialParameters") or []):
        name, reference = trial_parameter.get("name", ""), trial_parameter.get("reference", "")
        if not name or not reference or "{" in name or "}" in name or name in seen_names or reference in seen_refs:
            errors.append(f"spec.trialTemplate.trialParameters[{i}]: a unique name and reference")
        seen_names.add(name)
        seen_refs.add(reference)
        if reference not in names:
            errors.append(f"spec.trialTemplate.trialParameters[{i}].reference: {reference!r} is not in spec.parameters")
        if f"${{trialParameters.{name}}}" not in text:
            errors.append(f"spec.trialTemplate.trialParameters[{i}].name: {name!r} is not used in the trialSpec")
        text = text.replace(f"${{trialParameters.{name}}}", "test-value")
    left = PARAMETER.findall(text)
    if left:
        errors.append(f"spec.trialTemplate: {left} in the trialSpec are not in trialParameters")
    job = template.get("trialSpec") or {}
    if job.get("metadata", {}).get("name") or job.get("metadata", {}).get("namespace"):
        errors.append("spec.trialTemplate: metadata.name and metadata.namespace must be omitted")
    if not (job.get("apiVersion") and job.get("kind")):
        errors.append("spec.trialTemplate: apiVersion and kind must be specified")
    collector = (spec.get("metricsCollectorSpec") or {}).get("collector", {}).get("kind", "StdOut")
    if collector not in COLLECTORS:
        errors.append(f"spec.metricsCollectorSpec.collector.kind: invalid {collector!r}")
    formats = (((spec.get("metricsCollectorSpec") or {}).get("source") or {}).get("filter") or {}).get(
        "metricsFormat"
    ) or []
    for fmt in formats:
        try:
            compiled = re.compile(fmt)
        except re.error as exc:
            errors.append(f"metricsFormat {fmt!r}: {exc}")
            continue
        if not re.match(r".*\(.*\).*\(.*\).*", fmt) or compiled.groups < 2:
            errors.append(f"metricsFormat {fmt!r}: two top subexpressions are required")
    return errors


def _trial_job(experiment: dict, values: dict[str, str]) -> dict:
    """The trial's Job as Katib makes it: every ${trialParameters.X} replaced by its parameter's value."""
    by_reference = {p["reference"]: p["name"] for p in experiment["spec"]["trialTemplate"]["trialParameters"]}
    text = json.dumps(experiment["spec"]["trialTemplate"]["trialSpec"])
    for reference, value in values.items():
        text = text.replace(f"${{trialParameters.{by_reference[reference]}}}", value)
    job = json.loads(text)
    job.setdefault("metadata", {})["name"] = "leukemia-mtl-tune-abc123"
    return job


def _sample(parameter: dict, end: str) -> str:
    space = parameter["feasibleSpace"]
    return space["list"][0 if end == "min" else -1] if "list" in space else space[end]


@pytest.fixture(scope="module")
def experiment() -> dict:
    return _experiment()


def test_the_experiment_loads_into_katibs_sdk_models_and_passes_its_webhook_rules(experiment):
    assert experiment["apiVersion"] == "kubeflow.org/v1beta1" and experiment["kind"] == "Experiment"
    assert experiment["metadata"]["namespace"] == "kubeflow"
    round_trip = _sdk_round_trip(experiment)
    assert round_trip == experiment  # every field is one the SDK's models know, with the type they give it
    assert webhook_errors(experiment) == []
    spec = experiment["spec"]
    assert spec["algorithm"]["algorithmName"] in ("tpe", "bayesianoptimization")
    assert spec["metricsCollectorSpec"]["collector"]["kind"] == "StdOut"


@pytest.mark.parametrize(
    "breakage, words",
    [
        (lambda s: s["objective"].update(additionalMetricNames=["objective"]), "must not hold the objective"),
        (lambda s: s.update(parallelTrialCount=40), "parallelTrialCount"),
        (lambda s: s["algorithm"].update(algorithmName="gradient-descent"), "no suggestion service"),
        (lambda s: s["parameters"][0]["feasibleSpace"].update(list=["1"]), "no list"),
        (lambda s: s["trialTemplate"]["trialParameters"].pop(), "not in trialParameters"),
        (lambda s: s["trialTemplate"]["trialParameters"][0].update(reference="lr"), "not in spec.parameters"),
        (lambda s: s["trialTemplate"].pop("successCondition"), "successCondition"),
    ],
)
def test_the_webhook_rules_refuse_a_broken_experiment(experiment, breakage, words):
    broken = copy.deepcopy(experiment)
    breakage(broken["spec"])
    assert any(words in error for error in webhook_errors(broken)), webhook_errors(broken)


def test_a_misspelt_field_is_dropped_by_the_sdk_and_so_caught(experiment):
    broken = copy.deepcopy(experiment)
    broken["spec"]["paralelTrialCount"] = 3
    assert _sdk_round_trip(broken) != broken


def test_the_trial_job_runs_the_projects_entry_point_on_the_training_gpu_pool(experiment):
    import kubernetes_validate

    parameters = experiment["spec"]["parameters"]
    for end in ("min", "max"):
        job = _trial_job(experiment, {p["name"]: _sample(p, end) for p in parameters})
        kubernetes_validate.validate(job, "1.32", strict=True)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["name"] == experiment["spec"]["trialTemplate"]["primaryContainerName"]
    assert container["image"] == ImageConfig().gpu_image
    cluster = ClusterConfig()
    key, value = cluster.gpu_node_label.split("=")
    assert pod["nodeSelector"] == {key: value}
    assert {t["key"] for t in pod["tolerations"]} == {t.split(":")[0].split("=")[0] for t in cluster.gpu_tolerations}
    assert container["resources"]["limits"][cluster.gpu_resource] == "1"
    assert container["envFrom"][0]["secretRef"]["name"] == cluster.minio_secret
    # the command is the CLI's `tune --trial`, and its --set flags set exactly the searched settings
    command = container["command"]
    assert command[:4] == ["python", "-m", "leukemia_mtl", "tune"]
    args = build_parser().parse_args(command[3:])
    params = parse_overrides(args.overrides)
    assert args.trial and set(params) == set(SPACE)  # one trial, at exactly the searched settings
    assert params["train.batch_size"] == int(_sample(next(p for p in parameters if p["name"] == "batch_size"), "max"))
    # Katib's StdOut collector runs the command as `sh -c "<words joined by spaces>"`: every word must survive that
    assert all(shlex.split(word) == [word] for word in command), command
    profile = get_profile(args.profile)
    metrics = experiment["spec"]["objective"]
    # what the trial prints (one NAME=VALUE line per scored stage, then objective=) is what Katib collects
    assert metrics["objectiveMetricName"] == "objective"
    assert metrics["additionalMetricNames"] == [s.key for s in objective_stages(profile)]


def test_the_experiments_space_is_the_pipelines_tune_step_space_for_its_profile(experiment):
    """One space: a Katib search and `--set tune.trials=N` search the same settings over the same ranges."""
    trial_parameters = experiment["spec"]["trialTemplate"]["trialParameters"]
    key_of = {p["reference"]: p["description"] for p in trial_parameters}
    job_profile = (
        build_parser()
        .parse_args(
            _trial_job(experiment, {p["name"]: "1" for p in experiment["spec"]["parameters"]})["spec"]["template"][
                "spec"
            ]["containers"][0]["command"][3:]
        )
        .profile
    )
    space = search_space(get_profile(job_profile))
    assert sorted(key_of.values()) == sorted(space)
    for parameter in experiment["spec"]["parameters"]:
        want, got = space[key_of[parameter["name"]]], parameter["feasibleSpace"]
        if want["type"] == "categorical":
            assert parameter["parameterType"] == "categorical" and [int(v) for v in got["list"]] == want["list"]
        else:
            assert parameter["parameterType"] == want["type"]
            assert float(got["min"]) == want["min"] and float(got["max"]) == want["max"], parameter["name"]
            assert (got.get("distribution") == "logUniform") == want["log"]


def test_the_best_trial_of_a_finished_experiment_becomes_the_pipelines_overrides(experiment, tmp_path):
    from runners.katib import best_overrides, main

    finished = copy.deepcopy(experiment)
    values = {p["name"]: _sample(p, "max") for p in experiment["spec"]["parameters"]}
    finished["status"] = {
        "currentOptimalTrial": {
            "bestTrialName": "leukemia-mtl-tune-abc123",
            "parameterAssignments": [{"name": k, "value": v} for k, v in values.items()],
            "observation": {"metrics": [{"name": "objective", "latest": "0.93", "max": "0.93", "min": "0.93"}]},
        }
    }
    overrides = best_overrides(finished)
    assert (
        set(overrides) == set(SPACE)
        and overrides["train.batch_size"] == 48
        and overrides["train.learning_rate"] == 0.003
    )
    get_profile("paper", overrides)  # what the pipeline's tasks will apply
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(finished))
    assert main([str(path)]) == 0
    finished["status"] = {}
    path.write_text(json.dumps(finished))
    assert main([str(path)]) == 1  # no optimal trial yet: one error line
