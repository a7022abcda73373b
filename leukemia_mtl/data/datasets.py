"""Dataset layouts: ALL-IDB1, ALL-IDB2 and folder-per-class, read into one record list.

Reading happens in two passes so that a user hears about every problem at once: `scan_dataset`
reads names, label files and blast centres (cheap); `check_images` decodes every image and
mask. Both collect problems and raise one DatasetError listing them all.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from leukemia_mtl.config import DataConfig
from leukemia_mtl.data.files import Tree, not_regular, walk
from leukemia_mtl.data.images import IMAGE_EXTENSIONS, read_image, read_mask
from leukemia_mtl.errors import DatasetError, ImageError, Problem
from leukemia_mtl.io_utils import sha256_file

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
    # (copy, original) rel paths of byte-identical files within one class: both kept, and the split
    # puts them in one group (train.data.duplicate_groups), so they never straddle a fold
    merged_duplicates: list[tuple[str, str]] = field(default_factory=list)

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


def detect_layout(path: Path, tree: Tree | None = None) -> str:
    if path.name.upper() == "ALL_IDB1":
        return "allidb1"
    if path.name.upper() == "ALL_IDB2":
        return "allidb2"
    tree = tree or walk(path)
    candidates = _image_files(tree, path, recursive=False)
    for sub in ("im", "img"):
        candidates += _image_files(tree, path / sub, recursive=False)
    named = [p for p in candidates if ALLIDB_NAME.match(p.stem)]
    if named:
        tif = sum(p.suffix.lower() in (".tif", ".tiff") for p in named)
        return "allidb2" if tif > len(named) / 2 else "allidb1"
    if any(folder.parent == path for folder in tree.folders):
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


def _scan(
    path: Path, data_cfg: DataConfig, layout: str, labels_csv: Path | str | None
) -> tuple[Dataset, list[Problem]]:
    data_cfg = dataclasses.replace(  # the configured names in the form the data's are read in (nfc)
        data_cfg,
        negative_class=nfc(data_cfg.negative_class),
        smears_negative_class=nfc(data_cfg.smears_negative_class),
        cells_negative_class=nfc(data_cfg.cells_negative_class),
        positive_class_name=nfc(data_cfg.positive_class_name),
        subtypes=tuple(nfc(name) for name in data_cfg.subtypes),
    )
    if not path.is_dir():
        raise DatasetError([Problem(str(path), "does not exist or is not a folder")])
    tree = walk(path)
    if layout == "auto":
        layout = detect_layout(path, tree)
    if layout not in LAYOUTS:
        raise DatasetError([Problem(layout, f"unknown layout; choose one of {', '.join(LAYOUTS)}")])

    problems: list[Problem] = list(tree.problems)
    notes: list[Problem] = tree.notes()
    csv_path = Path(labels_csv) if labels_csv else (path / LABELS_FILE if path / LABELS_FILE in tree.files else None)
    csv_rows = _read_labels_csv(csv_path, problems) if csv_path else None

    if layout == "folders":
        entries = _scan_folders(path, tree, problems, notes)
    else:
        entries = _scan_allidb(path, tree, layout, data_cfg, problems, notes)

    # a run's input may name its negatives otherwise (data.smears_negative_class): read as the run's name
    alias = getattr(data_cfg, f"{path.name}_negative_class", "").strip() if path.name in (SMEARS_DIR, CELLS_DIR) else ""
    alias = "" if alias == data_cfg.negative_class else alias
    records = _label_records(path, entries, csv_path, csv_rows, data_cfg, problems, alias)
    if alias and any(r.label == data_cfg.negative_class for r in records):
        notes.append(Problem(str(path), f"class {alias!r} is this run's negative class {data_cfg.negative_class!r}"))
    labeled = {r.path for r in records}
    unlabeled = [e.path for e in entries if e.path not in labeled] + [
        Path(p.where) for p in problems if _is_unparsed_image(p.where)
    ]
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
                "set data.negative_class (or, for one input of a run, data.smears_negative_class / data.cells_negative_class)",
            )
        )
    dataset = Dataset(
        name=path.name,
        layout=layout,
        root=path,
        records=records,
        classes=classes,
        negative_class=data_cfg.negative_class,
        notes=notes,
        unlabeled=sorted(set(unlabeled)),
    )
    if path.name == SMEARS_DIR and layout == "allidb2":
        problems.append(
            Problem(str(path), "holds single-cell images (ALL-IDB2 layout), not smears; give it as the cells input")
        )
    if path.name == CELLS_DIR and layout == "allidb1":
        problems.append(
            Problem(str(path), "holds smears (ALL-IDB1 layout), not single-cell images; give it as the smears input")
        )
    if path.name == CELLS_DIR and layout == "folders" and data_cfg.check_cells_are_crops:
        wide = _wide_fields(records)
        if wide:
            problems.append(
                Problem(
                    str(path),
                    f"holds what look like multi-cell smears, not single-cell crops ({wide}); "
                    "give it as the smears input (or, where each image holds one white "
                    "cell, --set data.check_cells_are_crops=false)",
                )
            )
    return dataset, problems


# a single-cell crop is about square (ALL-IDB2 257x257, PBC 360x363); a camera's field is 4:3 or wider
WIDE_FIELD_ASPECT = 1.25
WIDE_FIELD_SHARE = 0.75


def _wide_fields(records: list[ImageRecord], sample: int = 32) -> str | None:
    """What to say where most of an evenly spaced sample of images (headers only) are wide fields, else None."""
    picked = records[:: max(1, len(records) // sample)][:sample]
    sizes = []
    for record in picked:
        try:
            with Image.open(record.path) as header:
                sizes.append(header.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # read, and refused with its own message, where the pixels are needed
    wide = [(w, h) for w, h in sizes if max(w, h) >= WIDE_FIELD_ASPECT * min(w, h)]
    if not sizes or len(wide) < WIDE_FIELD_SHARE * len(sizes):
        return None
    width, height = Counter(wide).most_common(1)[0][0]
    return f"{len(wide)} of {len(sizes)} images sampled are fields like {width}x{height} px"


def _is_unparsed_image(where: str) -> bool:
    path = Path(where)
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


@dataclass(frozen=True)
class _Entry:
    path: Path
    label_hint: str  # folder name, or ALL-IDB's suffix
    blast_centres: tuple[tuple[int, int], ...] | None
    mask_path: Path | None


def _image_files(tree: Tree, folder: Path, *, recursive: bool) -> list[Path]:
    return [p for p in tree.files_in(folder, recursive=recursive) if p.suffix.lower() in IMAGE_EXTENSIONS]


def _report_other_files(tree: Tree, used: set[Path], notes: list[Problem]) -> None:
    for other in tree.files:
        if other not in used:
            notes.append(Problem(str(other), "ignored: not an image of this dataset"))


def _scan_allidb(
    path: Path, tree: Tree, layout: str, data_cfg: DataConfig, problems: list[Problem], notes: list[Problem]
) -> list[_Entry]:
    files = set(tree.files)
    image_dirs = [path] + [path / sub for sub in ("im", "img") if path / sub in tree.folders]
    xyc_dirs = [path] + ([path / "xyc"] if path / "xyc" in tree.folders else [])
    used: set[Path] = set()
    entries: list[_Entry] = []
    for folder in image_dirs:
        for image in _image_files(tree, folder, recursive=False):
            used.add(image)
            match = ALLIDB_NAME.match(image.stem)
            if not match:
                problems.append(
                    Problem(str(image), "name does not follow ALL-IDB's ImNNN_Y pattern (Y = 0 healthy, 1 ALL)")
                )
                continue
            suffix = match["suffix"]
            if suffix not in ("0", "1"):
                problems.append(Problem(str(image), f"label suffix _{suffix} is not 0 (healthy) or 1 (ALL)"))
                continue
            centres = None
            xyc = next((d / f"{image.stem}.xyc" for d in xyc_dirs if d / f"{image.stem}.xyc" in files), None)
            if xyc is not None:
                used.add(xyc)
                centres = _read_xyc(xyc, problems)
                if centres and suffix == "0":
                    problems.append(Problem(str(xyc), f"lists {len(centres)} blast centres for a healthy (_0) image"))
            mask = path / MASKS_DIR / f"{image.stem}.png"
            if mask in files:
                used.add(mask)
            entries.append(_Entry(image, suffix, centres, mask if mask in files else None))
    used.add(path / LABELS_FILE)
    _report_other_files(tree, used, notes)
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
        except (ValueError, OverflowError):  # 'inf', '1e400' and 'nan' are no pixel coordinates either
            problems.append(
                Problem(f"{path}:{number}", f"expected 'x y' blast centre in pixels, got {line.strip()[:80]!r}")
            )
            continue
        if x < 0 or y < 0:
            problems.append(Problem(f"{path}:{number}", f"negative coordinate in {line.strip()!r}"))
            continue
        centres.append((x, y))
    return tuple(centres)


def nfc(name: str) -> str:
    """A name as one Unicode form (NFC): macOS writes 'é' as 'e' + a combining accent (NFD), Linux and most CSV
    editors as one character; the same class folder copied from both must be one class, not two that print alike."""
    return unicodedata.normalize("NFC", name)


def _scan_folders(path: Path, tree: Tree, problems: list[Problem], notes: list[Problem]) -> list[_Entry]:
    entries: list[_Entry] = []
    used: set[Path] = set()
    files = set(tree.files)
    for loose in _image_files(tree, path, recursive=False):
        problems.append(Problem(str(loose), "image outside any class folder (one sub-folder per class)"))
        used.add(loose)
    for class_dir in (folder for folder in tree.folders if folder.parent == path):
        images = [
            p for p in _image_files(tree, class_dir, recursive=True) if MASKS_DIR not in p.relative_to(class_dir).parts
        ]
        if not images:
            problems.append(Problem(str(class_dir), "class folder has no images"))
        for image in images:
            used.add(image)
            mask = image.parent / MASKS_DIR / f"{image.stem}.png"
            if mask in files:
                used.add(mask)
            entries.append(_Entry(image, nfc(class_dir.name), None, mask if mask in files else None))
    used.add(path / LABELS_FILE)
    _report_other_files(tree, used, notes)
    return entries


def _read_labels_csv(csv_path: Path, problems: list[Problem]) -> dict[str, tuple[str, str | None]] | None:
    """file name -> (class, patient or None)."""
    unreadable = not_regular(csv_path)
    if unreadable:
        problems.append(Problem(str(csv_path), f"label file {unreadable}"))
        return None
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(str(csv_path), f"label file cannot be read ({exc})"))
        return None
    reader = csv.DictReader(text.splitlines())
    try:
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:  # e.g. a header field over the csv module's 128 KiB limit
        problems.append(Problem(f"{csv_path}:1", f"label file cannot be parsed as CSV ({exc})"))
        return None
    reader.fieldnames = header  # 'filename, class' (a space after the comma) names the same columns
    if "filename" not in header or "class" not in header:
        problems.append(
            Problem(
                str(csv_path), f"label file needs columns 'filename' and 'class' (optional 'patient'); found {header}"
            )
        )
        return None
    rows: dict[str, tuple[str, str | None]] = {}
    try:
        numbered = list(enumerate(reader, start=2))
    except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit: not a label file
        problems.append(Problem(f"{csv_path}:{reader.line_num}", f"label file cannot be parsed as CSV ({exc})"))
        return None
    for number, row in numbered:
        name = nfc((row.get("filename") or "").strip())
        label = nfc((row.get("class") or "").strip())
        if not name or not label:
            problems.append(Problem(f"{csv_path}:{number}", "row needs both a filename and a class"))
            continue
        if name in rows:
            problems.append(Problem(f"{csv_path}:{number}", f"{name!r} is listed twice"))
            continue
        invisible = _invisible_characters(label)
        if invisible:
            problems.append(
                Problem(
                    f"{csv_path}:{number}",
                    f"class {label!r} holds invisible or control characters "
                    f"({invisible}); a class name is printable text",
                )
            )
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
    alias: str = "",
) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    matched: set[str] = set()
    negative, alias = nfc(data_cfg.negative_class), nfc(alias)

    def canonical(name: str, where: Path) -> str | None:
        """The run's name for a class; None (and a problem) for the run's own name where the input has another."""
        if alias and name == negative:
            problems.append(
                Problem(
                    str(where),
                    f"is labelled {negative!r}, but this input calls its negatives {alias!r} "
                    "(data.*_negative_class): one name for healthy images per input",
                )
            )
            return None
        return negative if alias and name == alias else name

    by_name = Counter(nfc(e.path.name) for e in entries)
    is_allidb = any(e.label_hint in ("0", "1") for e in entries) and all(
        ALLIDB_NAME.match(e.path.stem) for e in entries
    )
    for entry in entries:
        rel = nfc(entry.path.relative_to(root).as_posix())
        patient = None
        if csv_rows is not None:
            key = rel if rel in csv_rows else nfc(entry.path.name)
            if key not in csv_rows:
                problems.append(Problem(str(entry.path), f"has no row in the label file {csv_path}"))
                continue
            matched.add(key)
            if key != rel and by_name[key] > 1:
                problems.append(
                    Problem(
                        str(entry.path),
                        f"the label file's row {key!r} matches {by_name[key]} files of "
                        "this name; name each by its path in the dataset (e.g. "
                        f"{rel!r})",
                    )
                )
                continue
            label, patient = csv_rows[key]
            label = canonical(label, entry.path)
            hint = entry.label_hint if is_allidb or label is None else canonical(entry.label_hint, entry.path)
            if label is None or hint is None:
                continue
            # a folder 'ALL' may be refined to L1/L2/L3 by the file; any other disagreement stops the run
            refines = hint == data_cfg.positive_class_name and label != data_cfg.negative_class
            if not is_allidb and label != hint and not refines:
                problems.append(
                    Problem(
                        str(entry.path),
                        f"the label file {csv_path} says {label!r} but its class folder "
                        f"says {entry.label_hint!r}; make them agree",
                    )
                )
                continue
            if is_allidb and (label == data_cfg.negative_class) != (entry.label_hint == "0"):
                problems.append(
                    Problem(
                        str(entry.path),
                        f"label file says {label!r} but the name's suffix _{entry.label_hint} says the opposite",
                    )
                )
                continue
            subtypes = (data_cfg.positive_class_name, *data_cfg.subtypes)
            if (refines or is_allidb) and label != data_cfg.negative_class and label not in subtypes:
                # refining 'ALL' (a folder, or ALL-IDB's _1) to a type the run does not know would add a class
                problems.append(
                    Problem(
                        str(entry.path),
                        f"the label file says {label!r}, which is none of the types an "
                        f"ALL image can have here ({', '.join(subtypes)}; data.subtypes)",
                    )
                )
                continue
        elif is_allidb:
            label = data_cfg.negative_class if entry.label_hint == "0" else data_cfg.positive_class_name
        else:
            label = canonical(entry.label_hint, entry.path)
            if label is None:
                continue
            invisible = _invisible_characters(label)
            if invisible:
                problems.append(
                    Problem(
                        str(entry.path),
                        f"class folder {label!r} holds invisible or control characters ({invisible}); rename it",
                    )
                )
                continue
        group = f"patient:{patient}" if patient else Path(rel).with_suffix("").as_posix()
        records.append(
            ImageRecord(
                path=entry.path,
                rel_path=rel,
                label=label,
                positive=label != data_cfg.negative_class,
                group=group,
                blast_centres=entry.blast_centres,
                mask_path=entry.mask_path,
            )
        )
    problems.extend(_colliding_ids(records))
    if csv_rows is not None:
        for missing in sorted(set(csv_rows) - matched):
            if not any(e.path.name == missing or e.path.relative_to(root).as_posix() == missing for e in entries):
                problems.append(Problem(str(csv_path), f"names {missing!r}, which is not an image in {root}"))
    return records


def _invisible_characters(name: str) -> str:
    """Control, format (zero-width) and non-space separator characters in a class name, as U+ codes:
    'L1' and 'L1' + a zero-width space would otherwise be two classes that print the same."""
    bad = [c for c in name if unicodedata.category(c)[0] in "C" or (unicodedata.category(c)[0] == "Z" and c != " ")]
    return ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(bad))


def _colliding_ids(records: list[ImageRecord]) -> list[Problem]:
    """An image's id is its path without the extension, and every stage writes one file per id:
    `L1_0.png` and `L1_0.jpg` (or `a.png` and `A.png` on a case-insensitive store) would be one image."""
    by_id: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_id.setdefault(record.image_id.casefold(), []).append(record)
    return [
        Problem(
            str(other.path),
            f"has the same name as {same[0].rel_path} but for its extension or case; the "
            "stages would write one file for both: rename one",
        )
        for same in by_id.values()
        for other in same[1:]
    ]


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
            if other.label != record.label:
                problems.append(
                    Problem(
                        str(record.path),
                        f"is the same image as {other.rel_path} with a different class "
                        f"({other.label!r} vs {record.label!r})",
                    )
                )
            elif sha256_file(record.path) == sha256_file(other.path):
                dataset.merged_duplicates.append((record.rel_path, other.rel_path))
                dataset.notes.append(
                    Problem(
                        str(record.path),
                        f"is a byte-identical copy of {other.rel_path} (same class "
                        f"{record.label!r}): merged into one group with it",
                    )
                )
            else:
                problems.append(
                    Problem(
                        str(record.path),
                        f"is the same image as {other.rel_path}, stored differently; "
                        "remove one (only byte-identical copies are merged)",
                    )
                )
            continue
        first_seen[loaded.pixel_sha256] = record
        for x, y in record.blast_centres or ():
            if x >= width or y >= height:
                problems.append(
                    Problem(str(record.path), f"blast centre ({x}, {y}) lies outside the {width}x{height} image")
                )
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
