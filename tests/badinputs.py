"""Writers of small bad (and awkward-but-fine) image files, shared by the loader and CLI tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def rgb_image(seed: int = 0, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A random RGB image (width, height): unique per seed, so never a duplicate by accident."""
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def write_rgb(path: Path, seed: int = 0, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb_image(seed, size), cv2.COLOR_RGB2BGR))
    return path


def png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A PNG whose header claims width x height pixels (10 G px by default) in a few hundred bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def truncated_jpeg(path: Path, seed: int = 0) -> Path:
    ok, data = cv2.imencode(".jpg", rgb_image(seed, (128, 96)))
    path.write_bytes(data.tobytes()[: len(data) // 2])
    return path


def grayscale(path: Path, seed: int = 0) -> Path:
    cv2.imwrite(str(path), rgb_image(seed)[..., 0])
    return path


def rgba_png(path: Path, seed: int = 0) -> Path:
    rgba = np.dstack([rgb_image(seed), np.full((48, 64), 200, np.uint8)])
    cv2.imwrite(str(path), rgba)
    return path


def sixteen_bit_png(path: Path, seed: int = 0) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb_image(seed), cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    return path


def palette_png(path: Path, seed: int = 0) -> Path:
    Image.fromarray(rgb_image(seed)).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    return path


def float_tiff(path: Path, seed: int = 0) -> Path:
    cv2.imwrite(str(path), rgb_image(seed).astype(np.float32) / 255)
    return path
