"""The images for real: the CPU image built from this checkout (Docker's layer cache makes a rebuild
of unchanged inputs seconds), components run inside it by kfp.local's DockerRunner, and what they
write compared with the subprocess runner's.

Needs a Docker daemon. `.ci/run` installs and starts one and sets LEUKEMIA_MTL_REQUIRE_DOCKER=1:
there a missing daemon fails these tests with one line instead of skipping them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import TINY_CLI_SETS, run_demo
from leukemia_mtl.config import ImageConfig
from runners.images import ContainerImageError, check_local_images, source_digest
from runners.local import IMAGE_UID, _run_container_keeping_its_status

REPO = Path(__file__).resolve().parents[1]
REQUIRE_DOCKER = "LEUKEMIA_MTL_REQUIRE_DOCKER"  # set by .ci/run
IMAGES = ImageConfig()
pytestmark = pytest.mark.docker  # each builds or runs the CPU image, in a Docker daemon


def _docker_or_skip():
    import docker

    try:
        client = docker.from_env()
        client.ping()
        client.close()
    except Exception as exc:  # no socket, no daemon, no permission: all mean no containers here
        message = f"no Docker daemon answers ({type(exc).__name__}); the container tests need one (.ci/run starts it)"
        if os.environ.get(REQUIRE_DOCKER) == "1":
            pytest.fail(f"{message} ({REQUIRE_DOCKER}=1 asks for the container tests)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def cpu_image() -> str:
    """`make image-cpu`, as a person would run it: from the official base where a registry serves it,
    else from the Debian base built here."""
    _docker_or_skip()
    result = subprocess.run(["make", "image-cpu"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return IMAGES.cpu_image


def _in_image(image: str, script: str) -> str:
    result = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "sh", "-c", script], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_image_holds_this_checkout_runs_as_non_root_and_needs_no_network(cpu_image):
    lines = _in_image(
        cpu_image,
        "id -u; cat /opt/leukemia-mtl/SOURCE_DIGEST; "
        "python -c 'import leukemia_mtl, kfp, cv2, minio, tensorflow; print(\"imports\")'; "
        "command -v gcc cc pip-compile || echo 'no compilers'; "
        "ls /opt/venv/lib/python3.11/site-packages/tensorflow/__pycache__ | grep -c pyc; "
        "cd /opt/leukemia-mtl && python pipeline.py --compile --output /tmp/p.yaml | tail -1; "
        "ls /root 2>&1 | head -1",
    ).splitlines()
    assert lines[0] == str(IMAGE_UID)  # the Dockerfile's user, not root
    assert lines[1] == source_digest()  # built from this checkout's library and components
    assert "imports" in lines and "no compilers" in lines
    assert int(lines[lines.index("no compilers") + 1]) > 0  # bytecode compiled at build, not by every task
    assert lines[-2] == "wrote /tmp/p.yaml"  # what the retraining CronJob runs in this image
    assert "Permission denied" in lines[-1]


def test_a_stale_or_absent_image_is_refused_with_the_command_that_fixes_it(cpu_image):
    with pytest.raises(ContainerImageError, match="holds other code .* rebuild it with `make images`"):
        check_local_images(cpu_image, IMAGES.gpu_image, expected="0" * 16)
    with pytest.raises(ContainerImageError, match="leukemia-mtl-absent:0 is not built here; run `make images`"):
        check_local_images("leukemia-mtl-absent:0", IMAGES.gpu_image)
    images = check_local_images(cpu_image, IMAGES.gpu_image)
    assert images.cpu == cpu_image and (images.gpu_usable or (images.gpu == cpu_image and cpu_image in images.note))


def _owners(root: Path) -> set[int]:
    return {path.stat().st_uid for path in root.rglob("*") if path.is_file()}


@pytest.mark.slow  # the demo run, then the DAG again in containers
def test_the_dag_in_containers_gives_the_subprocess_runs_summary(cpu_image, demo_run, tmp_path):
    """Every task of the tiny DAG (ingest to report, six trainings per fold) in its own container:
    the same summary as the session's subprocess run, same seed, same CPU."""
    subprocess_dir, _, _ = demo_run
    outputs = run_demo("synthetic", "synthetic", tmp_path / "docker", cache=False, runner="docker")
    root = tmp_path / "docker" / "pipeline_root"
    # the tasks wrote every artifact as the image's user (the host runs these tests as root) or the caller
    assert _owners(root) == {IMAGE_UID if os.getuid() == 0 else os.getuid()}
    assert json.loads((tmp_path / "docker" / "summary.json").read_text()) == json.loads(
        (subprocess_dir / "summary.json").read_text()
    )
    trained = list(root.glob("*/for-loop-*/finetune-*/model/classifier.json"))
    assert len(trained) == 2 * 6 and all(Path(outputs[k]["path"]).exists() for k in ("release", "report"))


