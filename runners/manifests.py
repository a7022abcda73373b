"""manifests/ for your own images, without editing a tracked file: a kustomize overlay that points every
Job at IMAGE_REGISTRY/leukemia-mtl-{cpu,gpu}:IMAGE_TAG and has the retraining CronJob compile its pipeline
for the same images, then rendered by `kubectl kustomize`.

    python -m runners.manifests --image-registry R --image-tag T [--output build/manifests.yaml]
    kubectl apply -k build/manifests        # or: kubectl apply -f build/manifests.yaml

The names come from leukemia_mtl.config.ImageConfig, as in the compiled pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from leukemia_mtl.config import ImageConfig
from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.io_utils import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
OVERLAY = REPO / "build" / "manifests"
RENDERED = REPO / "build" / "manifests.yaml"
RETRAINING = ("CronJob", "leukemia-mtl-retraining", "/spec/jobTemplate/spec/template/spec/containers/0/command/-")
# what a registry (host[:port][/path]) and a tag may be (Docker's reference grammar, lower-case repositories)
REGISTRY = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class ManifestError(LeukemiaMtlError):
    """The manifests cannot be rendered for these images."""


def images_for(registry: str | None = None, tag: str | None = None) -> ImageConfig:
    """ImageConfig with this registry and tag (the defaults where not given), checked as Docker would."""
    default = ImageConfig()
    images = ImageConfig(registry=(registry or default.registry).rstrip("/"), tag=tag or default.tag)
    if not REGISTRY.fullmatch(images.registry):
        raise ManifestError(f"image registry {images.registry!r} is not host[:port][/path] in lower case")
    if not TAG.fullmatch(images.tag):
        raise ManifestError(
            f"image tag {images.tag!r} is not a Docker tag (letters, digits, '_', '.', '-'; at most 128)"
        )
    return images


def write_overlay(images: ImageConfig, folder: Path = OVERLAY) -> Path:
    """folder/kustomization.yaml: manifests/ with `images` in place of the default ones; returns the file.

    manifests/kustomization.yaml has already turned the logical names into the default images when the
    overlay sees them, so the overlay matches those. JSON strings are YAML: a tag like 1e10 stays a string."""
    default, folder = ImageConfig(), Path(folder)
    lines = [
        "# Written by `python -m runners.manifests` (make manifests); rewritten on every run.",
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources:",
        f"  - {json.dumps(os.path.relpath(MANIFESTS, folder.resolve()))}",
        "images:",
    ]
    for name in (default.cpu_name, default.gpu_name):
        lines += [
            f"  - name: {json.dumps(f'{default.registry}/{name}')}",
            f"    newName: {json.dumps(f'{images.registry}/{name}')}",
            f"    newTag: {json.dumps(images.tag)}",
        ]
    kind, job, command = RETRAINING  # the pipeline it submits runs in the same images as the CronJob itself
    flags = [
        {"op": "add", "path": command, "value": f"--image-registry={images.registry}"},
        {"op": "add", "path": command, "value": f"--image-tag={images.tag}"},
    ]
    lines += ["patches:", f"  - target: {{kind: {kind}, name: {job}}}", "    patch: |-"]
    lines += [f"      - {json.dumps(op)}" for op in flags]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "kustomization.yaml"
    atomic_write_text(path, "\n".join(lines) + "\n")  # whole or not at all: a half-written file is never applied
    return path


def kustomize(folder: Path) -> str:
    """`kubectl kustomize folder` (or the standalone `kustomize build folder`): the rendered YAML."""
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(folder)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(folder)]
    else:
        raise ManifestError("rendering the manifests needs kubectl (or kustomize) on PATH")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ManifestError(f"{' '.join(command[:2])} {folder} failed: {done.stderr.strip()[:2000]}")
    return done.stdout


def render(
    registry: str | None = None, tag: str | None = None, output: Path = RENDERED, folder: Path = OVERLAY
) -> Path:
    """The overlay in `folder` and its rendering in `output`; refuses a rendering in which any image is
    not one of these (manifests/kustomization.yaml no longer names the defaults the overlay replaces)."""
    images = images_for(registry, tag)
    text = kustomize(write_overlay(images, folder).parent)
    found = set(re.findall(r"^\s*-?\s*image:\s*['\"]?([^'\"\s]+)", text, re.M))
    stray = sorted(found - {images.cpu_image, images.gpu_image})
    if stray or not found:
        raise ManifestError(
            f"the rendered manifests name {', '.join(stray) or 'no image'}, not {images.cpu_image}: "
            "manifests/kustomization.yaml's images must name the defaults of leukemia_mtl/config.py"
        )
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(output, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-registry", help=f"registry of both images (default {ImageConfig().registry})")
    parser.add_argument("--image-tag", help=f"tag of both images (default {ImageConfig().tag})")
    parser.add_argument(
        "--output", type=Path, default=RENDERED, help="the rendered YAML (default build/manifests.yaml)"
    )
    parser.add_argument("--overlay", type=Path, default=OVERLAY, help="the overlay's folder (default build/manifests)")
    args = parser.parse_args(argv)
    try:
        output = render(args.image_registry, args.image_tag, args.output, args.overlay)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {output} (kubectl apply -f {output}, or kubectl apply -k {args.overlay})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
