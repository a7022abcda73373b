"""The project's container images as a local run sees them: which code an image holds (the digest
docker/Dockerfile writes at build time), and whether this checkout's images are built here.

    python -m runners.images digest      # the digest of the installed or checked-out source

Standard library only at import: the Dockerfile runs it before anything else is needed.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from leukemia_mtl.errors import LeukemiaMtlError

CODE_PACKAGES = ("leukemia_mtl", "components")  # the source a task's result depends on (runners/ runs none of them)
CODE_SUFFIXES = (".py", ".html", ".css")  # with the report's templates
DIGEST_FILE = "/opt/leukemia-mtl/SOURCE_DIGEST"  # docker/Dockerfile writes it


class ContainerImageError(LeukemiaMtlError):
    """A container image a run needs is missing here or holds other code than this checkout (not a
    smear or cell image: that is leukemia_mtl.errors.ImageError)."""


def source_digest(root: Path | None = None) -> str:
    """sha256 of every source file of the library and the components, under `root` (default: where
    they are imported from: the checkout, or site-packages in an image)."""
    if root is None:
        import leukemia_mtl

        root = Path(leukemia_mtl.__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = sorted(
        p
        for package in CODE_PACKAGES
        for p in (root / package).rglob("*")
        if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts
    )
    for path in files:
        digest.update(
            f"{path.relative_to(root).as_posix()}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode()
        )
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class LocalImages:
    """The images a docker run uses here: GPU tasks get the GPU image only where Docker can give them a GPU."""

    cpu: str
    gpu: str
    gpu_usable: bool
    note: str  # what a person should know about the choice, one line


def image_digest(client, image: str) -> str | None:
    """The source digest an image was built with ("" when it records none: not built by docker/Dockerfile);
    None when the image is not here."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return None
    try:
        output = client.containers.run(image, ["cat", DIGEST_FILE], remove=True, network_mode="none", stderr=False)
    except docker.errors.ContainerError:
        return ""
    return output.decode().strip()


def check_local_images(cpu_image: str, gpu_image: str, expected: str | None = None) -> LocalImages:
    """The CPU image must be built from this checkout's code; the GPU image is used when it is, and when
    Docker has the NVIDIA runtime. One ContainerImageError names what is wrong and the command that fixes it."""
    import docker

    expected = expected or source_digest()
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise ContainerImageError(
            f"--runner docker: no Docker daemon answers ({str(exc).splitlines()[0][:200]}); "
            "start dockerd, or use the default --runner subprocess"
        ) from None
    try:
        return _checked(client, cpu_image, gpu_image, expected)
    except docker.errors.DockerException as exc:
        raise ContainerImageError(
            f"--runner docker: Docker refused to inspect the images ({str(exc).splitlines()[0][:200]})"
        ) from None
    finally:
        client.close()


def _checked(client, cpu_image: str, gpu_image: str, expected: str) -> LocalImages:
    """The check itself, on an open client."""
    found = image_digest(client, cpu_image)
    if found is None:
        raise ContainerImageError(
            f"--runner docker: image {cpu_image} is not built here; run `make images` "
            "(or `make image-cpu`; --image-registry/--image-tag name another build)"
        )
    if found != expected:
        held = f"source {found}" if found else "no source digest"
        raise ContainerImageError(
            f"--runner docker: image {cpu_image} holds other code ({held}, this checkout "
            f"{expected}); rebuild it with `make images`"
        )
    has_gpu_runtime = "nvidia" in (client.info().get("Runtimes") or {})
    if not has_gpu_runtime:
        return LocalImages(
            cpu_image, cpu_image, False, f"no NVIDIA runtime in Docker here: the GPU tasks run in {cpu_image}"
        )
    gpu_found = image_digest(client, gpu_image)
    if gpu_found != expected:
        state = "is not built here" if gpu_found is None else "holds other code"  # "" too: no digest
        return LocalImages(cpu_image, cpu_image, False, f"{gpu_image} {state}: the GPU tasks run in {cpu_image}")
    return LocalImages(
        cpu_image,
        gpu_image,
        True,
        f"GPU tasks run in {gpu_image}, given every GPU through the NVIDIA runtime (not run on a GPU machine here)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["digest"]:
        print("usage: python -m runners.images digest", file=sys.stderr)
        return 2
    print(source_digest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
