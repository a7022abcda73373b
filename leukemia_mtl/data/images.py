"""Reading one image safely: size checked before decoding, corruption caught, conversions reported."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from leukemia_mtl.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".jp2", ".ppm", ".pgm", ".pnm"}
)
_FORMAT_BY_EXTENSION = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}


@dataclass(frozen=True)
class LoadedImage:
    """8-bit RGB pixels plus every conversion made to get them (reported, never silent)."""

    rgb: np.ndarray
    conversions: tuple[str, ...]
    pixel_sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return self.rgb.shape[1], self.rgb.shape[0]


def read_image(path: Path | str, *, max_pixels: int, min_side: int = 1) -> LoadedImage:
    """Decode `path` to 8-bit RGB or raise ImageError naming the file and the problem.

    The header is read first (Pillow, lazily) so that a decompression bomb is refused before
    any pixel is decoded; Pillow's full load catches truncation that OpenCV would pass over
    with a grey tail; OpenCV then decodes the pixels.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    if size > max_file_bytes(max_pixels):  # refused before reading: a 2 GiB file behind a valid header
        raise ImageError(
            path,
            f"is {size:,} bytes, more than an image of at most {max_pixels:,} pixels can need "
            "(raise data.max_pixels if it is real)",
        )
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(path, f"cannot be read ({exc.strerror or exc})") from None
    return decode_image(data, path, max_pixels=max_pixels, min_side=min_side)


def decode_image(data: bytes, path: Path | str, *, max_pixels: int, min_side: int = 1) -> LoadedImage:
    """`read_image` for bytes that did not come from a file (the server's uploads): `path` names them in errors,
    and its suffix, if any, is checked against the content."""
    path = Path(path)
    if len(data) > max_file_bytes(max_pixels):
        raise ImageError(
            path,
            f"is {len(data):,} bytes, more than an image of at most {max_pixels:,} pixels can need "
            "(raise data.max_pixels if it is real)",
        )
    if not data:
        raise ImageError(path, "is empty (0 bytes)")

    conversions: list[str] = []
    pil_format, orientation = _probe_with_pillow(path, data, max_pixels, conversions)
    expected = _FORMAT_BY_EXTENSION.get(path.suffix.lower())
    if pil_format and expected and pil_format != expected:
        conversions.append(f"content is {pil_format} although the name ends in {path.suffix}")

    try:
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(path, f"cannot be decoded ({str(exc).strip().splitlines()[-1][:160]})") from None
    if decoded is None:
        what = f"{pil_format} data" if pil_format else "not an image format OpenCV can decode"
        raise ImageError(path, f"cannot be decoded ({what}; {len(data)} bytes)")
    height, width = decoded.shape[:2]
    if width * height > max_pixels:
        raise ImageError(path, _too_large(width, height, max_pixels))
    if min(width, height) < min_side:
        raise ImageError(path, f"is {width}x{height} px, smaller than the minimum of {min_side} px per side")

    rgb = _to_rgb8(path, decoded, conversions)
    # pixels as every viewer shows them, so a mask drawn there fits; OpenCV's TIFF decoder applies the
    # tag itself (even with IMREAD_UNCHANGED), its JPEG, PNG and WebP decoders do not
    if orientation in _ORIENTATIONS and pil_format != "TIFF":
        rgb = np.ascontiguousarray(_ORIENTATIONS[orientation](rgb))
    if orientation in _ORIENTATIONS:
        conversions.append(f"turned upright as its EXIF orientation ({orientation}) says, as viewers show it")
    digest = hashlib.sha256(rgb.tobytes()).hexdigest()
    return LoadedImage(rgb=rgb, conversions=tuple(conversions), pixel_sha256=digest)


def max_file_bytes(max_pixels: int) -> int:
    """The most bytes an image of `max_pixels` can take: uncompressed 16-bit RGBA plus headers."""
    return max_pixels * 8 + (16 << 20)


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return (
        f"is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
        "(a decompression bomb, or raise data.max_pixels)"
    )


# EXIF orientation -> the transform that shows the stored pixels upright (PIL's exif_transpose)
_ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _probe_with_pillow(path: Path, data: bytes, max_pixels: int, conversions: list[str]) -> tuple[str | None, int]:
    """(format, EXIF orientation) from the header; 1 is upright."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise ImageError(path, _too_large(width, height, max_pixels))
                if probe.mode == "P":
                    conversions.append("palette image expanded to RGB")
                frames = getattr(probe, "n_frames", 1)
                if frames > 1:
                    conversions.append(f"holds {frames} pages; page 1 is used, the others are ignored")
                orientation = int(probe.getexif().get(0x0112, 1) or 1)
                probe.load()
                return probe.format, orientation
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(path, f"is refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        return None, 1  # a format only OpenCV knows; it gets the final word below
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"is truncated or corrupt ({exc})") from None


def significant_bits(pixels: np.ndarray) -> int:
    """The bit depth a 16-bit image's colour samples use (alpha aside): 8, 10, 12 or 14 where none exceeds that
    depth's largest value (a microscope camera's 12-bit samples stored in a 16-bit TIFF), else 16. Scaled as
    16-bit, a 12-bit image turns nearly black, and a blast's crop with it. Decided per image, from its data."""
    colour = pixels[..., :3] if pixels.ndim == 3 and pixels.shape[2] == 4 else pixels
    largest = int(colour.max()) if colour.size else 0
    return next((bits for bits in (8, 10, 12, 14) if largest < (1 << bits)), 16)


def _to_rgb8(path: Path, pixels: np.ndarray, conversions: list[str]) -> np.ndarray:
    if pixels.dtype == np.uint16:
        bits = significant_bits(pixels)
        pixels = cv2.convertScaleAbs(pixels, alpha=255.0 / ((1 << bits) - 1))
        conversions.append(
            "16-bit samples scaled to 8-bit"
            if bits == 16
            else f"16-bit samples holding {bits}-bit data (none above {(1 << bits) - 1}, as a {bits}-bit "
            f"camera writes them) scaled from 0-{(1 << bits) - 1} to 8-bit"
        )
    elif pixels.dtype != np.uint8:
        raise ImageError(path, f"has {pixels.dtype} samples; expected 8- or 16-bit integers")

    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels == 1:
        conversions.append("grayscale converted to RGB")
        return cv2.cvtColor(pixels.reshape(pixels.shape[:2]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if channels == 4:
        conversions.append("alpha channel dropped")
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    raise ImageError(path, f"has {channels} channels; expected grayscale, RGB or RGBA")


def read_mask(path: Path | str, expected_size: tuple[int, int], *, max_pixels: int) -> np.ndarray:
    """A binary mask (0/255, HxW) that must match its image's (width, height)."""
    loaded = read_image(path, max_pixels=max_pixels)
    if loaded.size != expected_size:
        raise ImageError(
            path,
            f"mask is {loaded.size[0]}x{loaded.size[1]} but its image is {expected_size[0]}x{expected_size[1]}",
        )
    gray = loaded.rgb[..., 0]
    return np.where(gray > 127, 255, 0).astype(np.uint8)
