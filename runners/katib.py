"""A finished Katib Experiment (manifests/tuning) as the pipeline's overrides.

    kubectl get experiment leukemia-mtl-tune -n kubeflow -o json > experiment.json
    python -m runners.katib experiment.json          # prints the overrides JSON, then the same as --set flags

Katib names the best trial's values by its own parameter names (learning_rate) as strings; the Experiment's
trialTemplate says which setting each one is (a trial parameter's `description` is its dotted key, as the
trial's --set flag names it), and the parameter's type how to read its value.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from leukemia_mtl.config import ConfigError, get_profile
from leukemia_mtl.tune import SPACE


def best_overrides(experiment: dict) -> dict:
    """{dotted key: value} of the Experiment's current optimal trial, checked as the pipeline's tasks check them."""
    spec, status = experiment.get("spec") or {}, experiment.get("status") or {}
    best = status.get("currentOptimalTrial") or {}
    assignments = {a["name"]: a["value"] for a in best.get("parameterAssignments") or []}
    if not assignments:
        raise ConfigError(
            f"experiment {experiment.get('metadata', {}).get('name', '?')!r} has no optimal trial yet "
            "(status.currentOptimalTrial is empty): wait until a trial has succeeded"
        )
    key_of = {p["reference"]: p.get("description", "") for p in spec["trialTemplate"]["trialParameters"]}
    kind_of = {p["name"]: p["parameterType"] for p in spec["parameters"]}
    overrides = {}
    for name, value in assignments.items():
        key = key_of.get(name, "")
        if key not in SPACE:
            raise ConfigError(
                f"Katib parameter {name!r}: its trial parameter's description {key!r} is not a searched "
                f"setting ({', '.join(SPACE)})"
            )
        overrides[key] = int(value) if kind_of[name] in ("int", "categorical") else float(value)
    profile = "paper"
    for argument in spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["command"]:
        if argument.startswith("--profile="):
            profile = argument.split("=", 1)[1]
    get_profile(profile, overrides)  # one clear error now rather than in every task
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path, help="`kubectl get experiment NAME -o json` of a finished Experiment")
    args = parser.parse_args(argv)
    try:
        overrides = best_overrides(json.loads(args.experiment.read_text()))
    except (OSError, ValueError, KeyError, ConfigError) as exc:
        print(f"error: {args.experiment}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(overrides, sort_keys=True))
    print(" ".join(f"--set {k}={json.dumps(v)}" for k, v in sorted(overrides.items())))
    print(
        "note: these settings were searched on one fold's training part; a cross-validated run trained with them has "
        "nested scores on that fold only (the pipeline's own tune step, --set tune.trials=N, searches every fold)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
