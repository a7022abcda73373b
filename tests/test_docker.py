"""Docker cannot build here; these read the Dockerfile for what would break a cluster run."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from leukemia_mtl import __version__
from leukemia_mtl.config import ImageConfig

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile.cpu"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [tuple(line.split(None, 1)) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_copied_path_exists_in_the_repository():
    copies = [args for op, args in _instructions() if op == "COPY"]
    assert copies
    for args in copies:
        *sources, _dest = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which is not in the repository"


def test_installs_the_project_with_its_own_pins_and_runs_as_non_root():
    runs = " ".join(args for op, args in _instructions() if op == "RUN")
    assert re.search(r"pip install [^&]*\.(\s|$)", runs), "the image must install this project (pyproject pins)"
    assert "requirements" not in runs  # one source of pins: pyproject.toml
    users = [args.strip() for op, args in _instructions() if op == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_python_matches_the_supported_range_and_keras_home_is_set():
    base = next(args for op, args in _instructions() if op == "FROM")
    version = re.search(r"python:(\d+\.\d+)", base).group(1)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low, high = re.findall(r"(\d+\.\d+)", requires)
    assert tuple(map(int, low.split("."))) <= tuple(map(int, version.split("."))) < tuple(map(int, high.split(".")))
    assert any(op == "ENV" and "KERAS_HOME=" in args for op, args in _instructions())


def test_image_tag_follows_the_project_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    assert ImageConfig().cpu_image.endswith(f":{__version__}")
