"""Writes that never leave a half-written file under its final name."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write to a temporary sibling, fsync, then rename over the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def save_model_bundle(model: Any, directory: Path | str, model_file: str, meta_file: str, meta: dict) -> Path:
    """A Keras model and its JSON description side by side, each written under a temporary name
    and renamed, so a reader never sees half a bundle under the final names.

    Architecture and weights only: a compiled model's file would also carry the optimizer's state
    (Adam: twice the weights) that nobody reads, since every stage starts a fresh optimizer; the
    uncompiled functional copy shares the layers, so nothing is copied.
    """
    import keras

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{model_file}.part.keras"  # Keras insists on the .keras suffix
    # model.input/.output keep the built structure (one tensor, not a list of one): a loaded model
    # then takes a plain batch, as the model it was saved from did, without Keras' structure warning
    keras.Model(model.input, model.output, name=model.name).save(tmp)
    tmp.replace(directory / model_file)
    atomic_write_json(directory / meta_file, meta)
    return directory


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


def load_keras_model(path: Path | str, error: type[Exception]) -> Any:
    """A .keras file in Keras' safe mode (a Lambda layer or other code is refused); any failure
    is one `error` naming the file, never Keras' traceback."""
    import zipfile

    import keras

    if not zipfile.is_zipfile(path):
        raise error(f"{path}: not a Keras model file (truncated or another format)")
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file; the user needs one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise error(f"{path}: cannot be loaded as a Keras model ({type(exc).__name__}: {first})") from None


LOCK_FILE = ".run.lock"


@contextmanager
def exclusive_folder(path: Path | str, what: str = "run") -> Iterator[Path]:
    """Create `path` and hold an exclusive lock on it: two runs into one output folder would both
    succeed and leave outputs.json naming only one of them. The lock dies with the process."""
    import fcntl

    from leukemia_mtl.errors import LeukemiaMtlError

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise LeukemiaMtlError(f"{folder}: is a file; give a folder for the {what}'s outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_FILE, "a+")
    except OSError as exc:
        raise LeukemiaMtlError(f"{folder}: cannot be used for the {what}'s outputs ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LeukemiaMtlError(f"{folder}: another {what} is writing here ({holder}); wait for it to finish "
                                   "or give another --output-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield folder
