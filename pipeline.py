"""The ALL screening pipeline: one DAG definition, run locally (kfp.local) or compiled for Kubeflow.

    python pipeline.py --compile [--output FILE]
    python pipeline.py --run-local [--profile demo] [--data PATH_OR_URI] [--output-dir DIR] [--set KEY=VALUE]

No science here: components/ adapts the library, this file wires the DAG.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import List, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import HTML, Dataset, Model

from components.augment import augment
from components.finetune import finetune_from_imagenet, finetune_from_previous
from components.ingest import ingest
from components.preprocess import preprocess
from components.segment import segment
from components.split import split

PIPELINE_NAME = "leukemia-mtl"
DEFAULT_COMPILED = Path("build/pipeline.yaml")
STOPS = ("preprocess", "segment", "finetune")
TRAINING_STAGES = (  # (display name, stage, task, starts from)
    ("stage 1", "stage1", "blast", None),
    ("stage 2", "stage2", "blast", "stage 1"),
    ("stage 3 detection", "stage3", "detection", "stage 2"),
    ("stage 3 FAB", "stage3", "fab", "stage 2"),
    ("classical detection", "classical", "detection", None),
    ("classical FAB", "classical", "fab", None),
)


def _model_output(display: str) -> str:
    return display.replace(" ", "_").lower() + "_models"


_BASE_OUTPUTS = [("dataset", Dataset), ("roi", Dataset), ("roi_overlay", HTML)]
_SEGMENT_OUTPUTS = [("segmenter", Model), ("cells", Dataset), ("segmentation", HTML)]
OUTPUTS = {
    "preprocess": NamedTuple("Outputs", _BASE_OUTPUTS),
    "segment": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS),
    "finetune": NamedTuple("Outputs", _BASE_OUTPUTS + _SEGMENT_OUTPUTS + [("training_data", Dataset)]
                           + [(_model_output(display), List[Model]) for display, *_ in TRAINING_STAGES]),
}


def build_pipeline(*, profile: str = "demo", cache_ingest: bool = False, until: str = "finetune"):
    """The DAG. Defaults (profile, backbones, GPUs) come from `profile`; `until` cuts it short.

    `cache_ingest` may be on only when `data_version` tracks the data's content (the local runner).
    """
    from leukemia_mtl.config import get_profile

    if until not in STOPS:
        raise ValueError(f"until must be one of {STOPS}, got {until!r}")
    settings = get_profile(profile)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Acute lymphoblastic leukemia detection and FAB classification by multistage transfer learning",
    )
    def leukemia_pipeline(
        data: str = "synthetic",
        profile: str = settings.name,
        overrides: str = "{}",
        data_version: str = "",
        backbones: list = list(settings.model.backbones),
    ) -> OUTPUTS[until]:
        ingested = ingest(data=data, profile=profile, overrides=overrides, data_version=data_version)
        ingested.set_display_name("ingest")
        ingested.set_caching_options(enable_caching=cache_ingest)
        roi = preprocess(dataset=ingested.outputs["dataset"], profile=profile, overrides=overrides)
        roi.set_display_name("preprocess")
        outputs = [ingested.outputs["dataset"], roi.outputs["roi"], roi.outputs["overlay"]]
        if until == "preprocess":
            return OUTPUTS[until](*outputs)
        cells = segment(dataset=ingested.outputs["dataset"], roi=roi.outputs["roi"], profile=profile, overrides=overrides)
        cells.set_display_name("segment")
        _on_gpu(cells, settings.train.gpus)
        outputs += [cells.outputs["model"], cells.outputs["cells"], cells.outputs["figure"]]
        if until == "segment":
            return OUTPUTS[until](*outputs)
        folds = split(dataset=ingested.outputs["dataset"], profile=profile, overrides=overrides)
        folds.set_display_name("split")
        data_for_training = augment(dataset=ingested.outputs["dataset"], cells=cells.outputs["cells"],
                                    split=folds.outputs["split"], profile=profile, overrides=overrides)
        data_for_training.set_display_name("augment")
        with dsl.ParallelFor(items=backbones) as backbone:
            tasks = {}
            for display, stage, task, starts_from in TRAINING_STAGES:
                common = dict(training_data=data_for_training.outputs["training_data"], backbone=backbone,
                              stage=stage, task=task, profile=profile, overrides=overrides)
                if starts_from is None:
                    trained = finetune_from_imagenet(**common)
                else:
                    trained = finetune_from_previous(previous=tasks[starts_from].outputs["model"], **common)
                trained.set_display_name(display)
                _on_gpu(trained, settings.train.gpus)
                tasks[display] = trained
        outputs.append(data_for_training.outputs["training_data"])
        outputs += [dsl.Collected(tasks[display].outputs["model"]) for display, *_ in TRAINING_STAGES]
        return OUTPUTS[until](*outputs)

    return leukemia_pipeline


def _on_gpu(task, gpus: int) -> None:
    """Request GPUs on a cluster (kfp.local ignores this with a warning)."""
    if gpus > 0:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)


def compile_pipeline(output: Path, profile: str = "paper") -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(profile=profile), package_path=str(output))
    return output


def run_local(profile: str, data: str, output_dir: Path, overrides: dict, cache: bool = True,
              until: str = "finetune") -> dict:
    """Run the DAG (to `until`) in this Python environment; returns {output: {path, metadata}}
    (a list of them for per-backbone outputs)."""
    from kfp import local

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import fingerprint

    settings = get_profile(profile, overrides)  # fail here, not inside a task, on a bad profile
    output_dir = output_dir.resolve()
    root = output_dir / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache)
    # our base image has Python; kfp warns because its name does not say so
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    # GPU requests and display names matter on a cluster only; kfp.local says so for every task
    warnings.filterwarnings("ignore", message="Task .* have no effect in the current local runner")
    version = fingerprint(data, settings)
    run = build_pipeline(profile=profile, cache_ingest=cache, until=until)(
        data=data, profile=profile, overrides=json.dumps(overrides, sort_keys=True), data_version=version,
        backbones=list(settings.model.backbones),
    )

    def describe(artifact):
        if isinstance(artifact, list):
            return [describe(a) for a in artifact]
        return {"path": artifact.path, "metadata": artifact.metadata}

    # cached tasks keep their first run's folders, so paths come from the run's outputs
    outputs = {name: describe(artifact) for name, artifact in run.outputs.items()}
    (output_dir / "outputs.json").write_text(json.dumps(outputs, indent=2, default=str) + "\n")
    return outputs


def describe_run(outputs: dict) -> list[str]:
    """What a person wants to read after a local run: where things are and the headline numbers."""
    lines = []
    order = [name for name, _ in _BASE_OUTPUTS + _SEGMENT_OUTPUTS] + ["training_data"]
    for name in sorted((n for n, v in outputs.items() if isinstance(v, dict)), key=lambda n: (order + [n]).index(n)):
        lines.append(f"  {name:14s} {outputs[name]['path']}")
    summary = json.loads((Path(outputs["dataset"]["path"]) / "dataset.json").read_text())
    for dataset, info in summary["datasets"].items():
        lines.append(f"  {dataset}: " + " ".join(f"{c}={n}" for c, n in info["class_counts"].items()))
    roi = json.loads((Path(outputs["roi"]["path"]) / "summary.json").read_text())
    if roi.get("mean_iou") is not None:
        lines.append(f"  ROI vs ground-truth WBC masks: IoU {roi['mean_iou']:.3f}, recall {roi['mean_recall']:.3f}, "
                     f"blast centres inside an ROI {roi['blast_recall']:.3f}")
    if "cells" in outputs:
        seg = json.loads((Path(outputs["cells"]["path"]) / "summary.json").read_text())
        if seg.get("unet_dice") is not None:
            lines.append(f"  held-out smears ({seg['heldout_smears']}): U-Net Dice {seg['unet_dice']:.3f} IoU {seg['unet_iou']:.3f} | "
                         f"threshold ROI Dice {seg['roi_dice']:.3f} IoU {seg['roi_iou']:.3f} (masks: {seg['mask_source']})")
        lines.append(f"  {seg['crops']} isolated cell crops; U-Net trained in {seg['train_seconds']:.0f}s")
    imagenet = True
    for display, *_ in TRAINING_STAGES:
        for model in outputs.get(_model_output(display), []):
            info = json.loads((Path(model["path"]) / "summary.json").read_text())
            imagenet &= info["imagenet"]
            speed = f"{info['images_per_second']:.0f} img/s" if info["images_per_second"] else "img/s needs 2+ epochs"
            lines.append(f"  {display:20s} {info['backbone']:18s} eval accuracy {info['eval_accuracy']:.3f} "
                         f"({info['eval_images']} images, {info['epochs']} epochs, {speed})  {model['path']}")
    if not imagenet:
        lines.append("  note: no ImageNet weights (model.weights=none): stage 1 started from random initialisation, "
                     "so this is not the paper's transfer from ImageNet")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compile", action="store_true", help="write the pipeline YAML for Kubeflow")
    mode.add_argument("--run-local", action="store_true", help="run the DAG here with kfp.local")
    parser.add_argument("--output", type=Path, default=DEFAULT_COMPILED, help=f"YAML path for --compile (default {DEFAULT_COMPILED})")
    parser.add_argument("--profile", help="settings profile: demo, paper (default: paper for --compile, demo for --run-local)")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic' (generated, the default), a dataset folder, or s3://bucket/prefix")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/local"), help="where --run-local writes (default runs/local)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile setting, e.g. --set synth.n_smears=8")
    parser.add_argument("--until", choices=STOPS, default="finetune", help="run the DAG only up to this stage")
    parser.add_argument("--no-cache", action="store_true", help="run every task even if a cached result exists")
    args = parser.parse_args(argv)

    from leukemia_mtl.cli import parse_overrides
    from leukemia_mtl.errors import DatasetError, LeukemiaMtlError

    if args.compile:
        try:
            path = compile_pipeline(args.output, args.profile or "paper")
        except LeukemiaMtlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"wrote {path}")
        return 0

    try:
        overrides = parse_overrides(args.overrides)
        started = time.time()
        outputs = run_local(args.profile or "demo", args.data, args.output_dir, overrides, cache=not args.no_cache, until=args.until)
    except LeukemiaMtlError as exc:
        problems = exc.problems if isinstance(exc, DatasetError) else [exc]
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a task failed; kfp.local printed its log above
        print(f"error: pipeline run failed: {exc}", file=sys.stderr)
        return 1
    print(f"\npipeline finished in {time.time() - started:.0f}s; outputs:")
    print("\n".join(describe_run(outputs)))
    print(f"(all paths in {args.output_dir.resolve() / 'outputs.json'}; open the HTML outputs in a browser for the figures)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
