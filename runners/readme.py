"""The README's excerpt of what `make demo` prints, generated from a finished run instead of kept by hand.

    python -m runners.readme [RUN_DIR] [--readme README.md] [--snapshot docs/demo-run] [--shown-as runs/demo]

With RUN_DIR (a finished `pipeline.py --run-local` folder, e.g. runs/demo), the few small files that
runners/summary.py's `describe_run` opens are copied into the snapshot folder (committed beside the README,
so a test can check the README against it without running the DAG); then, with or without RUN_DIR, the
README's block between the two markers below is rewritten with an excerpt (`excerpt`: the data, the
cross-validation table, the detection headline, the learning checks, the first note, the report) of what
`describe_run` prints for the snapshot, its absolute paths shown under `--shown-as`. `pipeline finished in Ns`
is left out: it is not describe_run's and a time belongs in BENCHMARKS.md with its command and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from leukemia_mtl.io_utils import atomic_write_json, atomic_write_text
from runners.summary import describe_run

REPO = Path(__file__).resolve().parent.parent
START = "<!-- demo-output:start -->"
END = "<!-- demo-output:end -->"
SNAPSHOT = REPO / "docs" / "demo-run"
SHOWN_AS = "runs/demo"  # make demo's DEMO_DIR
# the files describe_run opens: output -> the file inside its artifact folder ("" : the artifact is the file)
READ_FILES = {"dataset": "dataset.json", "roi": "summary.json", "cells": "summary.json", "summary": ""}
ELLIPSIS = "  ..."  # stands for the printed lines the excerpt leaves out


class ReadmeError(Exception):
    """A run, snapshot or README this cannot work with; one line for the user."""


def snapshot(run_dir: Path, target: Path = SNAPSHOT) -> Path:
    """Copy what describe_run reads from `run_dir` into `target`, with an outputs.json of paths relative to it.

    Outputs describe_run only names (the release folder) keep their path relative to the run, so the
    printed line is the one the run printed; they are not copied. Metadata is dropped: nothing reads it.
    """
    run_dir = Path(run_dir).resolve()
    try:
        outputs = json.loads((run_dir / "outputs.json").read_text())
    except (OSError, ValueError) as exc:
        raise ReadmeError(f"{run_dir}: not a finished local run ({type(exc).__name__}: {exc})") from None
    missing = sorted({"dataset", "roi", "cells", "summary", "release"} - set(outputs))
    if missing:
        raise ReadmeError(f"{run_dir}: the run stopped before the report (no {', '.join(missing)} in outputs.json)")
    target = Path(target)
    if target.exists() and any(target.iterdir()) and not (target / "outputs.json").is_file():
        raise ReadmeError(f"{target}: holds files that are not a demo-run snapshot; give an empty or new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # a failed copy leaves the old one
    try:
        relative = {}
        for name, output in outputs.items():
            source = Path(output["path"])
            if name in READ_FILES:
                inside = READ_FILES[name]
                copy = Path(name) / inside if inside else Path(name + ".json")
                (staging / copy).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / inside if inside else source, staging / copy)
                relative[name] = {"path": name if inside else copy.as_posix()}  # the artifact: a folder or the file
            else:
                relative[name] = {"path": Path(os.path.relpath(source, run_dir)).as_posix()}
        atomic_write_json(staging / "outputs.json", relative)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def demo_lines(snapshot_dir: Path = SNAPSHOT, shown_as: str = SHOWN_AS) -> list[str]:
    """What describe_run prints for the snapshot, as if the run's folder were `shown_as`."""
    snapshot_dir = Path(snapshot_dir).resolve()
    try:
        relative = json.loads((snapshot_dir / "outputs.json").read_text())
    except (OSError, ValueError) as exc:
        raise ReadmeError(f"{snapshot_dir}: not a demo-run snapshot ({type(exc).__name__}: {exc})") from None
    outputs = {name: {"path": str(snapshot_dir / entry["path"]), "metadata": {}} for name, entry in relative.items()}
    # describe_run names the run folder's stable copies (report.html, summary.json) under output_dir
    prefix = str(snapshot_dir) + os.sep
    return [line.replace(prefix, shown_as.rstrip("/") + "/") for line in describe_run(outputs, snapshot_dir)]


def excerpt(lines: list[str]) -> list[str]:
    """The printed lines the README shows, in their order; ELLIPSIS once where a run of lines is left out.

    Kept: the data's counts, the cross-validation table, the detection headline with the released model's line,
    the learning checks, the first note (what the data is) and where the report and summary.json are.
    """
    shown, section, notes = [], None, 0
    for line in lines:
        if not line.startswith("    "):  # a top-level line opens the section its indented lines belong to
            section = (
                "table"
                if "-fold cross-validation" in line
                else "headline"
                if line.startswith("  headline, detection")
                else None
            )
            notes += line.startswith("  note:")
        keep = (
            line.startswith(("  cells:", "  smears:", "  learning check ", "  report:", "  summary:"))
            or (section is not None and not line.startswith("    "))  # the table's and headline's own line
            or section == "table"
            or (section == "headline" and line.startswith("    released "))
            or (line.startswith("  note:") and notes == 1)
        )
        if keep:
            shown.append(line)
        elif shown and shown[-1] != ELLIPSIS:
            shown.append(ELLIPSIS)
    return shown


def demo_block(snapshot_dir: Path = SNAPSHOT, shown_as: str = SHOWN_AS) -> str:
    """The README's text between the markers: a code block of the `excerpt` of `demo_lines`."""
    return "\n```\n" + "\n".join(excerpt(demo_lines(snapshot_dir, shown_as))) + "\n```\n"


def _marked(text: str, where: str) -> tuple[int, int]:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start or text.count(START) != 1 or text.count(END) != 1:
        raise ReadmeError(f"{where}: needs one {START} line and, after it, one {END} line")
    return start + len(START), end


def readme_block(text: str, where: str = "README.md") -> str:
    """The text between the README's markers, as it stands."""
    start, end = _marked(text, where)
    return text[start:end]


def rewrite(readme: Path, block: str) -> bool:
    """Put `block` between the markers of `readme`; True when that changed the file."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    start, end = _marked(text, str(readme))
    updated = text[:start] + block + text[end:]
    if updated != text:
        atomic_write_text(readme, updated)
    return updated != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "run_dir",
        nargs="?",
        type=Path,
        help="a finished local run (e.g. runs/demo after make demo); "
        "without it the README is rewritten from the snapshot",
    )
    parser.add_argument(
        "--readme", type=Path, default=REPO / "README.md", help="the README to rewrite (default: the repository's)"
    )
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT, help="the snapshot folder (default docs/demo-run)")
    parser.add_argument(
        "--shown-as", default=SHOWN_AS, help=f"the run folder as the README shows it (default {SHOWN_AS})"
    )
    args = parser.parse_args(argv)
    try:
        if args.run_dir is not None:
            print(f"copied {args.run_dir}'s printed files into {snapshot(args.run_dir, args.snapshot)}")
        changed = rewrite(args.readme, demo_block(args.snapshot, args.shown_as))
    except (ReadmeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{'rewrote' if changed else 'unchanged:'} the demo output in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
