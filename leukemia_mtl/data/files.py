"""One rule for walking a user's folder, shared by validate, ingest, the data version and predict.

Symlinked files and folders are followed, the same way by all four (datasets assembled from links
are common, and a data version that did not enter a linked folder would serve stale results from
the cache). A folder that leads back to one above it is a loop and is refused, not walked forever;
dangling links, FIFOs, sockets and devices are refused with a line and never opened (opening a
FIFO blocks until someone writes to it). Names starting with '.' (macOS's `._Im001_1.jpg`,
`.thumbs/`, editors' files) are hidden: skipped by all four alike, and counted in one note.

And one rule for what a command writes (`check_output`): never an input, never an existing image, never an empty
path, and a folder the tool writes carries a marker file (`mark_output`) that every walk honours: a rerun over the
input folder skips it (predict's overlays under `.` are never classified as smears), with a note.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from leukemia_mtl.errors import OutputError, Problem

# written into every folder the tool fills with its own outputs (overlays, ROI images, a run's files): a walk over
# an input folder skips a folder holding it, so what one run wrote is never read back as input by the next
OUTPUT_MARKER = ".leukemia-mtl-output"


@dataclass
class Tree:
    """What a walk found under `root`: paths as the user names them (under root, links unresolved)."""

    root: Path
    files: list[Path] = field(default_factory=list)  # regular files, or links to them; sorted
    folders: list[Path] = field(default_factory=list)  # every folder entered, root excluded
    problems: list[Problem] = field(default_factory=list)  # what cannot be read as a file or folder
    hidden: list[Path] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)  # folders this tool wrote (OUTPUT_MARKER), not walked

    def files_in(self, folder: Path, *, recursive: bool = True) -> list[Path]:
        return [p for p in self.files if (p.parent == folder if not recursive else folder in p.parents)]

    def hidden_note(self) -> Problem | None:
        if not self.hidden:
            return None
        shown = ", ".join(p.relative_to(self.root).as_posix() for p in self.hidden[:3])
        more = f" and {len(self.hidden) - 3} more" if len(self.hidden) > 3 else ""
        return Problem(
            str(self.root),
            f"ignored {len(self.hidden)} hidden file(s) or folder(s) (names starting with '.'): {shown}{more}",
        )

    def outputs_note(self) -> Problem | None:
        if not self.outputs:
            return None
        shown = ", ".join(p.relative_to(self.root).as_posix() + "/" for p in self.outputs[:3])
        more = f" and {len(self.outputs) - 3} more" if len(self.outputs) > 3 else ""
        return Problem(
            str(self.root),
            f"skipped {len(self.outputs)} folder(s) this tool wrote (they hold {OUTPUT_MARKER}): {shown}{more}",
        )

    def notes(self) -> list[Problem]:
        return [note for note in (self.hidden_note(), self.outputs_note()) if note is not None]


def not_regular(path: Path) -> str | None:
    """Why `path` cannot be read as an ordinary file (None when it can), without opening it."""
    try:
        mode = path.stat().st_mode  # follows links
    except FileNotFoundError:
        return "is a dangling symlink (its target does not exist)" if path.is_symlink() else "does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return _special(mode)


def walk(root: Path | str) -> Tree:
    """Every file under `root`, following links, each folder at most once per path from the root."""
    root = Path(root)
    tree = Tree(root)
    if (root / OUTPUT_MARKER).is_file():
        tree.problems.append(
            Problem(
                str(root),
                f"is a folder this tool wrote (it holds {OUTPUT_MARKER}: overlays, "
                "ROI images or a run's files), not input images",
            )
        )
        return tree
    _visit(root, tree, frozenset())
    tree.files.sort()
    tree.folders.sort()
    tree.hidden.sort()
    tree.outputs.sort()
    return tree


def _visit(folder: Path, tree: Tree, ancestors: frozenset[tuple[int, int]]) -> None:
    try:
        info = folder.stat()
        names = sorted(os.listdir(folder))
    except OSError as exc:
        tree.problems.append(Problem(str(folder), f"folder cannot be read ({exc.strerror or exc})"))
        return
    here = (info.st_dev, info.st_ino)
    if here in ancestors:
        tree.problems.append(
            Problem(str(folder), "is a symlink loop: it leads back to a folder above it; remove the link")
        )
        return
    ancestors = ancestors | {here}
    for name in names:
        path = folder / name
        if name.startswith("."):
            tree.hidden.append(path)
            continue
        try:
            mode = path.stat().st_mode
        except OSError:
            tree.problems.append(Problem(str(path), not_regular(path) or "cannot be read"))
            continue
        if stat.S_ISDIR(mode):
            if (path / OUTPUT_MARKER).is_file():
                tree.outputs.append(path)
                continue
            tree.folders.append(path)
            _visit(path, tree, ancestors)
        elif stat.S_ISREG(mode):
            tree.files.append(path)
        else:
            tree.problems.append(Problem(str(path), _special(mode)))


def _special(mode: int) -> str:
    """What a FIFO, socket or device is told: it is never opened (a FIFO would block)."""
    if stat.S_ISFIFO(mode):
        kind = "FIFO (named pipe)"
    elif stat.S_ISSOCK(mode):
        kind = "socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "device"
    else:
        kind = "special file"
    return f"is a {kind}, not a regular file; not opened"


def mark_output(folder: Path | str) -> Path:
    """`folder`, created, with the marker that keeps walks out of it (see OUTPUT_MARKER)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / OUTPUT_MARKER
    if not marker.is_file():
        marker.write_text("Written by leukemia-mtl: its outputs, never read back as input images.\n", encoding="utf-8")
    return folder


