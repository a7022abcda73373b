"""The DAG run here with kfp.local: every component in a subprocess of this environment, artifacts
under the output folder's pipeline root, tasks cached by their inputs and the code's version."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Callable

from leukemia_mtl.config import Profile
from leukemia_mtl.io_utils import atomic_write_text, exclusive_folder, sha256_file
from runners.summary import STABLE_COPIES

REPO = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("leukemia_mtl", "components")  # the source a task's result depends on (runners/ runs none of them)


def code_version(settings: Profile) -> str:
    """sha256 of the resolved settings and of every source file of the library and components:
    a cached local task is reused only while neither has changed."""
    digest = hashlib.sha256(json.dumps(settings.to_dict(), sort_keys=True, default=str).encode())
    for path in sorted(p for package in CODE_PACKAGES for p in (REPO / package).rglob("*.py")):
        digest.update(f"{path.relative_to(REPO).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:16]


def run_local(build_pipeline: Callable, profile: str, settings: Profile, overrides: dict, smears: str, cells: str,
              output_dir: Path, cache: bool = True, until: str = "report") -> dict:
    """Run the DAG `build_pipeline(settings, ...)` builds (to `until`); returns {output: {path, metadata}}.

    `settings` is resolved once, by the caller, from `profile` and `overrides`; the same profile
    name and overrides go to every task as its parameters, which it resolves in its own process.
    """
    from kfp import local

    from leukemia_mtl.data.ingest import fingerprint, precheck

    output_dir = Path(output_dir).resolve()
    with exclusive_folder(output_dir):
        version = fingerprint(smears, cells, settings)  # a blank or unreadable input stops here, before any task
        precheck(smears, cells, settings)  # and data the split cannot divide into split.folds
        root = output_dir / "pipeline_root"
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache)
        # our base image has Python; kfp warns because its name does not say so
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
        # GPU requests and display names matter on a cluster only; kfp.local says so for every task
        warnings.filterwarnings("ignore", message="Task .* have no effect in the current local runner")
        run = build_pipeline(settings, run_overrides=overrides, cache_ingest=cache, until=until,
                             code_version=code_version(settings))(
            smears=smears, cells=cells, profile=profile, overrides=json.dumps(overrides, sort_keys=True), data_version=version,
            backbones=list(settings.model.backbones),
        )
        # cached tasks keep their first run's folders, so paths come from the run's outputs
        outputs = {name: {"path": artifact.path, "metadata": artifact.metadata} for name, artifact in run.outputs.items()}
        atomic_write_text(output_dir / "outputs.json", json.dumps(outputs, indent=2, default=str) + "\n")
        if "report" in outputs:  # the files a person opens, under stable names
            for name, copy in STABLE_COPIES.items():
                shutil.copyfile(outputs[name]["path"], output_dir / copy)
        return outputs
