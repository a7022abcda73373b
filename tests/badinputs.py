"""Writers of small bad (and awkward-but-fine) image files, shared by the loader and CLI tests."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def rgb_image(seed: int = 0, size: tuple[int, int] = (56, 48)) -> np.ndarray:
    """A random RGB image (width, height): unique per seed, so never a duplicate by accident."""
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def write_rgb(path: Path, seed: int = 0, size: tuple[int, int] = (56, 48)) -> Path:
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
    _ok, data = cv2.imencode(".jpg", rgb_image(seed, (128, 96)))
    path.write_bytes(data.tobytes()[: len(data) // 2])
    return path


def grayscale(path: Path, seed: int = 0) -> Path:
    cv2.imwrite(str(path), rgb_image(seed)[..., 0])
    return path


def rgba_png(path: Path, seed: int = 0) -> Path:
    rgba = np.dstack([rgb_image(seed), np.full((48, 56), 200, np.uint8)])
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


# -- the bad-input corpus: one builder per kind, each planting its fault in a copy of the synthetic
# ALL-IDB data (`root`, holding ALL_IDB1/ and ALL_IDB2/). A builder returns the dataset folder to
# give an entry point, the file (or folder) the message must name, the words it must contain, and
# whether the input is refused (True) or accepted with the conversion reported (False).


@dataclass(frozen=True)
class Planted:
    dataset: Path
    named: Path
    message: str
    refused: bool = True


def _smear(root: Path) -> Path:
    return root / "ALL_IDB1" / "Im001_1.jpg"


def _folders(root: Path, names: dict[str, list[str]], same_pixels: bool = False) -> Path:
    """A folder-per-class dataset built from the synthetic single-cell crops."""
    crops = sorted((root / "ALL_IDB2").glob("*.tif"))
    target, i = root / "by_class", 0
    for label, files in names.items():
        for name in files:
            (target / label).mkdir(parents=True, exist_ok=True)
            source = crops[0 if same_pixels else i % len(crops)]
            cv2.imwrite(str(target / label / name), cv2.imread(str(source)))
            i += 1
    return target


def zero_byte(root: Path) -> Planted:
    _smear(root).write_bytes(b"")
    return Planted(root / "ALL_IDB1", _smear(root), "is empty (0 bytes)")


def truncated(root: Path) -> Planted:
    truncated_jpeg(_smear(root))
    return Planted(root / "ALL_IDB1", _smear(root), "is truncated or corrupt")


def corrupt(root: Path) -> Planted:
    _smear(root).write_bytes(b"\xff\xd8\xff\xe0" + np.random.default_rng(1).bytes(4000))
    return Planted(root / "ALL_IDB1", _smear(root), "is truncated or corrupt")


def not_an_image(root: Path) -> Planted:
    _smear(root).write_text("patient notes, not pixels\n")
    return Planted(root / "ALL_IDB1", _smear(root), "cannot be decoded")


def stray_file(root: Path) -> Planted:
    (root / "ALL_IDB1" / "notes.docx").write_bytes(b"PK\x03\x04 not an image")
    return Planted(
        root / "ALL_IDB1", root / "ALL_IDB1" / "notes.docx", "ignored: not an image of this dataset", refused=False
    )


def wrong_extension(root: Path) -> Planted:
    pixels = cv2.imread(str(_smear(root)))
    _, png = cv2.imencode(".png", pixels)
    _smear(root).write_bytes(png.tobytes())
    return Planted(root / "ALL_IDB1", _smear(root), "content is PNG although the name ends in .jpg", refused=False)


def _converted(root: Path, write, words: str) -> Planted:
    smear = _smear(root)
    pixels = cv2.imread(str(smear))
    target = smear.with_suffix(".png")
    smear.unlink()
    write(target, pixels)
    labels = smear.parent / "labels.csv"
    labels.write_text(labels.read_text().replace(smear.name, target.name))
    return Planted(root / "ALL_IDB1", target, words, refused=False)


def grayscale_smear(root: Path) -> Planted:
    return _converted(root, lambda p, px: cv2.imwrite(str(p), cv2.cvtColor(px, cv2.COLOR_BGR2GRAY)), "grayscale")


def rgba_smear(root: Path) -> Planted:
    return _converted(root, lambda p, px: cv2.imwrite(str(p), cv2.cvtColor(px, cv2.COLOR_BGR2BGRA)), "alpha")


def sixteen_bit_smear(root: Path) -> Planted:
    return _converted(root, lambda p, px: cv2.imwrite(str(p), px.astype(np.uint16) * 257), "16-bit")


def palette_smear(root: Path) -> Planted:
    return _converted(
        root,
        lambda p, px: Image.fromarray(px[..., ::-1]).convert("P", palette=Image.Palette.ADAPTIVE).save(p),
        "palette",
    )


def bomb(root: Path) -> Planted:
    _smear(root).unlink()
    target = png_bomb(_smear(root).with_suffix(".png"))
    return Planted(root / "ALL_IDB1", target, "decompression bomb")


def too_small(root: Path) -> Planted:
    smear = _smear(root)
    cv2.imwrite(str(smear), cv2.resize(cv2.imread(str(smear)), (24, 18)))
    return Planted(root / "ALL_IDB1", smear, "smaller than the minimum of 32 px")


def mislabelled(root: Path) -> Planted:
    crop = sorted((root / "ALL_IDB2").glob("*.tif"))[0]
    target = crop.with_name("Im001_7.tif")
    crop.rename(target)
    return Planted(root / "ALL_IDB2", target, "label suffix _7 is not 0 (healthy) or 1 (ALL)")


def unnamed(root: Path) -> Planted:
    target = _smear(root).with_name("smear one.jpg")
    _smear(root).rename(target)
    return Planted(root / "ALL_IDB1", target, "does not follow ALL-IDB's ImNNN_Y pattern")


def empty_folder(root: Path) -> Planted:
    (root / "empty").mkdir()
    return Planted(root / "empty", root / "empty", "no dataset found")


def empty_class_folder(root: Path) -> Planted:
    dataset = _folders(root, {"normal": ["a.png", "b.png"], "blast": ["c.png", "d.png"]})
    (dataset / "L3").mkdir()
    return Planted(dataset, dataset / "L3", "class folder has no images")


def one_class(root: Path) -> Planted:
    dataset = _folders(root, {"normal": ["a.png", "b.png", "c.png"]})
    return Planted(dataset, dataset, "has only one class ('normal')")


def duplicate_across_classes(root: Path) -> Planted:
    dataset = _folders(root, {"normal": ["a.png"], "blast": ["b.png"]}, same_pixels=True)
    return Planted(dataset, dataset / "normal" / "a.png", "is the same image as blast/b.png")


def duplicate_within_class(root: Path) -> Planted:
    """Public sets hold byte-identical files within a class: harmless once they share a group."""
    dataset = _folders(root, {"normal": ["a.png", "b.png"], "blast": ["c.png", "d.png"]})
    shutil.copyfile(dataset / "normal" / "a.png", dataset / "normal" / "b.png")
    return Planted(
        dataset,
        dataset / "normal" / "b.png",
        "is a byte-identical copy of normal/a.png (same class 'normal'): merged into one group",
        refused=False,
    )


def csv_names_missing_file(root: Path) -> Planted:
    labels = root / "ALL_IDB1" / "labels.csv"
    labels.write_text(labels.read_text().rstrip("\n") + "\nIm999_1.jpg,L2\n")
    return Planted(root / "ALL_IDB1", labels, "names 'Im999_1.jpg', which is not an image in")


def awkward_names(root: Path) -> Planted:
    """Spaces, unicode and HTML in file names are fine: they load and are escaped wherever shown."""
    dataset = _folders(root, {"normal": ["cell one.png", "célula_ü.png"], "blast": ["<script>.jpg", 'b&b "q".png']})
    return Planted(dataset, dataset, "4 images; normal=2 blast=2", refused=False)


def symlink_loop(root: Path) -> Planted:
    dataset = _folders(root, {"normal": ["a.png", "b.png"], "blast": ["c.png", "d.png"]})
    (dataset / "blast" / "again").symlink_to("..", target_is_directory=True)
    return Planted(dataset, dataset / "blast" / "again", "is a symlink loop")


def dangling_symlink(root: Path) -> Planted:
    target = _smear(root).with_name("Im099_1.jpg")
    target.symlink_to(root / "nowhere.jpg")
    return Planted(root / "ALL_IDB1", target, "is a dangling symlink")


def fifo(root: Path) -> Planted:
    """A named pipe named like an image: opening it would block until someone writes to it."""
    target = _smear(root).with_name("Im098_1.jpg")
    os.mkfifo(target)
    return Planted(root / "ALL_IDB1", target, "is a FIFO (named pipe), not a regular file; not opened")


def same_id_two_extensions(root: Path) -> Planted:
    dataset = _folders(root, {"normal": ["a.png", "a.jpg"], "blast": ["c.png", "d.png"]})
    return Planted(dataset, dataset / "normal" / "a.png", "has the same name as normal/a.jpg but for its extension")


def _with_labels(root: Path, rows: str, names: dict[str, list[str]] | None = None) -> Path:
    dataset = _folders(root, names or {"normal": ["a.png", "b.png"], "blast": ["c.png", "d.png"]})
    (dataset / "labels.csv").write_text(rows)
    return dataset


def csv_contradicts_folder(root: Path) -> Planted:
    dataset = _with_labels(
        root, "filename,class\nnormal/a.png,blast\nnormal/b.png,normal\nblast/c.png,blast\nblast/d.png,blast\n"
    )
    return Planted(dataset, dataset / "normal" / "a.png", "says 'blast' but its class folder says 'normal'")


def csv_bare_name_in_two_classes(root: Path) -> Planted:
    dataset = _with_labels(
        root,
        "filename,class\nx.png,normal\nb.png,normal\nd.png,blast\n",
        {"normal": ["x.png", "b.png"], "blast": ["x.png", "d.png"]},
    )
    return Planted(dataset, dataset / "blast" / "x.png", "row 'x.png' matches 2 files of this name")


def invisible_class_name(root: Path) -> Planted:
    dataset = _folders(root, {"normal": ["a.png", "b.png"], "blast": ["c.png"], "blast\u200b": ["d.png"]})
    return Planted(dataset, dataset / "blast\u200b" / "d.png", "invisible or control characters (U+200B)")


def csv_unknown_subtype(root: Path) -> Planted:
    labels = root / "ALL_IDB1" / "labels.csv"
    rows = labels.read_text().splitlines()
    index = next(i for i, row in enumerate(rows) if row.startswith("Im001_1.jpg,"))
    rows[index] = (
        rows[index]
        .replace("Im001_1.jpg,L1", "Im001_1.jpg,L9")
        .replace("Im001_1.jpg,L2", "Im001_1.jpg,L9")
        .replace("Im001_1.jpg,L3", "Im001_1.jpg,L9")
    )
    labels.write_text("\n".join(rows) + "\n")
    return Planted(
        root / "ALL_IDB1", _smear(root), "the label file says 'L9', which is none of the types an ALL image can have"
    )


def csv_header_with_spaces(root: Path) -> Planted:
    """'filename, class' names the same columns as 'filename,class'."""
    dataset = _with_labels(
        root, "filename, class\nnormal/a.png, normal\nnormal/b.png, normal\nblast/c.png, blast\nblast/d.png, blast\n"
    )
    return Planted(dataset, dataset, "4 images; normal=2 blast=2", refused=False)


def hidden_files(root: Path) -> Planted:
    """macOS's ._ files and thumbnail folders are skipped by every reader alike, and counted."""
    dataset = _folders(root, {"normal": ["a.png", "b.png"], "blast": ["c.png", "d.png"]})
    (dataset / "normal" / "._a.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    write_rgb(dataset / "blast" / ".thumbs" / "c.png", seed=99)
    return Planted(dataset, dataset, "ignored 2 hidden file(s) or folder(s)", refused=False)


def symlinked_class_folder(root: Path) -> Planted:
    """A class folder that is a link to images kept elsewhere is read like any other."""
    dataset = _folders(root, {"normal": ["a.png", "b.png"], "blast": ["c.png", "d.png"]})
    (dataset / "blast").rename(root / "kept_elsewhere")
    (dataset / "blast").symlink_to(root / "kept_elsewhere", target_is_directory=True)
    return Planted(dataset, dataset, "4 images; normal=2 blast=2", refused=False)


DATASET_CORPUS = {
    builder.__name__.replace("_", "-"): builder
    for builder in (
        zero_byte,
        truncated,
        corrupt,
        not_an_image,
        stray_file,
        wrong_extension,
        grayscale_smear,
        rgba_smear,
        sixteen_bit_smear,
        palette_smear,
        bomb,
        too_small,
        mislabelled,
        unnamed,
        empty_folder,
        empty_class_folder,
        one_class,
        duplicate_across_classes,
        duplicate_within_class,
        csv_names_missing_file,
        awkward_names,
        symlink_loop,
        dangling_symlink,
        fifo,
        same_id_two_extensions,
        csv_contradicts_folder,
        csv_bare_name_in_two_classes,
        invisible_class_name,
        csv_unknown_subtype,
        csv_header_with_spaces,
        hidden_files,
        symlinked_class_folder,
    )
}
