"""Errors a user can act on: each names the file or value and what is wrong."""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one input, phrased for the person who owns the file."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{printable(self.where)}: {printable(self.message)}"


def printable(text: str) -> str:
    """`text` with control characters escaped: a file name holding a newline must not print a
    second line (one that could read 'OK: ... no problems')."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


class LeukemiaMtlError(Exception):
    """Base class: the CLI prints these as one line (or one line per problem), no traceback."""


class ImageError(LeukemiaMtlError):
    """An image file that cannot be used as it is."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.problem = Problem(str(path), message)
        super().__init__(str(self.problem))


class DatasetError(LeukemiaMtlError):
    """A dataset with one or more problems; all of them are listed, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the dataset:\n{lines}")


class SegmentError(LeukemiaMtlError):
    """Segmentation cannot run as asked: no training masks, a mismatched model file, no cells."""


class OutputError(LeukemiaMtlError):
    """An output path that would overwrite an input, land among the inputs, or is no path at all."""


class StorageError(LeukemiaMtlError):
    """Object storage failed after retries; says which endpoint and object, never credentials."""


# what the machine refused, not a bug: a full disk, a read-only or forbidden folder. One line, never a traceback
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk holding it is full: free space there, or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space, or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "use a folder you may write in (and files you may read)",
    errno.EPERM: "use a folder you may write in",
}


def environment_error_line(exc: BaseException) -> str | None:
    """The one line for an OSError the machine caused (see _ENVIRONMENT_ERRNOS), else None. Writes are atomic
    (io_utils), so what failed left nothing under its final name."""
    if not isinstance(exc, OSError) or exc.errno not in _ENVIRONMENT_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    return (
        f"{printable(str(where))}: {exc.strerror or exc}; {_ENVIRONMENT_ERRNOS[exc.errno]} "
        "(nothing was left half-written under a final name)"
    )


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """In a pipeline task: a user's error ends the task with its message alone, no traceback.

    Anything else (a bug) keeps its traceback, which is what a developer needs.
    """
    try:
        yield
    except LeukemiaMtlError as exc:
        if isinstance(exc, DatasetError):
            message = "\n".join(f"error: {p}" for p in exc.problems)
        else:
            message = f"error: {printable(str(exc))}"
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except OSError as exc:
        line = environment_error_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
