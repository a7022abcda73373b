"""The DAG run here with kfp.local: every component in a subprocess of this environment (the
default) or in its own container from the image a cluster would give it (`runner="docker"`);
artifacts under the output folder's pipeline root, tasks cached by their inputs and the code's version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

from packaging.specifiers import SpecifierSet

from leukemia_mtl.config import ConfigError, Profile, get_profile
from leukemia_mtl.data.storage import STORAGE_ENV
from leukemia_mtl.io_utils import atomic_write_text, exclusive_folder
from leukemia_mtl.models.catalog import OFFLINE_BACKBONES
from runners.images import LocalImages, check_local_images, source_digest
from runners.summary import STABLE_COPIES

REPO = Path(__file__).resolve().parent.parent
RUNNERS = ("subprocess", "docker")
IMAGE_UID = 10001  # docker/Dockerfile's user
# the host's choice of numeric kernels travels into the containers: OpenBLAS picks its kernel by CPU
# unless told (this machine says OPENBLAS_CORETYPE=Haswell), and another kernel rounds differently
NUMERIC_ENV_PREFIXES = ("OPENBLAS_", "OMP_", "MKL_", "TF_ENABLE_ONEDNN_OPTS", "TF_NUM_")
NOT_PATHS = ("synthetic", "none", "imagenet", "")  # input values that name no folder
PATH_SETTINGS = ("model.weights", "evaluate.models_uri")  # settings that may name a local file or folder


def code_version(settings: Profile) -> str:
    """sha256 of the resolved settings and of the library's and components' source: a cached local
    task is reused only while neither has changed."""
    digest = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode())
    digest.update(source_digest(REPO).encode())
    return digest.hexdigest()[:16]


def _local_path(value: str) -> Path | None:
    """The local file or folder an input names (None: generated data, a URI, or nothing)."""
    return None if value.strip().lower() in NOT_PATHS or "://" in value else Path(value).expanduser().resolve()


# kfp.local's own `run_docker_container` starts containers with auto_remove and reads a container already removed as
# a success, so a task that failed fast could pass as done: kubeflow/pipelines#13332, reported on kfp 2.15.2 and
# 2.16.0, and 2.17.3's code here (tests/test_pipeline.py checks the installed kfp); the fixes proposed upstream
# (#13381, #13402, #13907) are not released. A kfp outside this range runs its own function: the test says when the
# range must move.
KFP_DOCKER_STATUS_BROKEN = SpecifierSet(">=2.15,<2.18")


def _run_container_keeping_its_status(
    client, image: str, command: list[str], volumes: dict, **container_run_args
) -> int:
    """kfp.local's `run_docker_container`, but it reads the exit status first and removes the container after."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        print(f"Pulling image {image!r}")
        client.images.pull(image)
    container = client.containers.run(
        image=image, command=command, detach=True, stdout=True, stderr=True, volumes=volumes, **container_run_args
    )
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return container.wait()["StatusCode"]
    finally:
        container.remove(force=True)


@contextmanager
def docker_exit_status_kept(kfp_version: str | None = None):
    """For the run inside it, kfp.local's docker task handler uses _run_container_keeping_its_status, where the
    kfp (`kfp_version`, else the installed one) is one KFP_DOCKER_STATUS_BROKEN names; its own function after."""
    import kfp
    from kfp.local import docker_task_handler

    if (kfp_version or kfp.__version__) not in KFP_DOCKER_STATUS_BROKEN:
        yield
        return
    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = _run_container_keeping_its_status
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def _unreadable_by(uid: int, folder: Path) -> Path | None:
    """The first file or folder under `folder` that `uid` (not its owner) could not read, if any."""
    for path in (folder, *folder.rglob("*")):
        mode = path.stat()
        needs = 0o005 if path.is_dir() else 0o004
        if mode.st_uid != uid and mode.st_mode & needs != needs:
            return path
    return None


