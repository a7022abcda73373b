"""manifests/serving (the released model as a KServe InferenceService, CPU and GPU), checked without a
cluster: rendered by kustomize, the InferenceService validated against KServe's own CRD schema
(../shared/crds, pinned in its README), the built-in kinds against the Kubernetes schemas, and what
they say cross-checked against the CLI, the pipeline's GPU placement and the image defaults."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from leukemia_mtl.cli import build_parser
from leukemia_mtl.config import ClusterConfig, ImageConfig

REPO = Path(__file__).resolve().parents[1]
SERVING = REPO / "manifests" / "serving"
CRD = REPO.parent / "shared" / "crds" / "kserve-inferenceservice.yaml"
VARIANTS = {"cpu": SERVING, "gpu": SERVING / "gpu"}
S3_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
S3_ANNOTATIONS = {"serving.kserve.io/s3-endpoint", "serving.kserve.io/s3-usehttps", "serving.kserve.io/s3-region"}


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")  # as tests/test_cluster.py finds it
    assert kubectl, "kubectl is needed to render manifests/serving (Debian: apt-get install kubernetes-client)"
    return kubectl


def _render(folder: Path) -> list[dict]:
    rendered = subprocess.run([_kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    return [d for d in yaml.safe_load_all(rendered.stdout) if d]


def _one(documents: list[dict], kind: str) -> dict:
    [document] = [d for d in documents if d["kind"] == kind]
    return document


def _strict(schema):
    """The schema with unknown fields refused wherever it lists an object's fields, as the API server does
    for a custom resource under `kubectl apply`'s default --validate=strict (without it they are pruned
    silently: a misspelt field would be dropped, not reported)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def isvc_validator():
    import jsonschema

    assert CRD.is_file(), (
        f"KServe's InferenceService CRD is missing: expected {CRD} (the shared/crds folder beside "
        "the repository, see its README); the InferenceService cannot be validated without it"
    )
    crd = yaml.load(CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 2 MB of YAML
    assert crd["spec"]["names"]["kind"] == "InferenceService", CRD
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: _render(folder) for name, folder in VARIANTS.items()}


def _errors(validator, document: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_renders_and_validates_against_the_kserve_crd_and_kubernetes_schemas(
    variant, rendered, isvc_validator
):
    import kubernetes_validate

    documents = rendered[variant]
    assert sorted(d["kind"] for d in documents) == ["InferenceService", "Secret", "ServiceAccount"]
    for document in documents:
        assert document["metadata"]["namespace"] == "kubeflow", document["kind"]
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "leukemia-mtl", document["kind"]
        if document["kind"] == "InferenceService":
            assert document["apiVersion"] == "serving.kserve.io/v1beta1"
            assert not _errors(isvc_validator, document), _errors(isvc_validator, document)
        else:
            kubernetes_validate.validate(document, "1.32", strict=True)
    # the predictor's pod-level fields and its container, as the Pod they become, against Kubernetes' own schema
    predictor = _one(documents, "InferenceService")["spec"]["predictor"]
    pod_fields = {"serviceAccountName", "containers", "nodeSelector", "tolerations", "securityContext"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "predictor"},
        "spec": {k: v for k, v in predictor.items() if k in pod_fields},
    }
    kubernetes_validate.validate(pod, "1.32", strict=True)


@pytest.mark.parametrize(
    "break_it, words",
    [
        (lambda p: p.__setitem__("minReplica", p.pop("minReplicas")), "'minReplica' was unexpected"),
        (lambda p: p.__setitem__("minReplicas", "one"), "'one' is not of type 'integer'"),
        (lambda p: p["containers"][0]["readinessProbe"]["httpGet"].__setitem__("paht", "/x"), "'paht' was unexpected"),
        (lambda p: p["batcher"].__setitem__("maxLatency", "50ms"), "'50ms' is not of type 'integer'"),
        (lambda p: p["containers"][0]["resources"]["limits"].__setitem__("memory", "8 GB"), "does not match"),
    ],
)
def test_the_crd_validator_refuses_a_misspelt_field_or_a_wrong_type(break_it, words, rendered, isvc_validator):
    """Negative controls: the validation above would catch these, so its passing means something."""
    document = copy.deepcopy(_one(rendered["cpu"], "InferenceService"))
    assert not _errors(isvc_validator, document)
    break_it(document["spec"]["predictor"])
    errors = _errors(isvc_validator, document)
    assert any(words in e for e in errors), errors


