"""What a Kubeflow cluster gets, checked without one: compiled YAML (pipeline and Kubernetes
platform spec), Dockerfiles (read and linted), manifests (rendered and schema-validated), and
submission through the real kfp.Client to a fake API server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from fake_kfp import FakeKfpServer
from helpers import PLANTED_ACCESS_KEY, PLANTED_SECRET_KEY
from leukemia_mtl.config import PROFILES, ClusterConfig, ImageConfig
from runners.placement import MINIO_ENV

REPO = Path(__file__).resolve().parents[1]
CARD_STAGES = {
    "ingest",
    "preprocess",
    "segment",
    "split",
    "augment",
    "stage 1",
    "stage 2",
    "stage 3 detection",
    "stage 3 FAB",
    "classical detection",
    "classical FAB",
    "crossval",
    "ttest",
    "release",
    "report",
}
GPU_STAGES = {
    "segment",
    "stage 1",
    "stage 2",
    "stage 3 detection",
    "stage 3 FAB",
    "classical detection",
    "classical FAB",
}
STORAGE_STAGES = {"ingest", "stage 1", "classical detection", "classical FAB", "release"}


def _compiled(tmp_path: Path, profile: str, overrides: dict | None = None):
    path = pipeline.compile_pipeline(tmp_path / f"{profile}.yaml", profile, overrides)
    text = path.read_text()
    pipeline_doc, platform_doc = list(yaml.safe_load_all(text))
    spec = json_format.ParseDict(pipeline_doc, pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(platform_doc, pipeline_spec_pb2.PlatformSpec())
    return text, spec, platform


def _tasks_by_display(spec) -> dict:
    """{display name: (task spec, executor label)} over the root DAG and the loop's DAG."""
    tasks = {}
    for component in [spec.root] + list(spec.components.values()):
        for task in component.dag.tasks.values():
            if task.component_ref.name.startswith("comp-for-loop"):
                continue
            executor = spec.components[task.component_ref.name].executor_label
            tasks[task.task_info.name] = (task, executor)
    return tasks


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.slow
def test_every_profile_compiles_to_specs_a_cluster_accepts(tmp_path, s3_env, profile):
    text, spec, platform = _compiled(tmp_path, profile)
    deployment = json_format.ParseDict(
        json_format.MessageToDict(spec.deployment_spec), pipeline_spec_pb2.PipelineDeploymentConfig()
    )
    kubernetes = {
        name: json_format.ParseDict(
            json_format.MessageToDict(config), kubernetes_executor_config_pb2.KubernetesExecutorConfig()
        )
        for name, config in platform.platforms["kubernetes"].deployment_spec.executors.items()
    }
    tasks = _tasks_by_display(spec)
    assert set(tasks) >= CARD_STAGES  # every stage of the card is its own task
    images = ImageConfig()
    cluster = ClusterConfig()
    for display, (task, executor) in tasks.items():
        container = deployment.executors[executor].container
        config = kubernetes.get(executor, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
        gpu = display in GPU_STAGES
        assert container.image == (images.gpu_image if gpu else images.cpu_image), display
        assert container.resources.resource_cpu_request and container.resources.resource_memory_limit, display
        assert task.retry_policy.max_retry_count == cluster.retries, display
        if gpu:
            assert container.resources.accelerator.resource_type == "nvidia.com/gpu", display
            assert int(container.resources.accelerator.resource_count) == PROFILES[profile].train.gpus
            assert dict(config.node_selector.labels) == {"leukemia-mtl/pool": "gpu"}, display
            assert [(t.key, t.operator, t.effect) for t in config.tolerations] == [
                ("nvidia.com/gpu", "Exists", "NoSchedule")
            ]
        else:
            assert not container.resources.accelerator.resource_type and not config.tolerations, display
        secrets = {s.secret_name for s in config.secret_as_env}
        assert secrets == ({cluster.minio_secret} if display in STORAGE_STAGES else set()), display
    # artifacts flow as in the DAG
    assert (
        tasks["stage 2"][0]
        .inputs.artifacts["previous"]
        .task_output_artifact.producer_task.startswith("finetune-from-imagenet")
    )
    crossval = tasks["crossval"][0]
    assert {"stage3_detection", "stage3_fab", "classical_detection", "classical_fab", "baselines"} == set(
        crossval.inputs.artifacts
    )
    assert crossval.inputs.artifacts["baselines"].task_output_artifact.producer_task == "baseline"
    assert tasks["report"][0].inputs.artifacts["release_manifest"].task_output_artifact.producer_task == "release"
    assert (
        tasks["ingest"][0].caching_options.enable_cache is False
        and tasks["release"][0].caching_options.enable_cache is False
    )
    # no credential ever reaches the YAML, only the secret's name
    assert PLANTED_SECRET_KEY not in text and PLANTED_ACCESS_KEY not in text


@pytest.mark.slow
def test_compile_options_set_images_gpu_placement_and_secret(tmp_path):
    out = tmp_path / "p.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "pipeline.py",
            "--compile",
            "--output",
            str(out),
            "--image-registry",
            "registry.lab:5000/ml",
            "--image-tag",
            "2026.11",
            "--gpu-node-label",
            "pool=a100",
            "--gpu-toleration",
            "gpu=yes:NoExecute",
            "--minio-secret",
            "lab-minio",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert (
        "registry.lab:5000/ml/leukemia-mtl-gpu:2026.11" in text
        and "registry.lab:5000/ml/leukemia-mtl-cpu:2026.11" in text
    )
    platform = list(yaml.safe_load_all(text))[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    training = platform["exec-finetune-from-previous"]
    assert training["nodeSelector"] == {"labels": {"pool": "a100"}}
    assert training["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoExecute"}]
    assert platform["exec-ingest"]["secretAsEnv"][0]["secretName"] == "lab-minio"
    bad = subprocess.run(
        [sys.executable, "pipeline.py", "--compile", "--output", str(out), "--gpu-toleration", "nocolon"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "KEY[=VALUE]:NoSchedule" in bad.stderr and "Traceback" not in bad.stderr
    for flag, value, words in (
        ("--image-registry", "Registry.Lab/ML", "is not host[:port][/path] in lower case"),
        ("--image-tag", "v1 with spaces", "is not a Docker tag"),
    ):
        refused = subprocess.run(
            [sys.executable, "pipeline.py", "--compile", "--output", str(tmp_path / "bad.yaml"), flag, value],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert refused.returncode == 1 and words in refused.stderr and "Traceback" not in refused.stderr
        assert refused.stderr.count("error:") == 1 and not (tmp_path / "bad.yaml").exists()


@pytest.mark.slow
def test_submit_creates_a_run_and_a_recurring_run_through_kfp_client(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "token-from-ci")
    with FakeKfpServer() as server:
        run = subprocess.run(
            [
                sys.executable,
                "pipeline.py",
                "--submit",
                "--host",
                server.url,
                "--experiment",
                "retraining",
                "--param",
                "smears=s3://raw/ALL_IDB1",
                "--param",
                'backbones=["Xception"]',
                "--image-tag",
                "v9",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**__import__("os").environ},
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert "run run-42 created in experiment retraining" in run.stdout
        created = next(r for r in server.requests if r["path"] == "/apis/v2beta1/runs")
        assert created["authorization"] == "Bearer token-from-ci"
        assert created["body"]["experiment_id"] == "exp-1"
        parameters = created["body"]["runtime_config"]["parameters"]
        assert parameters == {"smears": "s3://raw/ALL_IDB1", "backbones": ["Xception"], "profile": "paper"}
        images = json.dumps(created["body"]["pipeline_spec"])
        assert "leukemia-mtl-gpu:v9" in images

        scheduled = subprocess.run(
            [sys.executable, "pipeline.py", "--submit", "--host", server.url, "--schedule", "0 0 3 * * 1"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert scheduled.returncode == 0, scheduled.stderr[-2000:]
        assert "recurring run rr-7 created" in scheduled.stdout
        recurring = next(r for r in server.requests if r["path"] == "/apis/v2beta1/recurringruns")
        assert recurring["body"]["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"

    bad = subprocess.run(
        [sys.executable, "pipeline.py", "--submit", "--host", server.url, "--param", "nope=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "unknown pipeline parameter(s) ['nope']" in bad.stderr
    down = subprocess.run(
        [sys.executable, "pipeline.py", "--submit", "--host", "http://127.0.0.1:9"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert down.returncode == 1 and "error: submitting to http://127.0.0.1:9 failed" in down.stderr
    assert "Traceback" not in down.stderr


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render manifests/ (Debian: apt-get install kubernetes-client)"
    return kubectl


def test_manifests_render_and_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    rendered = subprocess.run([_kubectl(), "kustomize", str(REPO / "manifests")], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    documents += list(yaml.safe_load_all((REPO / "manifests" / "examples" / "gpu-node.yaml").read_text()))
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == ["CronJob", "Job", "Node", "Role", "RoleBinding", "Secret", "ServiceAccount", "ServiceAccount"]
    for document in documents:
        kubernetes_validate.validate(document, "1.32", strict=True)
    by_kind = {d["kind"]: d for d in documents}
    cluster, images = ClusterConfig(), ImageConfig()
    # the manifests match what --compile emits by default
    assert by_kind["Secret"]["metadata"]["name"] == cluster.minio_secret
    assert set(by_kind["Secret"]["stringData"]) == set(MINIO_ENV)
    assert all(v.startswith(("REPLACE-", "http://minio-service")) for v in by_kind["Secret"]["stringData"].values())
    key, value = cluster.gpu_node_label.split("=")
    assert by_kind["Node"]["metadata"]["labels"][key] == value
    taint_keys = {t["key"] for t in by_kind["Node"]["spec"]["taints"]}
    assert {t.split(":")[0].split("=")[0] for t in cluster.gpu_tolerations} <= taint_keys
    containers = [
        by_kind["Job"]["spec"]["template"]["spec"]["containers"][0],
        by_kind["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0],
    ]
    assert {c["image"] for c in containers} == {images.cpu_image}
    assert containers[0]["command"][:3] == ["python", "-m", "leukemia_mtl"]  # a CLI command that exists:
    assert (
        "buckets"
        in subprocess.run(
            [sys.executable, "-m", "leukemia_mtl", "--help"], cwd=REPO, capture_output=True, text=True
        ).stdout
    )
    assert containers[1]["command"][:3] == ["python", "pipeline.py", "--submit"]
    assert re.search(r"^\s*-\s*--profile=paper", (REPO / "manifests" / "retraining-cronjob.yaml").read_text(), re.M)


REGISTRY, TAG = "registry.lab:5000/ml", "2026.11-rc1"


@pytest.mark.slow
def test_a_registry_and_tag_reach_every_image_of_the_compiled_pipeline_and_the_rendered_manifests(tmp_path):
    import kubernetes_validate

    default, wanted = ImageConfig(), ImageConfig(registry=REGISTRY, tag=TAG)
    text, _, _ = _compiled(tmp_path, "paper", {"image.registry": REGISTRY, "image.tag": TAG})
    executors = next(yaml.safe_load_all(text))["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {wanted.cpu_image, wanted.gpu_image}
    assert default.registry not in text  # not in a component's base image either

    # the tracked manifests name the images only by their logical names; kustomization.yaml holds the defaults
    for path in sorted((REPO / "manifests").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            assert default.registry not in path.read_text(), path.name
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [
        {"name": name, "newName": f"{default.registry}/{name}", "newTag": default.tag}
        for name in (default.cpu_name, default.gpu_name)
    ]

    output, overlay = tmp_path / "manifests.yaml", tmp_path / "overlay"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.manifests",
            "--image-registry",
            REGISTRY,
            "--image-tag",
            TAG,
            "--output",
            str(output),
            "--overlay",
            str(overlay),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    rendered = output.read_text()
    assert rendered == subprocess.run([_kubectl(), "kustomize", str(overlay)], capture_output=True, text=True).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert sorted(d["kind"] for d in documents) == [
        "CronJob",
        "Job",
        "Role",
        "RoleBinding",
        "Secret",
        "ServiceAccount",
        "ServiceAccount",
    ]
    for document in documents:
        kubernetes_validate.validate(document, "1.32", strict=True)
    by_kind = {d["kind"]: d for d in documents}
    job = by_kind["Job"]["spec"]["template"]["spec"]["containers"][0]
    cron = by_kind["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == cron["image"] == wanted.cpu_image
    # the CronJob compiles its pipeline for the images it runs in itself
    assert cron["command"][:3] == ["python", "pipeline.py", "--submit"]
    assert cron["command"][-2:] == [f"--image-registry={REGISTRY}", f"--image-tag={TAG}"]
    assert default.registry not in rendered and f":{default.tag}" not in rendered

    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "runners.manifests",
            "--image-tag",
            "a b",
            "--output",
            str(output),
            "--overlay",
            str(overlay),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 1
        and bad.stderr == "error: image tag 'a b' is not a Docker tag (letters, digits, '_', '.', '-'; at most 128)\n"
    )
    assert output.read_text() == rendered  # a refused rendering leaves the last good one


def test_every_parameter_the_kfp_ui_shows_has_a_description(tmp_path):
    document = next(yaml.safe_load_all(pipeline.compile_pipeline(tmp_path / "p.yaml").read_text()))
    offered = document["root"]["inputDefinitions"]["parameters"]
    assert set(offered) == {"smears", "cells", "profile", "overrides", "backbones"}
    for name, parameter in offered.items():
        assert len(parameter.get("description", "")) > 20, name
    assert "s3://bucket/prefix" in offered["smears"]["description"] and "'none'" in offered["cells"]["description"]
    described = 0
    for component_name, component in document["components"].items():
        if "executorLabel" not in component:
            continue  # the loop's own DAG: its inputs are the pipeline's, passed on
        for kind in ("parameters", "artifacts"):
            for name, spec in component.get("inputDefinitions", {}).get(kind, {}).items():
                assert spec.get("description"), f"{component_name}: input {name} has no description"
                described += 1
    assert described > 40


@pytest.mark.slow
def test_the_cluster_pipeline_offers_no_cache_key_and_the_local_one_marks_it_internal(tmp_path):
    document = next(yaml.safe_load_all(pipeline.compile_pipeline(tmp_path / "p.yaml").read_text()))
    assert "data_version" not in document["root"]["inputDefinitions"]["parameters"]
    ingest = document["root"]["dag"]["tasks"]["ingest"]
    assert ingest["inputs"]["parameters"]["data_version"] == {"runtimeValue": {"constant": ""}}
    assert not ingest["cachingOptions"].get("enableCache")  # and ingest is never cached there
    local = pipeline.build_pipeline(profile="demo").component_spec.inputs  # what the local runner fills in
    assert list(local) == ["smears", "cells", "profile", "overrides", "data_version", "backbones"]
    assert (
        local["data_version"].description.startswith("Internal:")
        and "leave it empty" in local["data_version"].description
    )
    with pytest.raises(ValueError, match="cache_ingest needs data_version"):
        pipeline.build_pipeline(profile="demo", cluster=True, cache_ingest=True)


@pytest.mark.parametrize(
    "secret, keys, endpoint",
    [
        (ClusterConfig().minio_secret, {name: name for name in MINIO_ENV}, None),
        # KFP's own MinIO: its Secret's keys under their names there, the endpoint its Service's
        (
            "mlpipeline-minio-artifact",
            {"accesskey": "MINIO_ACCESS_KEY", "secretkey": "MINIO_SECRET_KEY"},
            "http://minio-service.kubeflow:9000",
        ),
    ],
)
@pytest.mark.slow
def test_a_storage_tasks_secret_is_optional_so_its_pod_starts_without_it(tmp_path, secret, keys, endpoint):
    text, spec, _ = _compiled(tmp_path, "paper", {"cluster.minio_secret": secret})
    pipeline_doc, platform_doc = yaml.safe_load_all(text)
    kubernetes = platform_doc["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for display, (_, executor) in _tasks_by_display(spec).items():
        if display not in STORAGE_STAGES:
            continue
        [secret_env] = kubernetes[executor]["secretAsEnv"]
        assert secret_env["secretName"] == secret and secret_env["optional"] is True, display
        assert {k["secretKey"]: k["envVar"] for k in secret_env["keyToEnv"]} == keys, display
        env = {
            e["name"]: e["value"]
            for e in pipeline_doc["deploymentSpec"]["executors"][executor]["container"].get("env", [])
        }
        assert env.get("MINIO_ENDPOINT") == endpoint, display


def test_without_the_storage_variables_only_a_task_that_needs_object_storage_stops_naming_them(
    tmp_path, monkeypatch, capsys
):
    """What a pod sees whose optional Secret does not exist: no MINIO_* variables at all."""
    from kfp.dsl import Artifact, Dataset, Metrics

    from components.ingest import ingest
    from helpers import TINY
    from leukemia_mtl.data.storage import STORAGE_ENV

    for name in STORAGE_ENV:
        monkeypatch.delenv(name, raising=False)

    def run(smears: str, folder: str) -> dict:
        artifacts = {
            name: kind(name=name, uri=str(tmp_path / folder / name))
            for name, kind in (("dataset", Dataset), ("metrics", Metrics), ("summary", Artifact))
        }
        ingest.python_func(
            smears=smears, cells="none", profile="demo", overrides=json.dumps(TINY), data_version="", **artifacts
        )
        return artifacts

    assert run("synthetic", "generated")["dataset"].metadata["images"] == TINY["synth.n_smears"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run("s3://leukemia-raw/ALL_IDB1", "stored")
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and err.count("error:") == 1 and "Traceback" not in err
    assert "object storage is not configured: set MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY" in err


def _upstream(jobs: dict, name: str) -> list[str]:
    """The jobs `name` waits for, directly or not, each after the jobs it waits for itself."""
    needs = jobs[name].get("needs", [])
    order: list[str] = []
    for job in [needs] if isinstance(needs, str) else needs:
        order += [j for j in _upstream(jobs, job) + [job] if j not in order]
    return order


def _steps_before(jobs: dict, name: str, words: str) -> list[str]:
    """The run lines that have finished, in order, when job `name`'s step running `words` starts: every
    step of the jobs it waits for, and its own earlier steps."""
    runs = [s.get("run", "") for job in _upstream(jobs, name) for s in jobs[job]["steps"]]
    own = [s.get("run", "") for s in jobs[name]["steps"]]
    return runs + own[: next(i for i, run in enumerate(own) if words in run)]


def test_ci_workflow_tests_builds_and_pushes_the_images_then_compiles_and_submits_for_them():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "retrain.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on:` as True
    assert set(triggers["push"]["paths"]) >= {
        "leukemia_mtl/**",
        "components/**",
        "runners/**",
        "pipeline.py",
        "docker/**",
        "data/**",
    }
    jobs = workflow["jobs"]
    joined = "\n".join(s.get("run", "") for job in jobs.values() for s in job["steps"])
    assert "make test" in joined and "pipeline.py --compile" in joined and "pipeline.py --submit" in joined
    assert "secrets.KF_PIPELINES_TOKEN" in json.dumps(workflow)
    sha = 'IMAGE_REGISTRY="${{ vars.IMAGE_REGISTRY }}" IMAGE_TAG="${{ github.sha }}"'
    tagged = '--image-registry "${{ vars.IMAGE_REGISTRY }}" --image-tag "${{ github.sha }}"'
    for mode in ("pipeline.py --compile", "pipeline.py --submit"):
        job = next(name for name, job in jobs.items() if any(mode in s.get("run", "") for s in job["steps"]))
        step = next(s["run"] for s in jobs[job]["steps"] if mode in s.get("run", ""))
        assert tagged in " ".join(step.split()), mode  # the run names the images this commit pushed
        before = _steps_before(jobs, job, mode)
        built = [i for i, run in enumerate(before) if "make images" in run and sha in run]
        pushed = [i for i, run in enumerate(before) if "make push" in run and sha in run]
        assert built and pushed and built[0] < pushed[0], (
            f"{mode}: both images built, then pushed, with the sha tag first"
        )
        assert any("make test" in run for run in before[: built[0]]), "only a tested commit's images are pushed"
    pusher = next(job for job in jobs.values() if any("make push" in s.get("run", "") for s in job["steps"]))
    uses = [s.get("uses", "") for s in pusher["steps"]]
    login = next(i for i, use in enumerate(uses) if use.startswith("docker/login-action@"))
    assert login < next(i for i, s in enumerate(pusher["steps"]) if "make push" in s.get("run", ""))
    assert pusher["permissions"]["packages"] == "write"  # ghcr.io with the workflow's own token


@pytest.mark.parametrize("host", ["http://admin:hunter2@127.0.0.1:1", "admin:hunter2@127.0.0.1:1"])
def test_a_host_with_credentials_is_refused_without_echoing_them(host, capsys):
    code = pipeline.main(["--submit", "--host", host])
    out, err = capsys.readouterr()
    assert code == 1 and "***@127.0.0.1:1 carries credentials; give the host alone" in err
    assert "hunter2" not in out + err and "Traceback" not in err


@pytest.mark.parametrize(
    "param, words",
    [
        ('overrides={"model.backbones": ["ResNet"]}', "unknown backbone 'ResNet'"),
        ("smears=", "smears: is empty"),
    ],
)
@pytest.mark.slow
def test_a_submitted_runs_settings_and_inputs_are_checked_before_anything_is_sent(param, words, capsys):
    code = pipeline.main(["--submit", "--host", "http://127.0.0.1:1", "--param", param])
    err = capsys.readouterr().err
    assert code == 1 and words in err and "Traceback" not in err and "submitting to" not in err


@pytest.mark.slow
def test_set_with_compile_becomes_the_runs_default_settings_or_is_refused(tmp_path, capsys):
    output = tmp_path / "pipeline.yaml"
    assert pipeline.main(["--compile", "--set", "split.folds=3", "--output", str(output)]) == 0
    spec = next(yaml.safe_load_all(output.read_text()))  # the pipeline spec; platform config follows
    default = spec["root"]["inputDefinitions"]["parameters"]["overrides"]["defaultValue"]
    assert json.loads(default) == {"split.folds": 3}  # applied by every task at run time, never dropped
    assert pipeline.main(["--compile", "--set", "split.folds=1", "--output", str(tmp_path / "bad.yaml")]) == 1
    assert "setting 'split.folds' must be at least 2, got 1" in capsys.readouterr().err
    assert not (tmp_path / "bad.yaml").exists()


@pytest.mark.parametrize(
    "arguments, words",
    [
        (
            ["--submit", "--until", "preprocess"],
            "--until is not used by --submit (it is for --run-local): a submitted run",
        ),
        (["--submit", "--output-dir", "runs/x"], "--output-dir is not used by --submit"),
        (["--run-local", "--param", "smears=s3://a/b"], "--param is not used by --run-local (it is for --submit)"),
        (["--run-local", "--host", "http://127.0.0.1:1"], "--host is not used by --run-local"),
        (
            ["--compile", "--smears", "s3://a/b"],
            "--smears is not used by --compile (it is for --submit and --run-local)",
        ),
        (["--compile", "--runner", "docker"], "--runner is not used by --compile"),
        (["--run-local", "--output-dir", ""], "an empty path"),
        (["--run-local", "--image-tag", "v2"], "--image-tag is not used by --run-local's default runner"),
    ],
)
def test_each_mode_refuses_the_options_it_would_not_use(arguments, words, capsys):
    with pytest.raises(SystemExit) as refused:
        pipeline.main(arguments)
    assert refused.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.slow
def test_submit_sends_the_labs_data_and_no_cache_or_refuses_a_folder_the_cluster_cannot_see(tmp_path, capsys):
    with FakeKfpServer() as server:
        code = pipeline.main(
            ["--submit", "--host", server.url, "--smears", "s3://lab/idb1", "--cells", "none", "--no-cache"]
        )
        assert code == 0, capsys.readouterr().err
        created = next(r for r in server.requests if r["path"] == "/apis/v2beta1/runs")
        parameters = created["body"]["runtime_config"]["parameters"]
        assert parameters == {"smears": "s3://lab/idb1", "cells": "none", "profile": "paper"}
        spec = json.dumps(created["body"]["pipeline_spec"])  # every task, those inside the folds' loop too
        assert '"enableCache": true' not in spec and '"cachingOptions": {}' in spec  # proto3 omits false
    for arguments, words in (
        (["--smears", str(tmp_path)], "a local folder is not on the cluster"),
        (["--data", "s3://a/b", "--param", "smears=s3://a/c"], "--smears and --param smears="),
    ):
        assert pipeline.main(["--submit", "--host", "http://127.0.0.1:1", *arguments]) == 1
        err = capsys.readouterr().err
        assert words in err and "submitting to" not in err and "Traceback" not in err