def docker_runner(root: Path, *, smears: str, cells: str, settings: Profile, images: LocalImages | None = None):
    """kfp.local's DockerRunner for this run: the inputs' folders mounted where the tasks will look
    (read-only, but the release folder), no network unless the run uses object storage or downloads
    ImageNet weights, the MinIO credentials passed on, and a user that can write the pipeline root."""
    from docker.types import DeviceRequest, Mount
    from kfp import local

    mounts: dict[Path, bool] = {}  # path: read-only (one mount per path: smears and cells may share a folder)
    for value, read_only in (
        (smears, True),
        (cells, True),
        (settings.model.weights, True),
        (settings.evaluate.models_uri, False),
    ):
        path = _local_path(value)
        if path is None:
            continue
        if not read_only:
            path.mkdir(parents=True, exist_ok=True)  # Docker would create it as root
        elif not path.exists():
            raise ConfigError(f"--runner docker: {value} does not exist, so it cannot be mounted for the tasks")
        mounts[path] = mounts.get(path, True) and read_only
    remote = any("://" in v for v in (smears, cells, settings.model.weights, settings.evaluate.models_uri))
    # the host's network for object storage (also whenever MinIO is configured here) and ImageNet downloads
    downloads = settings.model.weights.strip().lower() == "imagenet" and not all(
        name in OFFLINE_BACKBONES for name in settings.model.backbones
    )  # Keras' download, not a package's file
    networked = remote or downloads or "MINIO_ENDPOINT" in os.environ
    environment = {
        name: value
        for name, value in os.environ.items()
        if name in STORAGE_ENV or name.startswith(NUMERIC_ENV_PREFIXES)
    }
    args = dict(
        mounts=[
            Mount(target=str(path), source=str(path), type="bind", read_only=read_only)
            for path, read_only in mounts.items()
        ],
        network_mode="host" if networked else "none",
    )
    if images is not None and images.gpu_usable:  # every GPU of the machine, through the NVIDIA runtime
        args["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if os.getuid() == 0:  # the image's own non-root user, given the pipeline root
        for path, read_only in mounts.items():
            unreadable = _unreadable_by(IMAGE_UID, path) if read_only else None
            if unreadable is not None:
                raise ConfigError(
                    f"--runner docker: the tasks run as uid {IMAGE_UID}, which cannot read {unreadable} "
                    f"(mode {unreadable.stat().st_mode & 0o777:o}); make it readable "
                    f"(chmod -R o+rX {path}) or run as a user other than root"
                )
            if not read_only and path.stat().st_uid != IMAGE_UID:
                if any(path.iterdir()):
                    raise ConfigError(
                        f"--runner docker: the release folder {path} is not empty and not writable by the "
                        f"tasks' uid {IMAGE_UID}; use an empty or new folder (or run as a user other than root)"
                    )
                os.chown(path, IMAGE_UID, IMAGE_UID)
        root.mkdir(parents=True, exist_ok=True)
        os.chown(root, IMAGE_UID, IMAGE_UID)
    else:  # the caller's own uid and groups, so every file it finds under its folder is its own
        root.mkdir(parents=True, exist_ok=True)  # else Docker creates it, as root, for the bind mount
        args["user"] = f"{os.getuid()}:{os.getgid()}"
        args["group_add"] = [str(group) for group in os.getgroups()]
        environment.update(HOME="/tmp", KERAS_HOME="/tmp/keras")  # the image's KERAS_HOME belongs to uid 10001
    if environment:
        args["environment"] = environment
    return local.DockerRunner(**args)


def run_local(
    build_pipeline: Callable,
    *,
    profile: str,
    overrides: dict,
    smears: str,
    cells: str,
    output_dir: Path,
    settings: Profile | None = None,
    cache: bool = True,
    until: str = "report",
    runner: str = "subprocess",
    compile_overrides: dict | None = None,
) -> dict:
    """Run the DAG `build_pipeline(settings, ...)` builds (to `until`); returns {output: {path, metadata}}.

    `settings` is resolved once, from `profile`, `compile_overrides` (which name the images the docker runner
    uses) and `overrides` unless the caller did; the same profile
    name and overrides go to every task as its parameters, which it resolves in its own process.
    `runner="docker"` runs every task in the image `settings.image` names, checked first to hold this
    checkout's code; local inputs are passed as absolute paths, which the containers see mounted.
    """
    from kfp import local

    from leukemia_mtl.data.ingest import fingerprint, precheck
    from leukemia_mtl.models.backbones import check_weights_source

    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    if settings is None:  # once: a bad profile or override fails here, before anything runs
        settings = get_profile(profile, {**(compile_overrides or {}), **overrides})
    output_dir = Path(output_dir).resolve()
    with exclusive_folder(output_dir):
        version = fingerprint(smears, cells, settings)  # a blank or unreadable input stops here, before any task
        precheck(smears, cells, settings)  # and data the split cannot divide into split.folds
        for line in check_weights_source(settings.model.weights, settings.model.backbones):  # and weights none can have
            print(f"starting weights: {line}")
        root = output_dir / "pipeline_root"
        images: LocalImages | None = None
        if runner == "docker":
            images = check_local_images(settings.image.cpu_image, settings.image.gpu_image)
            print(f"docker runner: {images.note}")
            # the tasks' working folder is the image's: every local path they are given is absolute
            smears, cells = (str(_local_path(v) or v) for v in (smears, cells))
            overrides = {
                key: str(_local_path(value) or value) if key in PATH_SETTINGS and isinstance(value, str) else value
                for key, value in overrides.items()
            }
            kfp_runner = docker_runner(root, smears=smears, cells=cells, settings=settings, images=images)
        else:
            kfp_runner = local.SubprocessRunner(use_venv=False)
        local.init(runner=kfp_runner, pipeline_root=str(root), enable_caching=cache)
        # our base image has Python; kfp warns because its name does not say so
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
        # GPU requests and display names matter on a cluster only; kfp.local says so for every task
        warnings.filterwarnings("ignore", message="Task .* have no effect in the current local runner")
        dag = build_pipeline(
            settings,
            run_overrides=overrides,
            cache_ingest=cache,
            until=until,
            code_version=code_version(settings),
            local_images=images,
        )
        with docker_exit_status_kept() if runner == "docker" else nullcontext():
            run = dag(
                smears=smears,
                cells=cells,
                profile=profile,
                overrides=json.dumps(overrides, sort_keys=True),
                data_version=version,
                backbones=list(settings.model.backbones),
            )
        # cached tasks keep their first run's folders, so paths come from the run's outputs
        outputs = {
            name: {"path": artifact.path, "metadata": artifact.metadata} for name, artifact in run.outputs.items()
        }
        atomic_write_text(output_dir / "outputs.json", json.dumps(outputs, indent=2, default=str) + "\n")
        if "report" in outputs:  # the files a person opens, under stable names
            for name, copy in STABLE_COPIES.items():
                shutil.copyfile(outputs[name]["path"], output_dir / copy)
        return outputs
