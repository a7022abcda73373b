"""The README's excerpt of `make demo`'s output is generated (runners/readme.py), so it cannot drift from the printer;
and its map from each pipeline step to the code that runs it names files and functions that exist."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

from runners.readme import ELLIPSIS, END, SNAPSHOT, START, demo_block, demo_lines, excerpt, main, readme_block
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
    assert readme_block(after) == "\n```\n" + "\n".join(excerpt(printed)) + "\n```\n"
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


def test_the_excerpt_is_the_printers_own_lines_in_order_and_keeps_what_a_reader_needs():
    """Short, nothing typed: every shown line is a printed line, in the printed order, and the key ones are there."""
    printed = demo_lines(SNAPSHOT)
    shown = excerpt(printed)
    kept = [line for line in shown if line != ELLIPSIS]
    positions = [printed.index(line) for line in kept]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert len(shown) <= 30 < len(printed)
    assert ELLIPSIS + "\n" + ELLIPSIS not in "\n".join(shown)  # one ELLIPSIS per gap
    for start in (
        "  smears:",
        "  2-fold cross-validation",
        "  headline, detection",
        "    released ",
        "  learning check ",
        "  note: Synthetic data",
        "  report:",
    ):
        assert any(line.startswith(start) for line in kept), start
    table = [line for line in printed if line.startswith(("    detection  ", "    fab  "))]
    assert table and all(line in kept for line in table)  # the whole cross-validation table


def _step_map(text: str) -> list[list[str]]:
    """README's table under "Where each step lives": step, what it does, component (FILE::NAME), function, module."""
    section = text.split("## Where each step lives", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.replace("`", "").strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_the_readmes_step_map_names_the_component_function_and_module_that_run_each_step():
    """Each row's component file calls its function, imported from its module, which defines it; every step is there."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.index("## Where each step lives") < len("\n".join(text.splitlines()[:100]))  # in the first 100 lines
    rows = _step_map(text)
    # what pipeline.py adds to the DAG: the first argument of each add(component, ...), either side of a choice
    firsts = [
        node.args[0]
        for node in ast.walk(ast.parse((REPO / "pipeline.py").read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "add" and node.args
    ]
    wired = {
        n.id
        for first in firsts
        for n in ([first.body, first.orelse] if isinstance(first, ast.IfExp) else [first])
        if isinstance(n, ast.Name)
    }
    components = set()
    for step, _does, component, function, module in rows:
        file, _, name = component.partition("::")
        source = (REPO / file).read_text(encoding="utf-8")
        tree = ast.parse(source)
        defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in defined, f"{step}: {file} defines no component {name}"
        dotted = module.removesuffix(".py").replace("/", ".")
        imported = re.search(rf"from {re.escape(dotted)} import {function}\b", source)
        assert imported and f"{function}(" in source, f"{step}: {file} does not call {function} from {dotted}"
        module_source = (REPO / module).read_text(encoding="utf-8")
        assert re.search(rf"^def {function}\(", module_source, re.M), f"{step}: {module} has no {function}"
        assert name in wired, f"{step}: pipeline.py never wires {name}"
        components.add(file)
    on_disk = {f"components/{p.name}" for p in (REPO / "components").glob("*.py") if p.name != "__init__.py"}
    assert components == on_disk  # every component has its row