def location_argument(text: str) -> str:
    """argparse's type for a path or s3:// URI kept as text: an empty one (`--out ""`) would mean the current
    folder, never what was meant."""
    if not text.strip():
        import argparse

        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return text


def path_argument(text: str) -> Path:
    """argparse's type for a local path (see location_argument)."""
    return Path(location_argument(text))


def check_output(
    flag: str, output: Path, inputs: list[Path], *, kind: str = "file", marks: bool = False, inside_inputs: bool = False
) -> None:
    """Refuse, before anything is written, an output that is one of the `inputs`, holds one, or lies inside an
    input folder (allowed with `inside_inputs`: a folder the tool marks, which walks skip). `kind` 'file': also a
    folder or an existing image, which it would overwrite; 'folder': also a file, and, where the command `marks`
    it, an existing folder of images it did not write (marking it would hide them from every later walk)."""
    from leukemia_mtl.data.images import IMAGE_EXTENSIONS

    target = output.resolve()
    for given in inputs:
        source = given.resolve()
        if target == source:
            raise OutputError(
                f"{flag} {output}: is one of the inputs ({given}); it would be overwritten. Give another name"
            )
        if source.is_dir() and source in target.parents and not inside_inputs:
            raise OutputError(
                f"{flag} {output}: lies inside the input folder {given}, where a rerun would read it "
                "back; write it elsewhere"
            )
        if target.is_dir() and target in source.parents:
            raise OutputError(f"{flag} {output}: holds the input {given}; give a folder of its own")
    if kind == "file":
        if target.is_dir():
            raise OutputError(f"{flag} {output}: is a folder; give a file name")
        if target.exists() and target.suffix.lower() in IMAGE_EXTENSIONS:
            raise OutputError(
                f"{flag} {output}: is an existing image, which it would overwrite (a shell glob after "
                f"{flag}?); give a new file name"
            )
    elif target.exists() and not target.is_dir():
        raise OutputError(f"{flag} {output}: is a file; give a folder")
    elif marks and target.is_dir() and not (target / OUTPUT_MARKER).is_file():
        own = next((p for p in target.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()), None)
        if own is not None:
            raise OutputError(
                f"{flag} {output}: already holds images this tool did not write ({own.relative_to(target)}"
                "); give a new or empty folder"
            )
