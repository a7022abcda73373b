"""Property-based fuzzing of dataset layouts and label files (Hypothesis).

Random folder-per-class trees of valid, invalid and special files (links, loops, FIFOs, hidden
files, copies, awkward names) with optional label files go through `validate` and the pipeline's
ingest; the invariants every layout must keep:

- no traceback: both answer with an exit code or one DatasetError;
- validate and ingest agree on every file's fate (the same verdict, the same files named);
- no silent drop: every file is a record, or named in a note or an error, or counted as hidden;
- nothing is written outside the output folder (the user's tree is left as it was).

Bounded (`max_examples`, small images) so the suite stays in budget; the seed is derandomised so
a failure reproduces.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from badinputs import truncated_jpeg, write_rgb
from helpers import TINY
from leukemia_mtl import cli
from leukemia_mtl.config import get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.ingest import ingest
from leukemia_mtl.errors import DatasetError, printable

pytestmark = pytest.mark.slow  # hypothesis generates and ingests many folder layouts
CLASS_NAMES = ["normal", "ALL", "L1", "L2", "with space", "ünï", ".hidden"]
FILE_KINDS = [
    "png",
    "jpg",
    "nested",
    "zero",
    "text",
    "truncated",
    "stray",
    "hidden",
    "link",
    "dangling",
    "fifo",
    "copy",
    "copy-other-class",
    "loop",
    "same-id",
    "awkward",
]

BENIGN_KINDS = ["png", "jpg", "nested", "stray", "hidden", "link", "copy", "awkward"]  # accepted, some with a note


@st.composite
def class_trees(draw) -> dict[str, list[str]]:
    """A valid two-class base (so accepted layouts are common) plus extra classes and files, only
    benign ones half of the time."""
    kinds = st.sampled_from(BENIGN_KINDS if draw(st.booleans()) else FILE_KINDS)
    tree = {"normal": ["png", "png"], "ALL": ["png", "png"]}
    for cls in draw(st.lists(st.sampled_from(CLASS_NAMES), max_size=3, unique=True)):
        tree[cls] = tree.get(cls, []) + draw(st.lists(kinds, min_size=0, max_size=4))
    return tree


label_files = st.one_of(
    st.none(), st.sampled_from(["agree", "contradict", "bare", "missing-row", "header-spaces", "unknown-file"])
)


def _plant(root: Path, tree: dict[str, list[str]], outside: Path) -> None:
    seed = 0
    first: dict[str, Path] = {}
    for cls, kinds in tree.items():
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for index, kind in enumerate(kinds):
            seed += 1
            path = folder / f"f{index}.png"
            if kind in ("png", "jpg"):
                path = write_rgb(path.with_suffix(f".{kind}"), seed=seed)
                first.setdefault(cls, path)
            elif kind == "nested":
                path = write_rgb(folder / "sub" / f"f{index}.png", seed=seed)
            elif kind == "zero":
                path.write_bytes(b"")
            elif kind == "text":
                path.write_text("notes, not pixels")
            elif kind == "truncated":
                truncated_jpeg(path.with_suffix(".jpg"), seed=seed)
            elif kind == "stray":
                (folder / f"f{index}.docx").write_bytes(b"PK not an image")
            elif kind == "hidden":
                (folder / f"._f{index}.png").write_bytes(b"resource fork")
            elif kind == "link":
                target = write_rgb(outside / f"linked{seed}.png", seed=1000 + seed)
                path.symlink_to(target)
            elif kind == "dangling":
                path.symlink_to(outside / "missing.png")
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "copy" and cls in first:
                shutil.copyfile(first[cls], folder / f"copy{index}{first[cls].suffix}")
            elif kind == "copy-other-class" and any(c != cls for c in first):
                source = next(p for c, p in first.items() if c != cls)
                shutil.copyfile(source, folder / f"other{index}{source.suffix}")
            elif kind == "loop":
                (folder / f"loop{index}").symlink_to("..", target_is_directory=True)
            elif kind == "same-id":  # one id, two extensions
                write_rgb(folder / f"id{index}.png", seed=seed)
                write_rgb(folder / f"id{index}.jpg", seed=seed + 500)
            elif kind == "awkward":
                write_rgb(folder / f'<b>ü {index} "q".png', seed=seed + 900)


def _csv_row(*fields: str) -> str:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _write_labels(root: Path, style: str | None) -> None:
    if style is None:
        return
    images = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix in (".png", ".jpg")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    rows = []
    for rel in images:
        cls = rel.split("/")[0]
        if style == "contradict" and rows == []:
            cls = "ALL" if cls != "ALL" else "normal"
        if style == "missing-row" and rows == [] and images:
            rows.append(None)
            continue
        name = rel.rsplit("/", 1)[-1] if style == "bare" else rel
        rows.append(_csv_row(name, cls))
    if style == "unknown-file":
        rows.append("nowhere/x.png,normal")
    header = "filename, class" if style == "header-spaces" else "filename,class"
    (root / "labels.csv").write_text("\n".join([header] + [r for r in rows if r is not None]) + "\n")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, dirs, files in os.walk(root):  # not following links: the tree as the user made it
        for name in files + dirs:
            path = Path(folder) / name
            info = path.lstat()
            out[path.relative_to(root).as_posix()] = (info.st_mode, info.st_size)
    return out


def _validate(root: Path) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["validate", str(root)])
    return code, out.getvalue(), err.getvalue()


def _named(lines: str, prefix: str) -> set[str]:
    return {
        line.strip()[len(prefix) :].strip().split(": ", 1)[0]
        for line in lines.splitlines()
        if line.strip().startswith(prefix)
    }


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(tree=class_trees(), labels=label_files)
def test_validate_and_ingest_agree_on_every_file_and_drop_nothing(tree, labels):
    profile = get_profile("demo", TINY)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        root, outside, out = scratch / "dataset", scratch / "elsewhere", scratch / "out"
        outside.mkdir()
        root.mkdir()
        _plant(root, tree, outside)
        _write_labels(root, labels)
        before = _snapshot(root)

        code, stdout, stderr = _validate(root)
        assert code in (0, 1) and "Traceback" not in stdout + stderr
        try:
            summary = ingest(str(root), "none", out, profile, progress=False)
            ingest_problems = None
        except DatasetError as exc:
            summary, ingest_problems = None, {printable(p.where) for p in exc.problems}

        assert _snapshot(root) == before, "the user's tree changed"
        assert {p.name for p in scratch.iterdir()} <= {"dataset", "elsewhere", "out"}, "something written outside"
        if out.exists():
            leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
            assert not leftovers, f"ingest left {leftovers}"

        event("refused" if code == 1 else "accepted")
        if code == 1:  # refused by validate: refused by ingest, naming the same files
            assert ingest_problems is not None, f"validate refused, ingest accepted:\n{stderr}"
            assert _named(stderr, "error:") == ingest_problems, (stderr, ingest_problems)
            return
        assert ingest_problems is None, f"validate accepted, ingest refused: {ingest_problems}"
        dataset = summary.datasets["smears"]
        assert f"{sum(dataset['class_counts'].values())} images" in stdout
        # no silent drop: every file is a record, the label file, or named in a note; hidden ones are counted
        noted = _named(stdout, "note:")
        assert noted <= {printable(n.split(": ", 1)[0]) for n in summary.notes}, (noted, summary.notes)
        records = {r.path for d in load_datasets(root, profile.data, check=False) for r in d.records}
        assert len(records) == sum(dataset["class_counts"].values())
        files = [Path(folder) / name for folder, _, names in os.walk(root, followlinks=False) for name in names]
        visible = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
        for path in visible:
            assert path in records or path == root / "labels.csv" or printable(str(path)) in noted, (
                f"{path} dropped silently"
            )
        hidden = [p for p in files if p not in visible]
        if hidden:
            assert any("hidden file(s)" in line for line in stdout.splitlines()), stdout
        json.dumps(summary.notes)  # notes are plain strings for dataset.json
