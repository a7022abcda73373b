"""Dataset layouts: ALL-IDB1, ALL-IDB2 and folder-per-class, read into one record list.

Reading happens in two passes so that a user hears about every problem at once: `scan_dataset`
reads names, label files and blast centres (cheap); `check_images` decodes every image and
mask. Both collect problems and raise one DatasetError listing them all.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from leukemia_mtl.config import DataConfig
from leukemia_mtl.data.images import IMAGE_EXTENSIONS, read_image, read_mask
from leukemia_mtl.errors import DatasetError, ImageError, Problem

LAYOUTS = ("allidb1", "allidb2", "folders")
ALLIDB_NAME = re.compile(r"^Im(?P<number>\d+)_(?P<suffix>.*)$")
LABELS_FILE = "labels.csv"
MASKS_DIR = "masks"


@dataclass(frozen=True)
class ImageRecord:
    """One image with its labels; `group` is the source image that crops and copies inherit."""

    path: Path
    rel_path: str
    label: str
    positive: bool
    group: str
    blast_centres: tuple[tuple[int, int], ...] | None = None
    mask_path: Path | None = None

    @property
    def image_id(self) -> str:
        return Path(self.rel_path).with_suffix("").as_posix()


@dataclass
class Dataset:
    name: str
    layout: str
    root: Path
    records: list[ImageRecord]
    classes: tuple[str, ...]
    negative_class: str
    notes: list[Problem] = field(default_factory=list)
    # images whose label is missing or bad: not records, but still decoded by check_images so
    # that every problem with a file is reported in one pass
    unlabeled: list[Path] = field(default_factory=list)

    @property
    def single_cell(self) -> bool:
        """One white cell per image (ALL-IDB2 style, or a run's `cells` input), not a smear."""
        return self.name == CELLS_DIR or (self.layout == "allidb2" and self.name != SMEARS_DIR)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(r.label for r in self.records)
        return {c: counts.get(c, 0) for c in self.classes}

    @property
    def has_masks(self) -> bool:
        return any(r.mask_path is not None for r in self.records)


SMEARS_DIR, CELLS_DIR = "smears", "cells"  # a run's ingested inputs, by role


def find_datasets(root: Path | str) -> list[Path]:
    """ALL_IDB1/ALL_IDB2 under a generator-style root, a run's smears/cells, or the root itself."""
    root = Path(root)
    if not root.exists():
        raise DatasetError([Problem(str(root), "does not exist")])
    if not root.is_dir():
        raise DatasetError([Problem(str(root), "is a file; give the dataset's folder")])
    found = [root / name for name in (SMEARS_DIR, CELLS_DIR) if (root / name).is_dir()]
    found = found or [root / name for name in ("ALL_IDB1", "ALL_IDB2") if (root / name).is_dir()]
    return found or [root]


def detect_layout(path: Path) -> str:
    if path.name.upper() == "ALL_IDB1":
        return "allidb1"
    if path.name.upper() == "ALL_IDB2":
        return "allidb2"
    candidates = [p for p in _image_files(path, recursive=False)]
    for sub in ("im", "img"):
        if (path / sub).is_dir():
            candidates += _image_files(path / sub, recursive=False)
    named = [p for p in candidates if ALLIDB_NAME.match(p.stem)]
    if named:
        tif = sum(p.suffix.lower() in (".tif", ".tiff") for p in named)
        return "allidb2" if tif > len(named) / 2 else "allidb1"
    if any(child.is_dir() and not child.name.startswith(".") for child in path.iterdir()):
        return "folders"
    raise DatasetError(
        [
            Problem(
                str(path),
                "no dataset found: expected ALL-IDB files (ImNNN_Y.jpg / ImNNN_Y.tif) "
                "or one sub-folder of images per class",
            )
        ]
    )


def scan_dataset(
    path: Path | str,
    data_cfg: DataConfig,
    *,
    layout: str = "auto",
    labels_csv: Path | str | None = None,
) -> Dataset:
    """Names, labels and blast centres of every image; raises DatasetError listing all problems."""
    dataset, problems = _scan(Path(path), data_cfg, layout, labels_csv)
    if problems:
        raise DatasetError(problems)
    return dataset


def _scan(path: Path, data_cfg: DataConfig, layout: str, labels_csv: Path | str | None) -> tuple[Dataset, list[Problem]]:
    if not path.is_dir():
        raise DatasetError([Problem(str(path), "does not exist or is not a folder")])
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise DatasetError([Problem(layout, f"unknown layout; choose one of {', '.join(LAYOUTS)}")])

    problems: list[Problem] = []
    notes: list[Problem] = []
    csv_path = Path(labels_csv) if labels_csv else (path / LABELS_FILE if (path / LABELS_FILE).is_file() else None)
    csv_rows = _read_labels_csv(csv_path, problems) if csv_path else None

    if layout == "folders":
        entries = _scan_folders(path, problems, notes)
    else:
        entries = _scan_allidb(path, layout, data_cfg, problems, notes)

    records = _label_records(path, entries, csv_path, csv_rows, data_cfg, problems)
    labeled = {r.path for r in records}
    unlabeled = [e.path for e in entries if e.path not in labeled] + [Path(p.where) for p in problems if _is_unparsed_image(p.where)]
    classes = _ordered_classes(records, data_cfg.negative_class)
    if not records and not problems:
        problems.append(Problem(str(path), "contains no images"))
    elif records and len(classes) < 2:
        problems.append(
            Problem(str(path), f"has only one class ({classes[0]!r}); detection and classification need two or more")
        )
    if records and data_cfg.negative_class not in classes:
        problems.append(
            Problem(
                str(path),
                f"negative class {data_cfg.negative_class!r} not found among classes {list(classes)}; "
                "set data.negative_class",
            )
        )
    dataset = Dataset(
        name=path.name, layout=layout, root=path, records=records, classes=classes,
        negative_class=data_cfg.negative_class, notes=notes, unlabeled=sorted(set(unlabeled)),
    )
    if path.name == SMEARS_DIR and layout == "allidb2":
        problems.append(Problem(str(path), "holds single-cell images (ALL-IDB2 layout), not smears; give it as the cells input"))
    if path.name == CELLS_DIR and layout == "allidb1":
        problems.append(Problem(str(path), "holds smears (ALL-IDB1 layout), not single-cell images; give it as the smears input"))
    return dataset, problems


def _is_unparsed_image(where: str) -> bool:
    path = Path(where)
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


@dataclass(frozen=True)
class _Entry:
    path: Path
    label_hint: str  # folder name, or ALL-IDB's suffix
    blast_centres: tuple[tuple[int, int], ...] | None
    mask_path: Path | None


def _image_files(folder: Path, *, recursive: bool) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _report_other_files(folder: Path, used: set[Path], notes: list[Problem]) -> None:
    for other in sorted(p for p in folder.rglob("*") if p.is_file() and p not in used):
        if other.name.startswith("."):
            continue
        notes.append(Problem(str(other), "ignored: not an image of this dataset"))


def _scan_allidb(path: Path, layout: str, data_cfg: DataConfig, problems: list[Problem], notes: list[Problem]) -> list[_Entry]:
    image_dirs = [path] + [path / sub for sub in ("im", "img") if (path / sub).is_dir()]
    xyc_dirs = [path] + ([path / "xyc"] if (path / "xyc").is_dir() else [])
    used: set[Path] = set()
    entries: list[_Entry] = []
    for folder in image_dirs:
        for image in _image_files(folder, recursive=False):
            used.add(image)
            match = ALLIDB_NAME.match(image.stem)
            if not match:
                problems.append(Problem(str(image), "name does not follow ALL-IDB's ImNNN_Y pattern (Y = 0 healthy, 1 ALL)"))
                continue
            suffix = match["suffix"]
            if suffix not in ("0", "1"):
                problems.append(Problem(str(image), f"label suffix _{suffix} is not 0 (healthy) or 1 (ALL)"))
                continue
            centres = None
            xyc = next((d / f"{image.stem}.xyc" for d in xyc_dirs if (d / f"{image.stem}.xyc").is_file()), None)
            if xyc is not None:
                used.add(xyc)
                centres = _read_xyc(xyc, problems)
                if centres and suffix == "0":
                    problems.append(Problem(str(xyc), f"lists {len(centres)} blast centres for a healthy (_0) image"))
            mask = path / MASKS_DIR / f"{image.stem}.png"
            if mask.is_file():
                used.add(mask)
            entries.append(_Entry(image, suffix, centres, mask if mask.is_file() else None))
    used.update(p for p in path.glob(LABELS_FILE))
    _report_other_files(path, used, notes)
    return entries


def _read_xyc(path: Path, problems: list[Problem]) -> tuple[tuple[int, int], ...] | None:
    centres: list[tuple[int, int]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(path), f"cannot be read as text ({exc})"))
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            x, y = (int(round(float(v))) for v in fields)
        except ValueError:
            problems.append(Problem(f"{path}:{number}", f"expected 'x y' blast centre, got {line.strip()!r}"))
            continue
        if x < 0 or y < 0:
            problems.append(Problem(f"{path}:{number}", f"negative coordinate in {line.strip()!r}"))
            continue
        centres.append((x, y))
    return tuple(centres)


