"""One image at a time: every kind of bad file gets one clear ImageError naming it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from badinputs import (
    float_tiff,
    grayscale,
    palette_png,
    png_bomb,
    rgb_image,
    rgba_png,
    sixteen_bit_png,
    truncated_jpeg,
    write_rgb,
)
from leukemia_mtl.data.images import read_image, read_mask
from leukemia_mtl.errors import ImageError

LIMIT = 4096 * 4096


def test_good_image_decodes_to_rgb8(tmp_path):
    path = write_rgb(tmp_path / "ok.png", seed=3)
    loaded = read_image(path, max_pixels=LIMIT)
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (48, 56, 3)
    np.testing.assert_array_equal(loaded.rgb, rgb_image(3))  # RGB order, not BGR
    assert loaded.conversions == ()


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda p: ((p / "empty.jpg").write_bytes(b"") and p / "empty.jpg") or p / "empty.jpg",
            r"is empty \(0 bytes\)",
        ),
        (lambda p: truncated_jpeg(p / "cut.jpg"), "truncated or corrupt"),
        (lambda p: (p / "notes.jpg").write_text("these are my notes") and p / "notes.jpg", "cannot be decoded"),
        (
            lambda p: (p / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200))) and p / "noise.png",
            "truncated or corrupt|cannot be decoded",
        ),
        (lambda p: png_bomb(p / "bomb.png"), "over the limit|decompression bomb"),
        (lambda p: float_tiff(p / "float.tif"), "float32 samples"),
        (lambda p: write_rgb(p / "tiny.png", size=(8, 8)), "smaller than the minimum"),
        (lambda p: p, "is a directory"),
    ],
    ids=["zero-byte", "truncated", "text-as-jpg", "corrupt-png", "bomb", "float-tiff", "too-small", "directory"],
)
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ImageError, match=message) as info:
        read_image(path, max_pixels=LIMIT, min_side=16)
    assert str(path) in str(info.value)


def test_bomb_is_refused_before_decoding(tmp_path):
    """A 10-gigapixel header must not allocate: the check happens on the header alone."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="decompression bomb.*10000000000 pixels"):
        read_image(png_bomb(tmp_path / "bomb.png"), max_pixels=LIMIT)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


@pytest.mark.parametrize(
    "make, conversion",
    [
        (grayscale, "grayscale converted to RGB"),
        (rgba_png, "alpha channel dropped"),
        (sixteen_bit_png, "16-bit samples scaled to 8-bit"),
        (palette_png, "palette image expanded to RGB"),
    ],
)
def test_documented_conversions_are_reported(tmp_path, make, conversion):
    path = make(tmp_path / f"{make.__name__}.png")
    loaded = read_image(path, max_pixels=LIMIT)
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape[2] == 3
    assert conversion in loaded.conversions


def test_sixteen_bit_keeps_the_picture(tmp_path):
    loaded = read_image(sixteen_bit_png(tmp_path / "deep.png", seed=5), max_pixels=LIMIT)
    assert np.abs(loaded.rgb.astype(int) - rgb_image(5).astype(int)).max() <= 1


def test_wrong_extension_is_read_by_content_and_reported(tmp_path):
    path = tmp_path / "really_png.jpg"
    write_rgb(tmp_path / "x.png", seed=2).rename(path)
    loaded = read_image(path, max_pixels=LIMIT)
    assert "content is PNG although the name ends in .jpg" in loaded.conversions


def test_mask_of_the_wrong_size_names_both_sizes(tmp_path):
    path = write_rgb(tmp_path / "mask.png", size=(32, 32))
    with pytest.raises(ImageError, match="mask is 32x32 but its image is 56x48"):
        read_mask(path, (56, 48), max_pixels=LIMIT)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_orientation_is_applied_as_viewers_show_the_image(tmp_path, orientation, suffix):
    from PIL import ImageOps

    stored = np.kron(rgb_image(seed=orientation, size=(8, 5)), np.ones((8, 8, 1), np.uint8))  # blocks survive JPEG
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned_{orientation}{suffix}"
    Image.fromarray(stored).save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    loaded = read_image(path, max_pixels=10**8)
    with Image.open(path) as viewed:
        upright = np.asarray(ImageOps.exif_transpose(viewed).convert("RGB"))
    assert loaded.rgb.shape == upright.shape
    assert np.abs(loaded.rgb.astype(int) - upright).mean() < (3 if suffix == ".jpg" else 1e-9)
    assert any("EXIF orientation" in c for c in loaded.conversions) == (orientation != 1)


def test_a_multi_page_tiff_says_which_page_it_uses(tmp_path):
    path = tmp_path / "stack.tif"
    pages = [Image.fromarray(rgb_image(seed=i)) for i in range(3)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    loaded = read_image(path, max_pixels=10**8)
    assert np.array_equal(loaded.rgb, rgb_image(seed=0))
    assert "holds 3 pages; page 1 is used, the others are ignored" in loaded.conversions


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_a_cameras_12_bit_samples_in_a_16_bit_tiff_are_scaled_as_12_bit_and_said_so(tmp_path, bits):
    """Many microscope cameras store 12-bit samples in a 16-bit TIFF: scaled as 16-bit the image turns nearly black
    (a blast's crop and its verdict with it). The depth is read from the data, and the note says what was done."""
    rgb = np.random.default_rng(0).integers(0, 256, (40, 48, 3)).astype(np.uint8)
    wide = (rgb.astype(np.uint32) * ((1 << bits) - 1) // 255).astype(np.uint16)
    path = tmp_path / f"camera{bits}.tif"
    assert cv2.imwrite(str(path), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    loaded = read_image(path, max_pixels=LIMIT)
    assert np.abs(loaded.rgb.astype(int) - rgb).max() <= 1
    expected = (
        "16-bit samples scaled to 8-bit"
        if bits == 16
        else f"16-bit samples holding {bits}-bit data (none above {(1 << bits) - 1}"
    )
    assert any(c.startswith(expected) for c in loaded.conversions), loaded.conversions
