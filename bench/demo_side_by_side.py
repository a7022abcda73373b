"""The demo's wall time against another commit's, measured side by side in one run.

    python bench/demo_side_by_side.py [--ref 9d9f8c3] [--runs 3] [--output-dir runs/bench-side-by-side]

Checks the reference commit out into a git worktree (build/bench-ref-<ref>), then runs
`pipeline.py --run-local --profile demo --no-cache` alternately there and here, `--runs` times
each, so drift of this shared machine hits both alike. Both use this `.venv` (the reference's code
comes first on PYTHONPATH). Prints every wall time, the medians and their ratio (here / reference),
and what each run's summary says about learning, where its schema has it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leukemia_mtl.results import RunSummary  # noqa: E402


def worktree(ref: str) -> Path:
    target = REPO / "build" / f"bench-ref-{ref}"
    if not (target / "pipeline.py").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "worktree", "add", "--force", "--detach", str(target), ref],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    return target


def run_demo(code: Path, output_dir: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [
        sys.executable,
        "pipeline.py",
        "--run-local",
        "--profile",
        "demo",
        "--no-cache",
        "--output-dir",
        str(output_dir),
    ]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (output_dir / "run.log").parent.mkdir(parents=True, exist_ok=True)
    (output_dir / "run.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"{code}: the demo failed:\n{result.stderr[-3000:]}")
    return seconds


def learning(output_dir: Path) -> str:
    """The learning checks, or (an older summary has none) the first backbone's multistage means."""
    summary = RunSummary.load(output_dir / "summary.json")
    if summary.expectations:
        return "; ".join(
            f"{c['check']}: {c['value']:.3f} {'met' if c['met'] else 'NOT met'}" for c in summary.expectations
        )
    mtl = {}
    for row in summary.rows():
        if row.arm == "mtl":
            mtl.setdefault(row.task, row.mean)
    return "; ".join(
        f"{task} mtl accuracy {m['accuracy']:.3f}, macro F1 {m['f1_macro']:.3f}" for task, m in mtl.items()
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="9d9f8c3", help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench-side-by-side"))
    args = parser.parse_args()
    output_dir = args.output_dir if args.output_dir.is_absolute() else REPO / args.output_dir
    reference = worktree(args.ref)
    walls: dict[str, list[float]] = {args.ref: [], "here": []}
    for run in range(args.runs):
        for name, code in ((args.ref, reference), ("here", REPO)):
            out = output_dir / f"{name}-{run}"
            walls[name].append(run_demo(code, out))
            print(f"run {run + 1} {name}: {walls[name][-1]:.0f} s; {learning(out)}", flush=True)
    medians = {name: statistics.median(values) for name, values in walls.items()}
    for name, values in walls.items():
        print(f"{name}: {', '.join(f'{v:.0f}' for v in values)} s; median {medians[name]:.0f} s")
    print(f"ratio here / {args.ref}: {medians['here'] / medians[args.ref]:.2f}")


if __name__ == "__main__":
    main()
