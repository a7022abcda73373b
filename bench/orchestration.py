"""What one process (or container) per stage costs: the demo's DAG three ways, side by side.

    python bench/orchestration.py [--runs 1] [--modes inprocess,subprocess,docker] [--parallel-runs 1] [--set KEY=VALUE ...]

- inprocess: the floor. The same DAG, data, models and epochs through kfp.local, but every task's
  function runs inside this one process (one TensorFlow import; kfp's executor still reads and writes
  every artifact). kfp.local has no such runner; this bench swaps its subprocess task handler for one
  that calls the component's function, here only. Keras builds models under process-wide names, so
  two trainings cannot share a process at once: every mode runs the (fold, backbone) iterations one at
  a time (`--parallel-runs 1`, train.parallel_runs), the same schedule for all three.
- subprocess: `pipeline.py --run-local` (each task a Python process of this environment).
- docker: `pipeline.py --run-local --runner docker` (each task a container of the CPU image; build it
  first with `make image-cpu`).

Modes alternate within each round, every run `--no-cache`. Prints each mode's wall time (median over
rounds) and its ratio to the floor, where the time goes (per kind of task; inside the training tasks:
process start, TensorFlow import, first epochs, which build the graphs, and steady epochs) and whether
the run's summary.json equals the subprocess run's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from dag_breakdown import TIMING_ORDER, task_seconds, training_timings  # noqa: E402

MODES = ("inprocess", "subprocess", "docker")


def _argument(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def run_in_process(argv: list[str]) -> int:
    """pipeline.py's main with kfp.local's subprocess handler replaced by an in-process call."""
    from kfp.dsl import executor as component_executor
    from kfp.local import status, subprocess_task_handler

    import pipeline

    functions = {}  # the components' functions by name, as --function_to_execute names them
    for name in (
        "augment",
        "baseline",
        "crossval",
        "finetune",
        "ingest",
        "preprocess",
        "release",
        "report",
        "segment",
        "split",
        "ttest",
    ):
        module = __import__(f"components.{name}", fromlist=["_"])
        for value in vars(module).values():
            if hasattr(value, "python_func"):
                functions[value.python_func.__name__] = value.python_func

    class InProcessTaskHandler(subprocess_task_handler.SubprocessTaskHandler):
        def run(self) -> status.Status:
            executor_input = json.loads(_argument(self.full_command, "--executor_input"))
            function = functions[_argument(self.full_command, "--function_to_execute")]
            os.environ.update(self.env_vars)
            try:
                component_executor.Executor(executor_input=executor_input, function_to_execute=function).execute()
            except Exception as exc:  # as the subprocess would: the task fails, its error in the log
                print(f"task failed: {type(exc).__name__}: {exc}")
                return status.Status.FAILURE
            return status.Status.SUCCESS

    subprocess_task_handler.SubprocessTaskHandler = InProcessTaskHandler
    return pipeline.main(argv)


def run_mode(mode: str, output_dir: Path, overrides: list[str]) -> tuple[float, str]:
    argv = [
        "--run-local",
        "--no-cache",
        "--profile",
        "demo",
        "--output-dir",
        str(output_dir),
        *[a for pair in overrides for a in ("--set", pair)],
    ]
    if mode == "docker":
        argv += ["--runner", "docker"]
    command = (
        [sys.executable, __file__, "--in-process", *argv]
        if mode == "inprocess"
        else [sys.executable, "pipeline.py", *argv]
    )
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    log = result.stdout + result.stderr
    (output_dir / "run.log").write_text(log)
    if result.returncode != 0:
        print(f"{mode} run failed (log: {output_dir / 'run.log'}):\n{log[-2000:]}")
        return float("nan"), log
    return wall, log


def comparable_summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "summary.json").read_text())


def main() -> None:
    if sys.argv[1:2] == ["--in-process"]:
        sys.exit(run_in_process(sys.argv[2:]))
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1, help="rounds; each mode's median wall time is reported")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--output-dir", type=Path, default=REPO / "runs" / "bench-orchestration")
    parser.add_argument(
        "--parallel-runs", type=int, default=1, help="train.parallel_runs of every mode (the in-process floor needs 1)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if "inprocess" in modes and args.parallel_runs != 1:
        parser.error("the in-process floor runs one training at a time: --parallel-runs 1")
    args.overrides = [f"train.parallel_runs={args.parallel_runs}", *args.overrides]
    walls: dict[str, list[float]] = {m: [] for m in modes}
    logs: dict[str, str] = {}
    for round_index in range(args.runs):
        for mode in modes if round_index % 2 == 0 else modes[::-1]:
            output_dir = (args.output_dir / mode).resolve()
            shutil.rmtree(output_dir, ignore_errors=True)  # nothing of an earlier run read back
            output_dir.mkdir(parents=True)
            wall, logs[mode] = run_mode(mode, output_dir, args.overrides)
            walls[mode].append(wall)
            print(f"round {round_index + 1} {mode:10s} {wall:6.0f} s", flush=True)

    floor = statistics.median(walls["inprocess" if "inprocess" in modes else modes[0]])
    reference = comparable_summary((args.output_dir / "subprocess").resolve()) if "subprocess" in modes else None
    print(f"\n{'mode':10s} {'wall s':>7s} {'x floor':>8s}  summary.json")
    for mode in modes:
        median = statistics.median(walls[mode])
        summary = (args.output_dir / mode).resolve() / "summary.json"
        same = (
            ""
            if reference is None or not summary.is_file()
            else ("= subprocess" if comparable_summary(summary.parent) == reference else "DIFFERS from subprocess")
        )
        print(f"{mode:10s} {median:7.0f} {median / floor:8.2f}  {same}")

    print("\ntask-seconds per kind of task (last round):")
    kinds = sorted({k for log in logs.values() for k in task_seconds(log)})
    per_mode = {mode: task_seconds(logs[mode]) for mode in modes}
    print(f"  {'kind':14s} " + " ".join(f"{m:>10s}" for m in modes))
    for kind in kinds:
        print(f"  {kind:14s} " + " ".join(f"{per_mode[m].get(kind, 0.0):10.1f}" for m in modes))
    print("\ninside the training tasks (sum of task-seconds, last round):")
    inside = {}
    for mode in modes:
        outputs = (args.output_dir / mode) / "outputs.json"
        inside[mode] = (
            training_timings(Path(json.loads(outputs.read_text())["crossval"]["path"]).parents[1])
            if outputs.is_file()
            else (0, {})
        )
    print(f"  {'':24s} " + " ".join(f"{m:>10s}" for m in modes))
    print(f"  {'tasks':24s} " + " ".join(f"{inside[m][0]:10d}" for m in modes))
    for key in TIMING_ORDER:
        if any(key in inside[m][1] for m in modes):
            # in one process, "process start to stage" counts from the bench's own start: not a task's cost
            print(
                f"  {key:24s} "
                + " ".join(
                    f"{'-':>10s}"
                    if m == "inprocess" and key == "process_start_to_stage"
                    else f"{inside[m][1].get(key, 0.0):10.1f}"
                    for m in modes
                )
            )


if __name__ == "__main__":
    main()
