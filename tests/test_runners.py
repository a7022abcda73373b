"""The runners (runners/): the local runner's cache follows the data and the code, inputs from S3, the run printer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from helpers import run_demo
from runners.local import code_version
from runners.placement import CODE_VERSION_ENV


@pytest.mark.slow
def test_local_run_reads_changed_folder_data_not_a_stale_cache(tmp_path, synthetic_copy):
    first = run_demo(str(synthetic_copy), str(synthetic_copy), tmp_path / "run", until="preprocess")
    (synthetic_copy / "ALL_IDB1" / "Im001_1.jpg").unlink()
    (synthetic_copy / "ALL_IDB1" / "Im001_1.xyc").unlink()
    (synthetic_copy / "ALL_IDB1" / "masks" / "Im001_1.png").unlink()
    labels = synthetic_copy / "ALL_IDB1" / "labels.csv"
    labels.write_text("".join(line for line in labels.read_text().splitlines(True) if not line.startswith("Im001_1")))
    second = run_demo(str(synthetic_copy), str(synthetic_copy), tmp_path / "run", until="preprocess")
    assert json.loads((Path(second["roi"]["path"]) / "summary.json").read_text())["images"] == 13
    assert first["roi"]["path"] != second["roi"]["path"]


def test_local_run_from_s3(tmp_path, synthetic_root, s3_env, capfd):
    from leukemia_mtl.data.storage import ObjectStore
    from leukemia_mtl.errors import StorageError

    store = ObjectStore.from_env()
    store.ensure_bucket("raw")
    store.upload_dir(synthetic_root, "s3://raw/allidb")
    outputs = run_demo("s3://raw/allidb/ALL_IDB1", "s3://raw/allidb", tmp_path / "run", until="preprocess")
    assert outputs["dataset"]["metadata"]["source"] == "smears: s3://raw/allidb/ALL_IDB1; cells: s3://raw/allidb"
    summary = json.loads((Path(outputs["dataset"]["path"]) / "dataset.json").read_text())
    assert sorted(summary["datasets"]) == ["cells", "smears"] and summary["datasets"]["cells"]["layout"] == "allidb2"
    with pytest.raises(StorageError, match="NoSuchBucket") as refused:  # found while fingerprinting the inputs
        run_demo("s3://no-such-bucket/x", "none", tmp_path / "missing", until="preprocess")
    logged = capfd.readouterr()
    written = [
        p.read_text(errors="replace")
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix in (".json", ".html", ".csv", "")
    ]
    for text in [logged.out, logged.err, str(refused.value), *written]:  # the credentials were used, and appear nowhere
        assert s3_env["MINIO_SECRET_KEY"] not in text and s3_env["MINIO_ACCESS_KEY"] not in text


def test_local_runs_put_the_settings_and_code_version_in_every_task_cache_key(tmp_path):
    """kfp.local keys its cache on a task's inputs, command and environment; the inputs name the
    profile, not its settings, so every local task carries a version of both in its environment."""
    from kfp import compiler

    from leukemia_mtl.config import get_profile

    demo = get_profile("demo")
    assert code_version(demo) == code_version(get_profile("demo"))
    assert code_version(demo) != code_version(get_profile("demo", {"train.epochs": 4}))
    path = tmp_path / "local.yaml"
    compiler.Compiler().compile(pipeline.build_pipeline(code_version="v123"), str(path))
    spec = json_format.ParseDict(next(iter(yaml.safe_load_all(path.read_text()))), pipeline_spec_pb2.PipelineSpec())
    executors = spec.deployment_spec.fields["executors"].struct_value.fields
    envs = {
        name: {
            e.struct_value.fields["name"].string_value: e.struct_value.fields["value"].string_value
            for e in executor.struct_value.fields["container"].struct_value.fields["env"].list_value.values
        }
        for name, executor in executors.items()
    }
    assert len(envs) >= 11 and all(env.get(CODE_VERSION_ENV) == "v123" for env in envs.values()), envs
