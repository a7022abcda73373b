"""`predict` over a folder of demo smears, this checkout against another commit's, side by side in one run, and
whether both print the same answers. Issue 35, item 2.

    python bench/predict_side_by_side.py --release runs/.../release/model [--ref b53159b] [--smears 64] [--runs 2]

Checks the reference commit out into a git worktree (build/bench-ref-<ref>, as bench/demo_side_by_side.py does).
The release must be one both commits read (made by the older one: `--release` from its demo run; without it, the
reference's tiny test DAG makes one). The images are the demo profile's synthetic smears (640x480, seed 3), --smears
of them. Each run is a child process with that commit's code first on PYTHONPATH (both use this .venv): it loads the
release (timed apart: the load), answers one smear (the first answer after the load), then times
`iter_predictions` over the folder with overlays written, as `predict --overlays` does; at the reference, one image
at a time; here, in its default batches. Runs alternate (reference, here, reference, here, ...) so the shared
machine's drift hits both alike. Printed: each run's images/s, the medians and their ratio (here / reference), load
and first-answer times, peak RSS, and how many answers print identically (`format_prediction`, the CSV row).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

from demo_side_by_side import worktree  # noqa: E402  (bench/ is on the path above)
from predict_stream import demo_source  # noqa: E402

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
started = time.perf_counter()
from leukemia_mtl.predict import Predictor, csv_row, format_prediction, iter_predictions
release, folder, overlays, out = map(Path, sys.argv[1:5])
predictor = Predictor(release)
loaded = time.perf_counter()
first = sorted(folder.glob("*.jpg"))[0]
predictor.predict(first, "smear")
first_answer = time.perf_counter()
lines = []
timed = time.perf_counter()
for image, answer, error in iter_predictions(predictor, [str(folder)], "smear", overlays):
    lines.append(
        {"image": Path(image).name, "error": error}
        if answer is None
        else {
            "image": Path(image).name,
            "printed": format_prediction({**answer, "image": Path(image).name, "overlay": None}),
            "csv": {k: v for k, v in csv_row(image, answer, None, "").items() if k not in ("image", "overlay")},
        }
    )
seconds = time.perf_counter() - timed
out.write_text(json.dumps({
    "images": len(lines), "seconds": seconds, "images_per_s": len(lines) / seconds,
    "load_s": loaded - started, "first_answer_ms": (first_answer - loaded) * 1000,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "answers": lines,
}))
"""


def make_smears(work: Path, count: int) -> Path:
    """`count` demo smears (synthetic, seed 3) in one folder."""
    folder = work / f"smears-{count}"
    if len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((demo_source(work, smears=count) / "ALL_IDB1").glob("*.jpg"))[:count]:
        shutil.copy(path, folder / path.name)
    return folder


def difference(here: dict, reference: dict) -> str | None:
    """None where both print the same answer: the text, and each CSV column both commits write; else what differs."""
    if here["image"] != reference["image"] or here.get("error") != reference.get("error"):
        return f"{here['image']}: {here.get('error')!r} against {reference['image']}: {reference.get('error')!r}"
    if "printed" not in here:
        return None
    if here["printed"] != reference["printed"]:
        return f"{here['image']}: printed {here['printed']!r} against {reference['printed']!r}"
    columns = sorted(set(here["csv"]) & set(reference["csv"]))
    changed = [
        f"{c} {here['csv'][c]!r} against {reference['csv'][c]!r}"
        for c in columns
        if here["csv"][c] != reference["csv"][c]
    ]
    return f"{here['image']}: " + "; ".join(changed) if changed else None


def run(code: Path, release: Path, folder: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as scratch:
        out = Path(scratch) / "out.json"
        subprocess.run(
            [sys.executable, "-c", CHILD, str(release), str(folder), str(Path(scratch) / "overlays"), str(out)],
            cwd=code,
            env={"PYTHONPATH": str(code), "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default="b53159b", help="the commit to compare with")
    parser.add_argument("--release", type=Path, help="a release both commits read (default: the reference's tiny DAG)")
    parser.add_argument("--smears", type=int, default=64)
    parser.add_argument("--runs", type=int, default=2, help="runs of each, alternating")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-predict-side-by-side")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    reference = worktree(args.ref)
    if args.release is None:
        made = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; sys.path[:0] = ['bench', 'tests']; from pathlib import Path; "
                "from predict_stream import make_release; print(make_release(Path(sys.argv[1])))",
                str(args.work / "release-work"),
            ],
            cwd=reference,
            env={"PYTHONPATH": str(reference), "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
            text=True,
        )
        args.release = Path(made.stdout.strip().splitlines()[-1])
    folder = make_smears(args.work, args.smears)
    print(f"release {args.release}; {args.smears} smears in {folder}; reference {args.ref} at {reference}", flush=True)
    runs: dict[str, list[dict]] = {"reference": [], "here": []}
    for i in range(args.runs):
        for name, code in (("reference", reference), ("here", REPO)):
            result = run(code, args.release, folder)
            runs[name].append(result)
            print(
                f"  run {i + 1} {name:9}: {result['images_per_s']:.2f} images/s ({result['images']} in "
                f"{result['seconds']:.1f} s); load {result['load_s']:.1f} s, first answer "
                f"{result['first_answer_ms']:.0f} ms, peak RSS {result['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    medians = {name: statistics.median(r["images_per_s"] for r in results) for name, results in runs.items()}
    differences = [
        difference(a, b)
        for here in runs["here"]
        for a, b in zip(here["answers"], runs["reference"][0]["answers"], strict=True)
    ]
    print(
        f"\nimages/s, median of {args.runs}: reference {medians['reference']:.2f}, here {medians['here']:.2f}: "
        f"x{medians['here'] / medians['reference']:.2f}\nanswers printed identically (the text, and the CSV "
        f"columns both commits write): {differences.count(None)} of {len(differences)}"
    )
    for found in [d for d in differences if d][:3]:
        print(f"  differs: {found}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        numbers = {
            "ref": args.ref,
            "release": str(args.release),
            "smears": args.smears,
            "medians_images_per_s": medians,
            "ratio": medians["here"] / medians["reference"],
            "identical_answers": [differences.count(None), len(differences)],
            "runs": {name: [{k: v for k, v in r.items() if k != "answers"} for r in rs] for name, rs in runs.items()},
        }
        args.json.write_text(json.dumps(numbers, indent=1) + "\n")


if __name__ == "__main__":
    main()
