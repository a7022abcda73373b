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
from conftest import PLANTED_ACCESS_KEY, PLANTED_SECRET_KEY
from fake_kfp import FakeKfpServer
from leukemia_mtl.config import PROFILES, ClusterConfig, ImageConfig
from runners.placement import MINIO_ENV

REPO = Path(__file__).resolve().parents[1]
CARD_STAGES = {"ingest", "preprocess", "segment", "split", "augment", "stage 1", "stage 2", "stage 3 detection",
               "stage 3 FAB", "classical detection", "classical FAB", "crossval", "ttest", "release", "report"}
GPU_STAGES = {"segment", "stage 1", "stage 2", "stage 3 detection", "stage 3 FAB", "classical detection", "classical FAB"}
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
def test_every_profile_compiles_to_specs_a_cluster_accepts(tmp_path, s3_env, profile):
    text, spec, platform = _compiled(tmp_path, profile)
    deployment = json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), pipeline_spec_pb2.PipelineDeploymentConfig())
    kubernetes = {name: json_format.ParseDict(json_format.MessageToDict(config), kubernetes_executor_config_pb2.KubernetesExecutorConfig())
                  for name, config in platform.platforms["kubernetes"].deployment_spec.executors.items()}
    tasks = _tasks_by_display(spec)
    assert CARD_STAGES <= set(tasks)  # every stage of the card is its own task
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
            assert [(t.key, t.operator, t.effect) for t in config.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
        else:
            assert not container.resources.accelerator.resource_type and not config.tolerations, display
        secrets = {s.secret_name for s in config.secret_as_env}
        assert secrets == ({cluster.minio_secret} if display in STORAGE_STAGES else set()), display
    # artifacts flow as in the DAG
    assert tasks["stage 2"][0].inputs.artifacts["previous"].task_output_artifact.producer_task.startswith("finetune-from-imagenet")
    crossval = tasks["crossval"][0]
    assert {"stage3_detection", "stage3_fab", "classical_detection", "classical_fab", "baselines"} == set(crossval.inputs.artifacts)
    assert crossval.inputs.artifacts["baselines"].task_output_artifact.producer_task == "baseline"
    assert tasks["report"][0].inputs.artifacts["release_manifest"].task_output_artifact.producer_task == "release"
    assert tasks["ingest"][0].caching_options.enable_cache is False and tasks["release"][0].caching_options.enable_cache is False
    # no credential ever reaches the YAML, only the secret's name
    assert PLANTED_SECRET_KEY not in text and PLANTED_ACCESS_KEY not in text


def test_compile_options_set_images_gpu_placement_and_secret(tmp_path):
    out = tmp_path / "p.yaml"
    result = subprocess.run(
        [sys.executable, "pipeline.py", "--compile", "--output", str(out), "--image-registry", "registry.lab:5000/ml",
         "--image-tag", "2026.11", "--gpu-node-label", "pool=a100", "--gpu-toleration", "gpu=yes:NoExecute",
         "--minio-secret", "lab-minio"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "registry.lab:5000/ml/leukemia-mtl-gpu:2026.11" in text and "registry.lab:5000/ml/leukemia-mtl-cpu:2026.11" in text
    platform = list(yaml.safe_load_all(text))[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    training = platform["exec-finetune-from-previous"]
    assert training["nodeSelector"] == {"labels": {"pool": "a100"}}
    assert training["tolerations"] == [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoExecute"}]
    assert platform["exec-ingest"]["secretAsEnv"][0]["secretName"] == "lab-minio"
    bad = subprocess.run([sys.executable, "pipeline.py", "--compile", "--output", str(out), "--gpu-toleration", "nocolon"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and "KEY[=VALUE]:NoSchedule" in bad.stderr and "Traceback" not in bad.stderr


def test_submit_creates_a_run_and_a_recurring_run_through_kfp_client(monkeypatch):
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "token-from-ci")
    with FakeKfpServer() as server:
        run = subprocess.run(
            [sys.executable, "pipeline.py", "--submit", "--host", server.url, "--experiment", "retraining",
             "--param", "smears=s3://raw/ALL_IDB1", "--param", 'backbones=["Xception"]', "--image-tag", "v9"],
            cwd=REPO, capture_output=True, text=True, env={**__import__("os").environ})
        assert run.returncode == 0, run.stderr[-2000:]
        assert "run run-42 created in experiment retraining" in run.stdout
        created = next(r for r in server.requests if r["path"] == "/apis/v2beta1/runs")
        assert created["authorization"] == "Bearer token-from-ci"
        assert created["body"]["experiment_id"] == "exp-1"
        parameters = created["body"]["runtime_config"]["parameters"]
        assert parameters == {"smears": "s3://raw/ALL_IDB1", "backbones": ["Xception"], "profile": "paper"}
        images = json.dumps(created["body"]["pipeline_spec"])
        assert "leukemia-mtl-gpu:v9" in images

        scheduled = subprocess.run([sys.executable, "pipeline.py", "--submit", "--host", server.url, "--schedule", "0 0 3 * * 1"],
                                   cwd=REPO, capture_output=True, text=True)
        assert scheduled.returncode == 0, scheduled.stderr[-2000:]
        assert "recurring run rr-7 created" in scheduled.stdout
        recurring = next(r for r in server.requests if r["path"] == "/apis/v2beta1/recurringruns")
        assert recurring["body"]["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 1"

    bad = subprocess.run([sys.executable, "pipeline.py", "--submit", "--host", server.url, "--param", "nope=1"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown pipeline parameter(s) ['nope']" in bad.stderr
    down = subprocess.run([sys.executable, "pipeline.py", "--submit", "--host", "http://127.0.0.1:9"],
                          cwd=REPO, capture_output=True, text=True)
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
    containers = [by_kind["Job"]["spec"]["template"]["spec"]["containers"][0],
                  by_kind["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]]
    assert {c["image"] for c in containers} == {images.cpu_image}
    assert containers[0]["command"][:3] == ["python", "-m", "leukemia_mtl"]  # a CLI command that exists:
    assert "buckets" in subprocess.run([sys.executable, "-m", "leukemia_mtl", "--help"], cwd=REPO, capture_output=True, text=True).stdout
    assert containers[1]["command"][:3] == ["python", "pipeline.py", "--submit"]
    assert re.search(r"^\s*-\s*--profile=paper", (REPO / "manifests" / "retraining-cronjob.yaml").read_text(), re.M)


def test_ci_workflow_compiles_tests_and_submits_retraining():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "retrain.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on:` as True
    assert set(triggers["push"]["paths"]) >= {"leukemia_mtl/**", "components/**", "pipeline.py", "data/**"}
    steps = [s.get("run", "") for job in workflow["jobs"].values() for s in job["steps"]]
    joined = "\n".join(steps)
    assert "make test" in joined and "pipeline.py --compile" in joined and "pipeline.py --submit" in joined
    assert "secrets.KF_PIPELINES_TOKEN" in json.dumps(workflow)


@pytest.mark.parametrize("host", ["http://admin:hunter2@127.0.0.1:1", "admin:hunter2@127.0.0.1:1"])
def test_a_host_with_credentials_is_refused_without_echoing_them(host, capsys):
    code = pipeline.main(["--submit", "--host", host])
    out, err = capsys.readouterr()
    assert code == 1 and "***@127.0.0.1:1 carries credentials; give the host alone" in err
    assert "hunter2" not in out + err and "Traceback" not in err


@pytest.mark.parametrize("param, words", [
    ('overrides={"model.backbones": ["ResNet"]}', "unknown backbone 'ResNet'"),
    ("smears=", "smears: is empty"),
])
def test_a_submitted_runs_settings_and_inputs_are_checked_before_anything_is_sent(param, words, capsys):
    code = pipeline.main(["--submit", "--host", "http://127.0.0.1:1", "--param", param])
    err = capsys.readouterr().err
    assert code == 1 and words in err and "Traceback" not in err and "submitting to" not in err


def test_set_with_compile_becomes_the_runs_default_settings_or_is_refused(tmp_path, capsys):
    output = tmp_path / "pipeline.yaml"
    assert pipeline.main(["--compile", "--set", "split.folds=3", "--output", str(output)]) == 0
    spec = next(yaml.safe_load_all(output.read_text()))  # the pipeline spec; platform config follows
    default = spec["root"]["inputDefinitions"]["parameters"]["overrides"]["defaultValue"]
    assert json.loads(default) == {"split.folds": 3}  # applied by every task at run time, never dropped
    assert pipeline.main(["--compile", "--set", "split.folds=1", "--output", str(tmp_path / "bad.yaml")]) == 1
    assert "setting 'split.folds' must be at least 2, got 1" in capsys.readouterr().err
    assert not (tmp_path / "bad.yaml").exists()
