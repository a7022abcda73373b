"""Training recipes for the demo, compared on the same data in one process (no DAG, no caching).

    python pipeline.py --run-local --until segment --output-dir runs/bench-recipes   # data, ROI, U-Net, crops
    python bench/demo_recipes.py --run runs/bench-recipes [--variant '{"train.learning_rate": 0.001}' ...]

For each variant (profile overrides as JSON; none = the demo profile): the split, every fold's
stage arrays (augment) and the six trainings of each fold (stage 1 -> stage 2 -> stage 3
detection and FAB, classical detection and FAB), as the pipeline runs them but in this process;
then the cross-validated balanced accuracy, macro F1 and AUC of both arms per task, and the
seconds (no process start or TensorFlow import per task, so shorter than the DAG).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from leukemia_mtl.config import get_profile
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.evaluate import cross_validate, load_fold_predictions
from leukemia_mtl.train.data import make_folds, prepare_training_data
from leukemia_mtl.train.stage import run_finetune_stage


def run_variant(run: Path, overrides: dict) -> dict:
    profile = get_profile("demo", overrides)
    outputs = json.loads((run / "outputs.json").read_text())
    ingested, cells = Path(outputs["dataset"]["path"]), Path(outputs["cells"]["path"])
    split = make_folds(load_datasets(ingested / "data", profile.data, check=False), profile)
    predictions = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k, backbone in ((k, b) for k in range(len(split["folds"])) for b in profile.model.backbones):
            data = tmp / f"data{k}"
            if not data.is_dir():
                prepare_training_data(ingested, cells, split, k, data, profile)

            def stage(name, stage, task, previous=None, backbone=backbone, k=k, data=data):
                out = tmp / f"{name}-{backbone}-{k}"
                run_finetune_stage(
                    stage,
                    task=task,
                    backbone=backbone,
                    data_dir=data,
                    previous_dir=previous,
                    model_dir=out,
                    figure_html=tmp / f"{out.name}.html",
                    profile=profile,
                )
                return out

            stage2 = stage("s2", "stage2", "blast", stage("s1", "stage1", "blast"))
            for task in ("detection", "fab"):
                predictions += [
                    load_fold_predictions(stage(f"s3{task}", "stage3", task, stage2)),
                    load_fold_predictions(stage(f"c{task}", "classical", task)),
                ]
    scored = cross_validate(predictions)
    return {
        "overrides": overrides,
        "seconds": round(time.perf_counter() - started),
        **{
            f"{task} {backbone} {arm}": {
                m: round(result["summary"][m]["mean"], 3) for m in ("balanced_accuracy", "f1_macro", "auc_macro")
            }
            for task, by_backbone in scored.items()
            for backbone, arms in by_backbone.items()
            for arm, result in arms.items()
        },
    }


def main() -> None:
    import keras

    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, required=True, help="a --run-local --until segment output folder")
    parser.add_argument("--variant", action="append", default=[], help="profile overrides as JSON (repeatable)")
    args = parser.parse_args()
    keras.utils.disable_interactive_logging()
    for variant in args.variant or ["{}"]:
        print(json.dumps(run_variant(args.run, json.loads(variant))), flush=True)


if __name__ == "__main__":
    main()
