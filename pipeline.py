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
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import HTML, Dataset, Model

from components.ingest import ingest
from components.preprocess import preprocess
from components.segment import segment

PIPELINE_NAME = "leukemia-mtl"
DEFAULT_COMPILED = Path("build/pipeline.yaml")


def build_pipeline(*, cache_ingest: bool = False):
    """The DAG. `cache_ingest` may be on only when `data_version` tracks the data's content."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Acute lymphoblastic leukemia detection and FAB classification by multistage transfer learning",
    )
    def leukemia_pipeline(
        data: str = "synthetic",
        profile: str = "demo",
        overrides: str = "{}",
        data_version: str = "",
    ) -> NamedTuple("Outputs", dataset=Dataset, roi=Dataset, roi_overlay=HTML, segmenter=Model, cells=Dataset,
                    segmentation=HTML):
        ingested = ingest(data=data, profile=profile, overrides=overrides, data_version=data_version)
        ingested.set_display_name("ingest")
        ingested.set_caching_options(enable_caching=cache_ingest)
        roi = preprocess(dataset=ingested.outputs["dataset"], profile=profile, overrides=overrides)
        roi.set_display_name("preprocess")
        cells = segment(dataset=ingested.outputs["dataset"], roi=roi.outputs["roi"], profile=profile, overrides=overrides)
        cells.set_display_name("segment")
        outputs = NamedTuple("Outputs", dataset=Dataset, roi=Dataset, roi_overlay=HTML, segmenter=Model, cells=Dataset,
                             segmentation=HTML)
        return outputs(ingested.outputs["dataset"], roi.outputs["roi"], roi.outputs["overlay"], cells.outputs["model"],
                       cells.outputs["cells"], cells.outputs["figure"])

    return leukemia_pipeline


def compile_pipeline(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(), package_path=str(output))
    return output


def run_local(profile: str, data: str, output_dir: Path, overrides: dict, cache: bool = True) -> dict[str, dict]:
    """Run the whole DAG in this Python environment; returns {output: {path, metadata}}."""
    from kfp import local

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.ingest import fingerprint

    settings = get_profile(profile, overrides)  # fail here, not inside a task, on a bad profile
    output_dir = output_dir.resolve()
    root = output_dir / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), enable_caching=cache)
    # our base image has Python; kfp warns because its name does not say so
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
    version = fingerprint(data, settings)
    run = build_pipeline(cache_ingest=cache)(
        data=data, profile=profile, overrides=json.dumps(overrides, sort_keys=True), data_version=version
    )
    # cached tasks keep their first run's folders, so paths come from the run's outputs
    outputs = {name: {"path": artifact.path, "metadata": artifact.metadata} for name, artifact in run.outputs.items()}
    (output_dir / "outputs.json").write_text(json.dumps(outputs, indent=2, default=str) + "\n")
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compile", action="store_true", help="write the pipeline YAML for Kubeflow")
    mode.add_argument("--run-local", action="store_true", help="run the DAG here with kfp.local")
    parser.add_argument("--output", type=Path, default=DEFAULT_COMPILED, help=f"YAML path for --compile (default {DEFAULT_COMPILED})")
    parser.add_argument("--profile", default="demo", help="settings profile (demo, paper)")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic' (generated, the default), a dataset folder, or s3://bucket/prefix")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/local"), help="where --run-local writes (default runs/local)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile setting, e.g. --set synth.n_smears=8")
    parser.add_argument("--no-cache", action="store_true", help="run every task even if a cached result exists")
    args = parser.parse_args(argv)

    if args.compile:
        path = compile_pipeline(args.output)
        print(f"wrote {path}")
        return 0

    from leukemia_mtl.cli import parse_overrides
    from leukemia_mtl.errors import DatasetError, LeukemiaMtlError

    try:
        overrides = parse_overrides(args.overrides)
        started = time.time()
        outputs = run_local(args.profile, args.data, args.output_dir, overrides, cache=not args.no_cache)
    except LeukemiaMtlError as exc:
        problems = exc.problems if isinstance(exc, DatasetError) else [exc]
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a task failed; kfp.local printed its log above
        print(f"error: pipeline run failed: {exc}", file=sys.stderr)
        return 1
    print(f"\npipeline finished in {time.time() - started:.0f}s; outputs:")
    for name in ("dataset", "roi", "roi_overlay", "segmenter", "cells", "segmentation"):
        print(f"  {name:12s} {outputs[name]['path']}")
    summary = json.loads((Path(outputs["dataset"]["path"]) / "dataset.json").read_text())
    for dataset, info in summary["datasets"].items():
        counts = " ".join(f"{c}={n}" for c, n in info["class_counts"].items())
        print(f"  {dataset}: {counts}")
    roi = json.loads((Path(outputs["roi"]["path"]) / "summary.json").read_text())
    if roi.get("mean_iou") is not None:
        print(f"  ROI vs ground-truth WBC masks: IoU {roi['mean_iou']:.3f}, recall {roi['mean_recall']:.3f}, "
              f"blast centres inside an ROI {roi['blast_recall']:.3f}")
    seg = json.loads((Path(outputs["cells"]["path"]) / "summary.json").read_text())
    if seg.get("unet_dice") is not None:
        print(f"  held-out smears ({seg['heldout_smears']}): U-Net Dice {seg['unet_dice']:.3f} IoU {seg['unet_iou']:.3f} | "
              f"threshold ROI Dice {seg['roi_dice']:.3f} IoU {seg['roi_iou']:.3f} (masks: {seg['mask_source']})")
    print(f"  {seg['crops']} isolated cell crops; U-Net trained in {seg['train_seconds']:.0f}s")
    print(f"  open {outputs['roi_overlay']['path']} and {outputs['segmentation']['path']} in a browser for the figures")
    print(f"(also listed in {args.output_dir.resolve() / 'outputs.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
