"""The nested search on the demo data: what it gains on the inner splits, what it does to the outer scores,
and what it costs per trial.

    python bench/tune_cost.py [--trials 6] [--startup-trials 2] [--tuned runs/bench-tune/tuned] [--plain runs/bench-tune/plain]

Runs `pipeline.py --run-local --profile demo --no-cache` twice (skipped for a folder that already holds a
finished run): with `--set tune.trials=N --set tune.startup_trials=S` (S random trials, trial 0 the profile's
own settings among them, then TPE's proposals) and without. Prints, per (fold, backbone) search, every trial's
inner-validation objective and wall time, the profile's own settings (trial 0) beside the best trial, and
the best settings; then each run's wall time and cross-validated (outer, evaluation-fold) scores side by
side. The search's cost is (folds x backbones) searches of N trials, each trial one fold's training (all
six stages, less where pruned), two searches at a time under kfp.local.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from leukemia_mtl.results import RunSummary  # noqa: E402


def run(output_dir: Path, trials: int, startup: int = 0) -> float | None:
    """The demo into output_dir (None: it was there already)."""
    if (output_dir / "summary.json").is_file():
        return None
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
    if trials:
        command += ["--set", f"tune.trials={trials}", "--set", f"tune.startup_trials={startup}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def studies(output_dir: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(output_dir.glob("pipeline_root/*/**/study.json"))]
    return sorted(found, key=lambda s: (s["fold_id"], s["backbone"]))


def outer(output_dir: Path) -> dict:
    summary = RunSummary.load(output_dir / "summary.json")
    return {(row.task, row.model, row.arm): row.result["mean"] for row in summary.rows()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--startup-trials", type=int, default=2)
    parser.add_argument("--tuned", type=Path, default=REPO / "runs" / "bench-tune" / "tuned")
    parser.add_argument("--plain", type=Path, default=REPO / "runs" / "bench-tune" / "plain")
    args = parser.parse_args()
    seconds = {"tuned": run(args.tuned, args.trials, args.startup_trials), "plain": run(args.plain, 0)}
    found = studies(args.tuned)
    if not found:
        sys.exit(f"{args.tuned}: no study.json (was it run with tune.trials > 0?)")
    for study in found:
        print(f"fold {study['fold_id']}, {study['backbone']}: {len(study['trials'])} trials, {study['seconds']:.0f} s")
        for t in study["trials"]:
            value = "-" if t["value"] is None else f"{t['value']:.3f}"
            print(
                f"  trial {t['number']} {t['state']:9} inner {value} in {t['seconds']} s  "
                + ", ".join(
                    f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                    for k, v in t["params"].items()
                )
            )
        own, best = study["profile_trial"], study["best"]
        print(f"  profile's own (trial 0) {own['value']:.3f}; best trial {best['number']} {best['value']:.3f}")
    per_trial = [t["seconds"] for s in found for t in s["trials"] if t["seconds"]]
    print(
        f"mean trial {sum(per_trial) / len(per_trial):.0f} s over {len(per_trial)} trials "
        f"({sum(t['state'] == 'pruned' for s in found for t in s['trials'])} pruned)"
    )
    for name, value in seconds.items():
        print(f"{name} run: " + ("already there" if value is None else f"{value:.0f} s"))
    tuned, plain = outer(args.tuned), outer(args.plain)
    print("outer (evaluation-fold) means, tuned vs the profile's settings:")
    for key in sorted(tuned):
        if key in plain:
            t, p = tuned[key], plain[key]
            print(
                f"  {' '.join(key):32} balanced accuracy {t['balanced_accuracy']:.3f} vs {p['balanced_accuracy']:.3f}, "
                f"macro F1 {t['f1_macro']:.3f} vs {p['f1_macro']:.3f}"
            )


if __name__ == "__main__":
    main()