def _scan_folders(path: Path, problems: list[Problem], notes: list[Problem]) -> list[_Entry]:
    entries: list[_Entry] = []
    used: set[Path] = set()
    for loose in _image_files(path, recursive=False):
        problems.append(Problem(str(loose), "image outside any class folder (one sub-folder per class)"))
        used.add(loose)
    for class_dir in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = [p for p in _image_files(class_dir, recursive=True) if MASKS_DIR not in p.relative_to(class_dir).parts]
        if not images:
            problems.append(Problem(str(class_dir), "class folder has no images"))
        for image in images:
            used.add(image)
            mask = image.parent / MASKS_DIR / f"{image.stem}.png"
            if mask.is_file():
                used.add(mask)
            entries.append(_Entry(image, class_dir.name, None, mask if mask.is_file() else None))
    used.update(path.glob(LABELS_FILE))
    _report_other_files(path, used, notes)
    return entries


def _read_labels_csv(csv_path: Path, problems: list[Problem]) -> dict[str, tuple[str, str | None]] | None:
    """file name -> (class, patient or None)."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(csv_path), f"label file cannot be read ({exc})"))
        return None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "filename" not in header or "class" not in header:
        problems.append(Problem(str(csv_path), f"label file needs columns 'filename' and 'class' (optional 'patient'); found {header}"))
        return None
    rows: dict[str, tuple[str, str | None]] = {}
    for number, row in enumerate(reader, start=2):
        name = (row.get("filename") or "").strip()
        label = (row.get("class") or "").strip()
        if not name or not label:
            problems.append(Problem(f"{csv_path}:{number}", "row needs both a filename and a class"))
            continue
        if name in rows:
            problems.append(Problem(f"{csv_path}:{number}", f"{name!r} is listed twice"))
            continue
        rows[name] = (label, (row.get("patient") or "").strip() or None)
    return rows


def _label_records(
    root: Path,
    entries: list[_Entry],
    csv_path: Path | None,
    csv_rows: dict[str, tuple[str, str | None]] | None,
    data_cfg: DataConfig,
    problems: list[Problem],
) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    matched: set[str] = set()
    is_allidb = any(e.label_hint in ("0", "1") for e in entries) and all(ALLIDB_NAME.match(e.path.stem) for e in entries)
    for entry in entries:
        rel = entry.path.relative_to(root).as_posix()
        patient = None
        if csv_rows is not None:
            key = rel if rel in csv_rows else entry.path.name
            if key not in csv_rows:
                problems.append(Problem(str(entry.path), f"has no row in the label file {csv_path}"))
                continue
            matched.add(key)
            label, patient = csv_rows[key]
            if is_allidb and (label == data_cfg.negative_class) != (entry.label_hint == "0"):
                problems.append(
                    Problem(str(entry.path), f"label file says {label!r} but the name's suffix _{entry.label_hint} says the opposite")
                )
                continue
        elif is_allidb:
            label = data_cfg.negative_class if entry.label_hint == "0" else data_cfg.positive_class_name
        else:
            label = entry.label_hint
        group = f"patient:{patient}" if patient else Path(rel).with_suffix("").as_posix()
        records.append(
            ImageRecord(
                path=entry.path, rel_path=rel, label=label, positive=label != data_cfg.negative_class,
                group=group, blast_centres=entry.blast_centres, mask_path=entry.mask_path,
            )
        )
    if csv_rows is not None:
        for missing in sorted(set(csv_rows) - matched):
            if not any(e.path.name == missing or e.path.relative_to(root).as_posix() == missing for e in entries):
                problems.append(Problem(str(csv_path), f"names {missing!r}, which is not an image in {root}"))
    return records


def _ordered_classes(records: list[ImageRecord], negative_class: str) -> tuple[str, ...]:
    """Negative class first, then the rest sorted: a stable index for every class."""
    labels = {r.label for r in records}
    rest = sorted(labels - {negative_class})
    return tuple(([negative_class] if negative_class in labels else []) + rest)


@dataclass(frozen=True)
class ImageCheck:
    record: ImageRecord
    width: int
    height: int
    conversions: tuple[str, ...]


def check_images(dataset: Dataset, data_cfg: DataConfig, *, progress: bool = True) -> list[ImageCheck]:
    """Decode every image and mask once; raise DatasetError listing every bad file and duplicate."""
    problems: list[Problem] = []
    checks: list[ImageCheck] = []
    first_seen: dict[str, ImageRecord] = {}
    for record in tqdm(dataset.records, desc=f"checking {dataset.name}", unit="img", disable=not progress or None):
        try:
            loaded = read_image(record.path, max_pixels=data_cfg.max_pixels, min_side=data_cfg.min_side)
        except ImageError as exc:
            problems.append(exc.problem)
            continue
        width, height = loaded.size
        if loaded.pixel_sha256 in first_seen:
            other = first_seen[loaded.pixel_sha256]
            clash = f" with a different class ({other.label!r} vs {record.label!r})" if other.label != record.label else ""
            problems.append(Problem(str(record.path), f"is the same image as {other.rel_path}{clash}"))
            continue
        first_seen[loaded.pixel_sha256] = record
        for x, y in record.blast_centres or ():
            if x >= width or y >= height:
                problems.append(Problem(str(record.path), f"blast centre ({x}, {y}) lies outside the {width}x{height} image"))
        if record.mask_path is not None:
            try:
                read_mask(record.mask_path, (width, height), max_pixels=data_cfg.max_pixels)
            except ImageError as exc:
                problems.append(exc.problem)
        for conversion in loaded.conversions:
            dataset.notes.append(Problem(str(record.path), conversion))
        checks.append(ImageCheck(record, width, height, loaded.conversions))
    for path in dataset.unlabeled:
        try:
            read_image(path, max_pixels=data_cfg.max_pixels, min_side=data_cfg.min_side)
        except ImageError as exc:
            problems.append(exc.problem)
    if problems:
        raise DatasetError(problems)
    return checks


def load_datasets(
    root: Path | str,
    data_cfg: DataConfig,
    *,
    layout: str = "auto",
    labels_csv: Path | str | None = None,
    check: bool = True,
    progress: bool = True,
) -> list[Dataset]:
    """Every dataset under `root`, scanned and (by default) fully checked; all problems at once."""
    datasets: list[Dataset] = []
    problems: list[Problem] = []
    paths = find_datasets(root)
    if labels_csv is not None and len(paths) > 1:
        raise DatasetError([Problem(str(root), "holds several datasets; give the one the label file belongs to")])
    for path in paths:
        try:
            dataset, scan_problems = _scan(path, data_cfg, layout, labels_csv)
        except DatasetError as exc:  # no dataset recognisable at all
            problems.extend(exc.problems)
            continue
        problems.extend(scan_problems)
        if check:
            try:
                check_images(dataset, data_cfg, progress=progress)
            except DatasetError as exc:
                problems.extend(exc.problems)
        datasets.append(dataset)
    if problems:
        raise DatasetError(sorted(problems, key=lambda p: p.where))
    return datasets
