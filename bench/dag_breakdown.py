"""Where the demo DAG's wall time goes: per kind of task, and inside the training tasks.

    python bench/dag_breakdown.py [--profile demo] [--output-dir runs/bench-dag] [--set KEY=VALUE ...]

Runs `pipeline.py --run-local --no-cache` once, timing it, and reads back each training task's
`timings` (summary.json: process start and kfp's executor before the stage, TensorFlow import,
loading arrays and building the model, the first epoch of each fit phase, which traces the
training step, steady epochs, prediction, saving). Task wall times come from kfp.local's
"Executing task" / "finished" log lines; with two tasks at a time their sum exceeds the wall.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task|Task) \S*'([\w-]+)\S*'(?:\S*)? ?(finished)?")
TIMING_ORDER = ("process_start_to_stage", "import_tensorflow", "load_and_build", "first_epochs", "steady_epochs",
                "fit_other", "predict", "save_and_report")


def task_seconds(log: str) -> dict[str, float]:
    """Sum of wall seconds per kind of task, pairing starts and ends by name in order."""
    started: dict[str, list[datetime]] = defaultdict(list)
    totals: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        match = TASK_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if not match:
            continue
        stamp, name, finished = datetime.strptime(match.group(1), "%H:%M:%S.%f"), match.group(2), match.group(3)
        kind = "training" if name.startswith("finetune") else name
        if finished and started[name]:
            totals[kind] += (stamp - started[name].pop(0)).total_seconds() % 86400
        elif not finished:
            started[name].append(stamp)
    return dict(totals)


def training_timings(run_root: Path) -> tuple[int, dict[str, float]]:
    totals: dict[str, float] = defaultdict(float)
    tasks = 0
    for summary_path in run_root.rglob("model/summary.json"):
        if not (summary_path.parent / "classifier.json").is_file():
            continue
        tasks += 1
        for key, value in json.loads(summary_path.read_text()).get("timings", {}).items():
            totals[key] += value or 0.0
    return tasks, dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench-dag"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    command = [sys.executable, "pipeline.py", "--run-local", "--no-cache", "--profile", args.profile,
               "--output-dir", str(args.output_dir), *[a for pair in args.overrides for a in ("--set", pair)]]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"the run failed:\n{result.stderr[-3000:]}")
    outputs = json.loads((REPO / args.output_dir / "outputs.json").read_text() if not args.output_dir.is_absolute()
                         else (args.output_dir / "outputs.json").read_text())
    run_root = Path(outputs["crossval"]["path"]).parents[1]
    per_kind = task_seconds(result.stdout + result.stderr)
    tasks, inside = training_timings(run_root)
    print(f"{' '.join(command[1:])}\nwall time {wall:.0f} s\n")
    print(f"{'task kind':22s} {'task-seconds':>12s} {'share':>6s}")
    total = sum(per_kind.values())
    for kind, seconds in sorted(per_kind.items(), key=lambda kv: -kv[1]):
        print(f"{kind:22s} {seconds:12.0f} {seconds / total:6.0%}")
    print(f"\ninside the {tasks} training tasks (sum of task-seconds):")
    inside_total = sum(inside.values())
    for key in TIMING_ORDER:
        if key in inside:
            print(f"  {key:24s} {inside[key]:8.0f} {inside[key] / inside_total:6.0%}")


if __name__ == "__main__":
    main()
