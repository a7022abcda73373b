"""The README's sample of `make demo`'s output is generated (runners/readme.py), so it cannot drift from the printer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runners.readme import END, SNAPSHOT, START, demo_block, main, readme_block
from runners.summary import describe_run

REPO = Path(__file__).resolve().parent.parent
REGENERATE = "python -m runners.readme (from docs/demo-run), or python -m runners.readme runs/demo after make demo"


def test_the_readmes_demo_block_is_what_the_printer_prints_for_the_committed_snapshot():
    """A change to runners/summary.py, or a hand edit of the block, fails here until the block is regenerated."""
    block = readme_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert block == demo_block(SNAPSHOT), f"README.md's demo block is stale; regenerate it: {REGENERATE}"
    assert "/tmp" not in block and str(REPO) not in block  # shown as runs/demo, whatever machine made it


@pytest.mark.slow
def test_the_readme_generator_snapshots_a_run_and_rewrites_only_its_block(demo_run, tmp_path, capsys):
    """End to end on the shared run: the rewritten block is what the run printed, paths under runs/demo."""
    out, _, _ = demo_run
    # the latest run into `out`, which the generator reads: another test reruns the DAG there (a new release folder)
    outputs = json.loads((out / "outputs.json").read_text())
    readme, snapshot = tmp_path / "README.md", tmp_path / "docs" / "demo-run"
    shutil.copyfile(REPO / "README.md", readme)
    before = readme.read_text(encoding="utf-8")
    assert main([str(out), "--readme", str(readme), "--snapshot", str(snapshot)]) == 0

    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert files == ["cells/summary.json", "dataset/dataset.json", "outputs.json", "roi/summary.json", "summary.json"]
    assert sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file()) < 200_000  # small enough to commit
    printed = [line.replace(str(out.resolve()) + "/", "runs/demo/") for line in describe_run(outputs, out)]
    after = readme.read_text(encoding="utf-8")
    assert readme_block(after) == "\n```\n" + "\n".join(printed) + "\n```\n"
    assert after.replace(readme_block(after), "") == before.replace(readme_block(before), "")  # the prose is left alone

    capsys.readouterr()
    assert main(["--readme", str(readme), "--snapshot", str(snapshot)]) == 0  # from the snapshot alone: the same text
    assert readme.read_text(encoding="utf-8") == after and "unchanged" in capsys.readouterr().out


def test_the_readme_generator_refuses_a_readme_without_its_markers(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{END}\n{START}\n")
    assert main(["--readme", str(readme)]) == 1
    assert capsys.readouterr().err == f"error: {readme}: needs one {START} line and, after it, one {END} line\n"
    assert readme.read_text() == f"# x\n{END}\n{START}\n"
