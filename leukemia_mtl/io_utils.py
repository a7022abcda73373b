"""Writes that never leave a half-written file under its final name."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from leukemia_mtl.errors import LeukemiaMtlError


@contextmanager
def atomic_path(path: Path | str, suffix: str = ".part") -> Iterator[Path]:
    """A temporary sibling (.NAME.*SUFFIX) to write, renamed over `path` (after fsync, mode 0644)
    only when the block ends without an exception, and removed when it raises: a reader never
    sees a half-written or unverified file under the final name. For writers that want a name
    (Keras insists on a .keras suffix); `atomic_writer` for those that take a handle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        synced = os.open(tmp, os.O_RDONLY)  # the data on disk before the name points at it
        try:
            os.fsync(synced)
        finally:
            os.close(synced)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a write or fsync failed: name what was being written
            exc.filename = str(path)
        raise


@contextmanager
def atomic_writer(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """An open handle on `atomic_path`'s sibling: what the block writes appears under `path` only
    if the block succeeds (a download checks size and sha256 inside it, and a mismatch raises)."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_writer(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_image(path: Path | str, image: np.ndarray, params: list[int] | None = None) -> Path:
    """Encode with OpenCV by the file's extension; `image` is RGB (HxWx3) or a mask (HxW)."""
    path = Path(path)
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(path.suffix, pixels, params or [])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image as {path.suffix!r} for {path}")
    return atomic_write_bytes(path, encoded.tobytes())


def atomic_write_csv(path: Path | str, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def read_csv(path: Path | str) -> list[dict[str, str]]:
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    return file_digests(path, ("sha256",))["sha256"]


def file_digests(path: Path | str, algorithms: tuple[str, ...]) -> dict[str, str]:
    """Hex digests of a file under several hashlib algorithms, in one pass over its bytes."""
    digests = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            for digest in digests.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in digests.items()}


LOCK_FILE = ".run.lock"


@contextmanager
def exclusive_folder(path: Path | str, what: str = "run") -> Iterator[Path]:
    """Create `path` and hold an exclusive lock on it: two runs into one output folder would both
    succeed and leave outputs.json naming only one of them. The lock dies with the process."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise LeukemiaMtlError(f"{folder}: is a file; give a folder for the {what}'s outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held for the run: closed by the `with handle:` below)
    except OSError as exc:
        raise LeukemiaMtlError(f"{folder}: cannot be used for the {what}'s outputs ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LeukemiaMtlError(
                f"{folder}: another {what} is writing here ({holder}); wait for it to finish "
                "or give another --output-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield folder