def test_the_server_is_started_as_the_cli_expects_and_probed_under_its_model_name(rendered):
    for variant, documents in rendered.items():
        predictor = _one(documents, "InferenceService")["spec"]["predictor"]
        assert predictor["serviceAccountName"] == _one(documents, "ServiceAccount")["metadata"]["name"]
        assert predictor["minReplicas"] == 1
        [container] = predictor["containers"]
        assert container["name"] == "kserve-container", variant  # where KServe reads STORAGE_URI from
        assert container["command"] == ["python", "-m", "leukemia_mtl"], variant
        args = build_parser().parse_args(container["args"])  # flags the CLI really has
        assert args.command == "serve" and args.model == "/mnt/models", variant  # where the initializer puts it
        [port] = container["ports"]
        assert port == {"name": "http1", "containerPort": args.port, "protocol": "TCP"}, variant
        probes = {kind: container[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
        assert probes["readinessProbe"]["path"] == f"/v2/models/{args.model_name}/ready", variant
        assert probes["livenessProbe"]["path"] == "/v2/health/live", variant
        assert {p["port"] for p in probes.values()} == {args.port}, variant
        assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}, variant
        assert {k: v for k, v in container["resources"]["limits"].items() if k in ("cpu", "memory")} == {
            "cpu": "4",
            "memory": "8Gi",
        }, variant
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, variant  # the image's user
        assert predictor["batcher"] == {"maxBatchSize": 8, "maxLatency": 50}, variant
        # the release to serve: a published version under the models bucket the bucket Job creates
        [storage] = [e["value"] for e in container["env"] if e["name"] == "STORAGE_URI"]
        assert storage == "s3://leukemia-models/releases/REPLACE-WITH-VERSION", variant
        buckets = yaml.safe_load((REPO / "manifests" / "buckets-job.yaml").read_text())
        assert "leukemia-models" in buckets["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "USER 10001" in (REPO / "docker" / "Dockerfile").read_text()


def _toleration(text: str) -> dict:
    """ClusterConfig's "key[=value]:Effect" as the Kubernetes toleration runners/placement.py makes of it."""
    spec, _, effect = text.rpartition(":")
    key, has_value, value = spec.partition("=")
    return (
        {"key": key, "operator": "Equal", "value": value, "effect": effect}
        if has_value
        else {"key": key, "operator": "Exists", "effect": effect}
    )


def test_the_gpu_variant_runs_where_training_does_and_the_cpu_one_asks_for_no_gpu(rendered):
    images, cluster = ImageConfig(), ClusterConfig()
    cpu = _one(rendered["cpu"], "InferenceService")["spec"]["predictor"]
    gpu = _one(rendered["gpu"], "InferenceService")["spec"]["predictor"]
    assert cpu["containers"][0]["image"] == images.cpu_image
    assert gpu["containers"][0]["image"] == images.gpu_image
    resources = cpu["containers"][0]["resources"]
    assert not any(cluster.gpu_resource in r for r in resources.values())
    assert "nodeSelector" not in cpu and "tolerations" not in cpu
    assert int(gpu["containers"][0]["resources"]["limits"][cluster.gpu_resource]) == 1
    key, value = cluster.gpu_node_label.split("=")
    assert gpu["nodeSelector"] == {key: value}
    assert gpu["tolerations"] == [_toleration(t) for t in cluster.gpu_tolerations]
    node = yaml.safe_load((REPO / "manifests" / "examples" / "gpu-node.yaml").read_text())
    assert node["metadata"]["labels"][key] == value and {t["key"] for t in node["spec"]["taints"]} >= {
        t["key"] for t in gpu["tolerations"]
    }
    # apart from those, the two are the same service
    placement = ("containers", "nodeSelector", "tolerations")
    assert {k: v for k, v in cpu.items() if k not in placement} == {k: v for k, v in gpu.items() if k not in placement}
    same = copy.deepcopy(gpu["containers"][0])
    same["image"] = images.cpu_image
    del same["resources"]["limits"][cluster.gpu_resource]
    assert same == cpu["containers"][0]


def test_the_secret_is_a_template_the_service_account_names_for_kserves_storage_initializer(rendered):
    for variant, documents in rendered.items():
        secret, account = _one(documents, "Secret"), _one(documents, "ServiceAccount")
        assert account["metadata"]["name"] == "leukemia-mtl-serving"
        assert [s["name"] for s in account["secrets"]] == [secret["metadata"]["name"]], variant
        assert account["automountServiceAccountToken"] is False
        assert set(secret["stringData"]) == S3_KEYS and "data" not in secret, variant
        assert all(v.startswith("REPLACE-") for v in secret["stringData"].values()), variant  # no real-looking key
        assert set(secret["metadata"]["annotations"]) >= S3_ANNOTATIONS, variant
        endpoint = secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"]
        assert "://" not in endpoint, "KServe wants host:port; s3-usehttps says the scheme"
        assert secret["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] in ("0", "1")


def test_the_images_follow_the_defaults_and_an_overlay_can_point_them_elsewhere(tmp_path):
    default = ImageConfig()
    base = yaml.safe_load((SERVING / "base" / "kustomization.yaml").read_text())
    assert base["images"] == [
        {"name": name, "newName": f"{default.registry}/{name}", "newTag": default.tag}
        for name in (default.cpu_name, default.gpu_name)
    ]
    gpu = yaml.safe_load((SERVING / "gpu" / "kustomization.yaml").read_text())
    assert gpu["images"] == [
        {"name": default.gpu_name, "newName": f"{default.registry}/{default.gpu_name}", "newTag": default.tag}
    ]
    for path in sorted(SERVING.rglob("*.yaml")):  # elsewhere only the logical names
        if path.name != "kustomization.yaml":
            assert default.registry not in path.read_text(), path
    # kustomize's images transformer reaches the custom resource's containers
    for variant, folder in VARIANTS.items():
        overlay = tmp_path / variant
        overlay.mkdir()
        name = default.gpu_name if variant == "gpu" else default.cpu_name
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [os.path.relpath(folder, overlay)],  # kustomize refuses an absolute one
                    "images": [
                        {
                            "name": f"{default.registry}/{name}",
                            "newName": f"registry.lab:5000/ml/{name}",
                            "newTag": "2026.11",
                        }
                    ],
                }
            )
        )
        predictor = _one(_render(overlay), "InferenceService")["spec"]["predictor"]
        assert predictor["containers"][0]["image"] == f"registry.lab:5000/ml/{name}:2026.11", variant


def test_the_pipelines_manifests_leave_serving_out():
    """KServe may not be installed where the pipeline runs: `kubectl apply -k manifests/` must not need its CRD."""
    top = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert not any("serving" in r for r in top["resources"])
    assert "Deliberately not a resource of manifests/kustomization.yaml" in (SERVING / "kustomization.yaml").read_text()