def _readable_by_others(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        path.chmod(path.stat().st_mode | (0o005 if path.is_dir() else 0o004))


def test_a_local_data_folder_is_mounted_read_only_for_the_containers(cpu_image, synthetic_copy, tmp_path):
    _readable_by_others(synthetic_copy)  # as data shared on a machine is; the next test: when it is not
    relative = os.path.relpath(synthetic_copy, Path.cwd())  # a relative path, as a person types it
    before = sorted((p.relative_to(synthetic_copy), p.stat().st_mtime_ns) for p in synthetic_copy.rglob("*"))
    outputs = run_demo(relative, relative, tmp_path / "mounted", cache=False, until="preprocess", runner="docker")
    described = json.loads((Path(outputs["dataset"]["path"]) / "dataset.json").read_text())
    assert described["smears"] == str(synthetic_copy.resolve())  # read from the folder, not generated
    assert sum(described["datasets"]["smears"]["class_counts"].values()) == len(
        list((synthetic_copy / "ALL_IDB1").glob("*.jpg"))
    )
    assert sorted((p.relative_to(synthetic_copy), p.stat().st_mtime_ns) for p in synthetic_copy.rglob("*")) == before


@pytest.mark.skipif(os.getuid() != 0, reason="as a normal user the containers run with the caller's own uid")
def test_a_folder_the_image_user_cannot_read_is_refused_before_any_task(cpu_image, synthetic_copy, tmp_path, capsys):
    import pipeline

    _readable_by_others(synthetic_copy)
    (synthetic_copy / "ALL_IDB2").chmod(0o700)
    code = pipeline.main(
        [
            "--run-local",
            "--runner",
            "docker",
            "--data",
            str(synthetic_copy),
            "--until",
            "preprocess",
            "--output-dir",
            str(tmp_path / "refused"),
            *TINY_CLI_SETS,
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1
    assert f"uid {IMAGE_UID}, which cannot read {synthetic_copy / 'ALL_IDB2'} (mode 700)" in err
    assert not (tmp_path / "refused" / "pipeline_root").exists()


def test_a_container_that_fails_at_once_is_read_as_failed_and_removed(cpu_image):
    """kfp 2.17's own runner, with auto_remove, reads a container already gone as a success."""
    import docker

    client = docker.from_env()
    before = {c.id for c in client.containers.list(all=True)}
    for code in (3, 0):
        assert (
            _run_container_keeping_its_status(
                client, cpu_image, ["sh", "-c", f"echo out; exit {code}"], {}, network_mode="none"
            )
            == code
        )
    assert {c.id for c in client.containers.list(all=True)} == before
    client.close()


def test_a_task_that_fails_in_its_container_fails_the_run(cpu_image, synthetic_copy, tmp_path, capsys):
    """kfp 2.17's DockerRunner can read a fast-failing container as a success; the runner reads its status."""
    import pipeline

    (synthetic_copy / "ALL_IDB1" / "Im001_1.jpg").write_bytes(b"\xff\xd8broken")
    _readable_by_others(synthetic_copy)
    code = pipeline.main(
        [
            "--run-local",
            "--runner",
            "docker",
            "--data",
            str(synthetic_copy),
            "--until",
            "preprocess",
            "--output-dir",
            str(tmp_path / "failed"),
            *TINY_CLI_SETS,
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "Im001_1.jpg: cannot be decoded" in captured.out + captured.err
    assert "error: pipeline run failed: " in captured.err and "'ingest'" in captured.err
