"""One rule for walking a user's folder, shared by validate, ingest, the data version and predict.

Symlinked files and folders are followed, the same way by all four (datasets assembled from links
are common, and a data version that did not enter a linked folder would serve stale results from
the cache). A folder that leads back to one above it is a loop and is refused, not walked forever;
dangling links, FIFOs, sockets and devices are refused with a line and never opened (opening a
FIFO blocks until someone writes to it). Names starting with '.' (macOS's `._Im001_1.jpg`,
`.thumbs/`, editors' files) are hidden: skipped by all four alike, and counted in one note.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from leukemia_mtl.errors import Problem


@dataclass
class Tree:
    """What a walk found under `root`: paths as the user names them (under root, links unresolved)."""

    root: Path
    files: list[Path] = field(default_factory=list)  # regular files, or links to them; sorted
    folders: list[Path] = field(default_factory=list)  # every folder entered, root excluded
    problems: list[Problem] = field(default_factory=list)  # what cannot be read as a file or folder
    hidden: list[Path] = field(default_factory=list)

    def files_in(self, folder: Path, *, recursive: bool = True) -> list[Path]:
        return [p for p in self.files if (p.parent == folder if not recursive else folder in p.parents)]

    def hidden_note(self) -> Problem | None:
        if not self.hidden:
            return None
        shown = ", ".join(p.relative_to(self.root).as_posix() for p in self.hidden[:3])
        more = f" and {len(self.hidden) - 3} more" if len(self.hidden) > 3 else ""
        return Problem(str(self.root), f"ignored {len(self.hidden)} hidden file(s) or folder(s) "
                                       f"(names starting with '.'): {shown}{more}")


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
    _visit(root, tree, frozenset())
    tree.files.sort()
    tree.folders.sort()
    tree.hidden.sort()
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
        tree.problems.append(Problem(str(folder), "is a symlink loop: it leads back to a folder above it; remove the link"))
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
