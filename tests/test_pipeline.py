"""The DAG: compiles into a valid PipelineSpec, and runs end to end with kfp.local on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from conftest import PLANTED_SECRET_KEY, TINY
from leukemia_mtl.config import ImageConfig

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
    assert {"ingest", "preprocess", "segment", "split", "augment"} <= set(tasks)
    assert list(tasks["preprocess"].dependent_tasks) == ["ingest"]
    assert sorted(tasks["segment"].dependent_tasks) == ["ingest", "preprocess"]
    assert tasks["ingest"].caching_options.enable_cache is False  # reads outside the pipeline
    assert tasks["preprocess"].caching_options.enable_cache is True
    params = spec.root.input_definitions.parameters
    assert {"data", "profile", "overrides", "data_version", "backbones"} <= set(params)
    assert params["data"].default_value.string_value == "synthetic"
    assert params["profile"].default_value.string_value == "paper"
    backbones = [v.string_value for v in params["backbones"].default_value.list_value.values]
    assert backbones == ["InceptionV3", "Xception", "InceptionResNetV2"]
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    assert loop.parameter_iterator.items.input_parameter.endswith("backbones")
    images = {e.container.image for e in _executors(spec)}
    assert images == {ImageConfig().cpu_image}
    for executor in _executors(spec):
        command = " ".join(list(executor.container.command) + list(executor.container.args))
        assert "pip install" not in command  # the image already has kfp and the library
    assert PLANTED_SECRET_KEY not in text and "MINIO_SECRET_KEY" not in text


def test_training_tasks_request_gpus_and_nothing_else_does(tmp_path):
    _, spec = _compile(tmp_path)
    deployment = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deployment)
    loop_dag = next(c.dag for name, c in spec.components.items() if name.startswith("comp-for-loop"))
    training = {name: t for name, t in loop_dag.tasks.items() if name.startswith("finetune")}
    assert len(training) == 6  # stages 1, 2, 3 (detection, FAB) and classical (detection, FAB)
    displays = {t.task_info.name for t in training.values()}
    assert {"stage 1", "stage 2", "stage 3 detection", "stage 3 FAB", "classical detection", "classical FAB"} == displays
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
    previous = {t.task_info.name: t.inputs.artifacts["previous"].task_output_artifact.producer_task
                for t in training.values() if "previous" in t.inputs.artifacts}
    names = {name: t.task_info.name for name, t in training.items()}
    assert {k: names[v] for k, v in previous.items()} == {
        "stage 2": "stage 1", "stage 3 detection": "stage 2", "stage 3 FAB": "stage 2"}


def _executors(spec):
    deployment = pipeline_spec_pb2.PipelineDeploymentConfig()
    json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec), deployment)
    return list(deployment.executors.values())


def test_compile_cli_writes_the_file(tmp_path):
    out = tmp_path / "p.yaml"
    result = subprocess.run([sys.executable, "pipeline.py", "--compile", "--output", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout and out.stat().st_size > 1000


def test_local_run_end_to_end_then_cached(tmp_path):
    started = time.time()
    outputs = pipeline.run_local("demo", "synthetic", tmp_path / "run", dict(TINY))
    first = time.time() - started
    assert {"dataset", "roi", "roi_overlay", "segmenter", "cells", "segmentation", "training_data"} <= set(outputs)
    roi = Path(outputs["roi"]["path"])
    summary = json.loads((roi / "summary.json").read_text())
    assert summary["images"] == 14 and summary["mean_recall"] >= 0.85
    assert Path(outputs["roi_overlay"]["path"]).read_text().startswith("<!doctype html>")
    seg = json.loads((Path(outputs["cells"]["path"]) / "summary.json").read_text())
    assert seg["crops"] > 0 and seg["unet_dice"] is not None
    assert (Path(outputs["segmenter"]["path"]) / "segmenter.keras").is_file()
    for display in ("stage 1", "stage 2", "stage 3 detection", "stage 3 FAB", "classical detection", "classical FAB"):
        models = outputs[pipeline._model_output(display)]
        assert len(models) == 1  # one backbone in TINY
        info = json.loads((Path(models[0]["path"]) / "classifier.json").read_text())
        assert info["backbone"] == "Xception" and info["input_size"] == 71
    assert json.loads((Path(outputs["stage_3_fab_models"][0]["path"]) / "summary.json").read_text())["carried_over"] == ["backbone", "dense"]
    assert json.loads((tmp_path / "run" / "outputs.json").read_text())["roi"]["path"] == str(roi)
    lines = "\n".join(pipeline.describe_run(outputs))
    assert "U-Net Dice" in lines and "classical FAB" in lines and "not the paper's transfer from ImageNet" in lines

    started = time.time()
    again = pipeline.run_local("demo", "synthetic", tmp_path / "run", dict(TINY))
    assert time.time() - started < first / 4  # every task served from the cache
    assert again["stage_3_fab_models"][0]["path"] == outputs["stage_3_fab_models"][0]["path"]


def test_local_run_reads_changed_folder_data_not_a_stale_cache(tmp_path, synthetic_copy):
    first = pipeline.run_local("demo", str(synthetic_copy), tmp_path / "run", dict(TINY), until="preprocess")
    (synthetic_copy / "ALL_IDB1" / "Im001_1.jpg").unlink()
    (synthetic_copy / "ALL_IDB1" / "Im001_1.xyc").unlink()
    (synthetic_copy / "ALL_IDB1" / "masks" / "Im001_1.png").unlink()
    labels = synthetic_copy / "ALL_IDB1" / "labels.csv"
    labels.write_text("".join(line for line in labels.read_text().splitlines(True) if not line.startswith("Im001_1")))
    second = pipeline.run_local("demo", str(synthetic_copy), tmp_path / "run", dict(TINY), until="preprocess")
    assert json.loads((Path(second["roi"]["path"]) / "summary.json").read_text())["images"] == 13
    assert first["roi"]["path"] != second["roi"]["path"]


def test_local_run_from_s3(tmp_path, synthetic_root, s3_env):
    from leukemia_mtl.data.storage import ObjectStore

    store = ObjectStore.from_env()
    store.ensure_bucket("raw")
    store.upload_dir(synthetic_root, "s3://raw/allidb")
    outputs = pipeline.run_local("demo", "s3://raw/allidb", tmp_path / "run", dict(TINY), until="preprocess")
    assert outputs["dataset"]["metadata"]["source"] == "s3://raw/allidb"


def test_run_local_cli_prints_outputs_and_fails_cleanly_on_bad_data(tmp_path, synthetic_copy):
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    ok = subprocess.run(
        [sys.executable, "pipeline.py", "--run-local", "--until", "segment", "--output-dir", str(tmp_path / "ok"), *sets],
        cwd=REPO, capture_output=True, text=True,
    )
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "pipeline finished" in ok.stdout and "roi_overlay" in ok.stdout and "training_data" not in ok.stdout and "ROI vs ground-truth WBC masks" in ok.stdout
    assert "U-Net Dice" in ok.stdout and "threshold ROI Dice" in ok.stdout

    (synthetic_copy / "ALL_IDB1" / "Im001_1.jpg").write_bytes(b"\xff\xd8broken")
    bad = subprocess.run(
        [sys.executable, "pipeline.py", "--run-local", "--data", str(synthetic_copy), "--output-dir", str(tmp_path / "bad")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert bad.returncode == 1
    assert f"error: {synthetic_copy}/ALL_IDB1/Im001_1.jpg: cannot be decoded" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    assert "error: pipeline run failed" in bad.stderr


@pytest.mark.parametrize("args, message", [(["--profile", "nope"], "unknown profile"), (["--data", "/no/such/dir"], "nor an existing folder")])
def test_run_local_cli_refuses_bad_arguments_before_running(tmp_path, args, message):
    result = subprocess.run([sys.executable, "pipeline.py", "--run-local", "--output-dir", str(tmp_path), *args],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
