"""Where the demo DAG's wall time goes: per kind of task, and inside the training tasks.

    python bench/dag_breakdown.py [--runs 3] [--profile demo] [--output-dir runs/bench-dag] [--set KEY=VALUE ...]

Runs `pipeline.py --run-local --no-cache` `--runs` times (wall times and their median; the peak of
the whole process tree's resident memory, kfp.local's task subprocesses included, sampled every
second with psutil), and from
the last run reads back each training task's
`timings` (summary.json: process start and kfp's executor before the stage, TensorFlow import,
loading arrays and building the model, the first epoch of each fit phase, which traces the
training step, steady epochs, prediction, saving). Task wall times come from kfp.local's
"Executing task" / "finished" log lines (per kind: the sum of ends minus the sum of starts, so
concurrent tasks of one name need no pairing); with two tasks at a time their sum exceeds the wall.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (Executing task|Task) '([\w-]+)'( finished)?")
TIMING_ORDER = (
    "process_start_to_stage",
    "import_tensorflow",
    "load_and_build",
    "frozen_features",
    "first_epochs",
    "steady_epochs",
    "fit_other",
    "predict",
    "explain",
    "save_and_report",
)


def run_with_peak_memory(command: list[str]) -> tuple[subprocess.CompletedProcess, int]:
    """The command's result and the peak, over its run, of the summed RSS of it and every descendant."""
    import psutil

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err, text=True)
        peak = 0
        root = psutil.Process(process.pid)
        while process.poll() is None:
            total = 0
            try:
                members = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                members = []
            for member in members:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += member.memory_info().rss
            peak = max(peak, total)
            time.sleep(1.0)
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read()), peak


def task_seconds(log: str) -> dict[str, float]:
    """Wall seconds per kind of task: sum of its end times minus sum of its start times."""
    totals: dict[str, float] = defaultdict(float)
    balance: dict[str, int] = defaultdict(int)  # starts minus ends: lines two threads garbled leave it non-zero
    first: datetime | None = None
    for line in log.splitlines():
        match = TASK_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line))
        if not match or (match.group(2) == "Task" and not match.group(4)):
            continue  # "Task 'x' outputs:" and the like
        stamp, name = datetime.strptime(match.group(1), "%H:%M:%S.%f"), match.group(3)
        first = first or stamp
        seconds = (stamp - first).total_seconds() % 86400  # a run across midnight
        kind = "training" if name.startswith("finetune") else name
        totals[kind] += seconds if match.group(4) else -seconds
        balance[kind] += -1 if match.group(4) else 1
    for kind in [k for k, v in balance.items() if v]:
        print(
            f"(task kind {kind!r}: {abs(balance[kind])} start/end line(s) unreadable in the log; its sum is left out)"
        )
        del totals[kind]
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
    parser.add_argument("--runs", type=int, default=1, help="runs of the whole DAG; the wall time's median is reported")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/bench-dag"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    command = [
        sys.executable,
        "pipeline.py",
        "--run-local",
        "--no-cache",
        "--profile",
        args.profile,
        "--output-dir",
        str(args.output_dir),
        *[a for pair in args.overrides for a in ("--set", pair)],
    ]
    walls, peaks = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        result, peak = run_with_peak_memory(command)
        walls.append(time.perf_counter() - started)
        peaks.append(peak)
        if result.returncode != 0:
            sys.exit(f"the run failed:\n{result.stderr[-3000:]}")
        print(
            f"run {len(walls)}: {walls[-1]:.0f} s, peak memory of the process tree {peak / 2**30:.2f} GiB", flush=True
        )
    output_dir = args.output_dir if args.output_dir.is_absolute() else REPO / args.output_dir
    (output_dir / "run.log").write_text(result.stdout + result.stderr)  # what the task times are read from
    run_root = Path(json.loads((output_dir / "outputs.json").read_text())["crossval"]["path"]).parents[1]
    per_kind = task_seconds(result.stdout + result.stderr)
    tasks, inside = training_timings(run_root)
    print(
        f"{' '.join(command[1:])}\nwall time: {', '.join(f'{w:.0f}' for w in walls)} s; median {statistics.median(walls):.0f} s; "
        f"peak memory {max(peaks) / 2**30:.2f} GiB\n"
    )
    print(f"last run, {'task kind':22s} {'task-seconds':>12s} {'share':>6s}")
    total = sum(per_kind.values())
    for kind, seconds in sorted(per_kind.items(), key=lambda kv: -kv[1]):
        print(f"          {kind:22s} {seconds:12.0f} {seconds / total:6.0%}")
    print(f"\ninside the {tasks} training tasks (sum of task-seconds):")
    inside_total = sum(inside.values())
    for key in TIMING_ORDER:
        if key in inside:
            print(f"  {key:24s} {inside[key]:8.0f} {inside[key] / inside_total:6.0%}")


if __name__ == "__main__":
    main()
