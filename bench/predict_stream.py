"""`predict` over a folder of many images: does it stream (answers as it goes, memory flat in the
number of images), and at what rate?

    python bench/predict_stream.py [--images 1000] [--release runs/demo/...release/model]

Without --release, the tests' tiny DAG runs first (its time is in BENCHMARKS.md) to make one. The images are
the demo profile's synthetic smears (640x480) and single-cell crops (257x257), each written in
several flipped, rotated and re-toned variants so that no two files are alike; one image in five
is a single cell. `python -m leukemia_mtl predict --json FOLDER` runs as a child process whose
resident memory (VmRSS) is sampled every 0.2 s and matched to the answers printed so far.
Reported: images/s after the models are loaded, peak RSS, and RSS after 10 % and 100 % of the
images (flat means the folder streams). Then the same at a quarter of the images: the peak should
not grow with the count.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def make_release(work: Path) -> Path:
    import pipeline
    from helpers import TINY

    outputs = pipeline.run_local(
        profile="demo", smears="synthetic", cells="synthetic", output_dir=work / "run", overrides=dict(TINY)
    )
    return Path(outputs["release"]["path"])


def demo_source(work: Path, smears: int = 0, cells: int = 0) -> Path:
    """The demo profile's synthetic data (seed 3), with at least `smears` smears and `cells` single cells, generated
    once under `work` (source-<smears>-<cells>)."""
    import dataclasses

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.synth import generate

    synth = get_profile("demo").synth
    synth = dataclasses.replace(synth, n_smears=max(synth.n_smears, smears), n_crops=max(synth.n_crops, cells))
    source = work / f"source-{synth.n_smears}-{synth.n_crops}"
    if not (source / "synth.json").is_file():
        generate(source, synth, seed=3, progress=False)
    return source


def make_images(folder: Path, count: int) -> None:
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.data.synth import generate

    source = folder.parent / "source"
    if not source.exists():
        generate(source, get_profile("demo").synth, seed=3, progress=False)
    smears = sorted((source / "ALL_IDB1").glob("*.jpg"))
    cells = sorted((source / "ALL_IDB2").glob("*.tif"))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pool, suffix = (cells, ".tif") if i % 5 == 4 else (smears, ".jpg")
        image = cv2.imread(str(pool[i % len(pool)]))
        image = (
            np.rot90(image, k=(i // len(pool)) % 4)
            if pool is cells
            else (image[:, ::-1] if (i // len(pool)) % 2 else image)
        )
        image = np.clip(image.astype(np.int16) + rng.integers(-6, 7), 0, 255).astype(np.uint8)  # a unique file each
        cv2.imwrite(str(folder / f"img{i:05d}{suffix}"), np.ascontiguousarray(image))


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_predict(release: Path, folder: Path, overlays: Path) -> dict:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leukemia_mtl",
            "predict",
            "--model",
            str(release),
            "--json",
            "--overlays",
            str(overlays),
            str(folder),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    answered, samples, first_answer = [0], [], [None]

    def read_answers() -> None:
        for line in child.stdout:
            if line.startswith(("  {", ", {")):
                answered[0] += 1
                if first_answer[0] is None:
                    first_answer[0] = time.perf_counter()

    reader = threading.Thread(target=read_answers, daemon=True)
    reader.start()
    started = time.perf_counter()
    while child.poll() is None:
        rss = rss_mb(child.pid)
        if rss is not None:
            samples.append((answered[0], rss))
        time.sleep(0.2)
    ended = time.perf_counter()
    reader.join()
    total = answered[0]
    at = lambda share: max((rss for n, rss in samples if n <= share * total), default=float("nan"))  # noqa: E731
    return {
        "images": total,
        "exit": child.returncode,
        "seconds": ended - started,
        "images_per_s": (total - 1) / (ended - first_answer[0]) if first_answer[0] and total > 1 else float("nan"),
        "first_answer_s": (first_answer[0] or ended) - started,
        "peak_rss_mb": max(rss for _, rss in samples),
        "rss_at_10pct_mb": at(0.10),
        "rss_at_100pct_mb": at(1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--release", type=Path, help="a release folder (default: make one with the tests' tiny DAG)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-predict")
    args = parser.parse_args()
    release = args.release or make_release(args.work)
    results = {}
    for count in (args.images // 4, args.images):
        folder = args.work / f"images-{count}"
        if not folder.exists():
            make_images(folder, count)
        results[count] = run_predict(release, folder, args.work / f"overlays-{count}")
        print(
            json.dumps(
                {"count": count, **{k: round(v, 2) if isinstance(v, float) else v for k, v in results[count].items()}}
            )
        )
    small, large = results[args.images // 4], results[args.images]
    print(
        f"peak RSS {large['peak_rss_mb']:.0f} MB for {args.images} images, {small['peak_rss_mb']:.0f} MB for {args.images // 4} "
        f"(ratio {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}); RSS after 10 % {large['rss_at_10pct_mb']:.0f} MB, "
        f"after 100 % {large['rss_at_100pct_mb']:.0f} MB; {large['images_per_s']:.2f} images/s "
        f"(first answer after {large['first_answer_s']:.1f} s)"
    )


if __name__ == "__main__":
    main()
