"""How far `Predictor.predict` is from its floor: the same images answered whole, and the arithmetic it cannot
avoid (decoding, the ROI where the release isolates from it, each model's forward pass compiled) timed on the very
tensors the answer gave the models. Issue 35, item 1.

    python bench/predict_floor.py [--release runs/.../release/model] [--smears 8] [--cells 8] [--json OUT] [--eager]

Without --release, the tests' tiny DAG runs first (bench/predict_stream.py's make_release) to make one. The images
are the demo profile's synthetic smears (640x480) and single-cell crops (257x257), seed 3, spread over the set.

What is timed, per image (median of --repeats):
  answer   `Predictor.predict(path, kind)`, nothing else (no overlay, no heat maps).
  parts    one answer again with the Predictor's own steps wrapped (its code runs unchanged): `_read` (decoding, the pixel
           scale, the ROI when the segmenter isolates from it), `_segment_all` (`Segmenter.segment_many`: resize,
           the U-Net's sliding windows through its compiled call, blending, mask cleaning, the blue-channel step,
           crops), within it the U-Net's calls; `_stained` per role (stain normalisation) and `_probabilities`
           per role (the model called as predict calls it: its `compiled_forward`, traced and warmed when the
           Predictor loaded; with --eager, `Predictor(compiled=False)`: eagerly through `model_outputs`, Keras
           layer by layer, as before issue 35). `read_image` and `compute_roi` are timed alone, called as predict
           calls them. The Predictor's load (and its warm-up, the classifiers' traces) is printed, not in the answer.
  models   every batch each model was given during one answer is recorded, and each model's forward pass is timed
           on those same arrays as (i) the eager call (`model_outputs`', predict's before issue 35), (ii)
           `predict_on_batch`, (iii) a `tf.function` with a fixed input signature (None, H, W, 3)
           (`bundles.compiled_forward`, predict's call), (iv) the same frozen (the weights as constants, so the
           graph optimiser folds batch normalisation into the convolutions; not predict's: it loads slower, in
           more memory), (v) the tf.function with `jit_compile=True` (XLA; --no-xla to
           skip). The first call of each is timed apart (Keras' predict function built, the trace, XLA's
           compilation of every new batch shape) and left out. Each variant's output is compared with the eager
           call's: a variant more than --tolerance away is not the same arithmetic and is left out of the floor.
  floor    per image: decoding + the ROI (only where predict computes it) + every model call of the answer at the
           fastest compiled variant (ii-v) of that model.
  16 in flight: the answer is `Predictor.predict_many` of 16 images (as predict over a folder answers a batch;
           the same 16 answered one at a time are printed beside it); the floor is their decoding and ROI plus each model called once on the 16 images'
           arrays concatenated (the crops of 16 smears in one batch, 16 cells in one batch; the U-Net's windows
           in batches of at most --max-batch), divided by 16. With fewer than 16 images the set is repeated.
Everything runs in one process on the CPU the machine has; the ratio answer / floor is what carries over.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench")]

KINDS = ("smear", "cell")
FLIGHT = 16
VARIANTS = ("eager", "predict_on_batch", "tf.function", "frozen", "xla")
COMPILED = VARIANTS[1:]


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def median_ms(repeats: int, fn, *args) -> float:
    """The median of `repeats` timings of fn(*args), in ms."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(ms_since(started))
    return statistics.median(times)


class Recorder:
    """Stands in for one model during an answer: times every call it is given (and with `keep`, keeps a copy of
    each batch), then passes it on; predict's code runs unchanged."""

    def __init__(self, model, name: str, log: dict, keep: bool) -> None:
        self._model, self._name, self._log, self._keep = model, name, log, keep

    def _note(self, x, started: float) -> None:
        self._log["ms"][f"model:{self._name}"] = self._log["ms"].get(f"model:{self._name}", 0.0) + ms_since(started)
        if self._keep:
            self._log["calls"].append((self._name, np.array(x, np.float32)))

    def __call__(self, x, *args, **kwargs):
        started = time.perf_counter()
        out = self._model(x, *args, **kwargs)
        self._note(x, started)
        return out

    def predict_on_batch(self, x):
        started = time.perf_counter()
        out = self._model.predict_on_batch(x)
        self._note(x, started)
        return out

    def __getattr__(self, name):
        return getattr(self._model, name)


def instrumented(predictor, path: Path, kind: str, keep: bool) -> dict:
    """One answer with the Predictor's steps and models timed: {"ms": {part: ms}, "calls": [(model, array)]}."""
    log = {"ms": {}, "calls": []}

    def timed(step: str, method):
        def wrapper(*args, **kwargs):
            role = {"_stained": lambda: args[1], "_probabilities": lambda: args[0]}.get(step, lambda: "")()
            key = f"{step}:{role}" if role else step
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                log["ms"][key] = log["ms"].get(key, 0.0) + ms_since(started)

        return wrapper

    steps = ("_read", "_segment_all", "_stained", "_probabilities", "_finish")
    models, unet, forward, unet_call = predictor.models, predictor.segmenter.model, predictor._forward, predictor._unet
    for step in steps:
        setattr(predictor, step, timed(step, getattr(predictor, step)))
    predictor.models = {role: (Recorder(model, role, log, keep), info) for role, (model, info) in models.items()}
    predictor._forward = {role: Recorder(call, role, log, keep) for role, call in forward.items()}  # compiled calls
    predictor.segmenter.model = Recorder(unet, "unet", log, keep)  # its predict_on_batch (--eager)
    if unet_call is not None:
        predictor._unet = Recorder(unet_call, "unet", log, keep)  # its compiled call
    try:
        started = time.perf_counter()
        predictor.predict(path, kind)
        log["ms"]["answer"] = ms_since(started)
    finally:
        for step in steps:
            delattr(predictor, step)
        predictor.models, predictor.segmenter.model, predictor._forward = models, unet, forward
        predictor._unet = unet_call
    return log


def variants(model, shape: tuple[int, ...], xla: bool) -> dict:
    """Each way of calling `model` on a float32 batch of `shape` images, numpy in, numpy out."""
    import tensorflow as tf

    spec = [tf.TensorSpec((None, *shape), tf.float32)]
    graph = tf.function(lambda x: model(x, training=False), input_signature=spec)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(graph.get_concrete_function())
    calls = {
        "eager": lambda x: np.asarray(model(x, training=False)),  # model_outputs' call (predict's before issue 35)
        "predict_on_batch": lambda x: np.asarray(model.predict_on_batch(x)),
        "tf.function": lambda x: graph(x).numpy(),
        "frozen": lambda x: frozen(tf.constant(x))[0].numpy(),  # the weights constants, BN folded
    }
    if xla:
        compiled = tf.function(lambda x: model(x, training=False), input_signature=spec, jit_compile=True)
        calls["xla"] = lambda x: compiled(x).numpy()
    return calls


def chunks(arrays: list[np.ndarray], size: int) -> list[np.ndarray]:
    joined = np.concatenate(arrays)
    return [joined[start : start + size] for start in range(0, len(joined), size)]


def time_model(calls: dict, batches: dict, args) -> dict:
    """calls: variants(); batches: {scenario: [[array, ...] per unit]}. Per scenario, per variant: ms per unit (its
    arrays' calls summed) and the largest difference from the eager call; the first call and the warm-up over every
    new batch shape (XLA compiles each) timed apart; a variant that fails is reported and dropped."""
    result = {"first_call_ms": {}, "warmup_ms": {}, "errors": {}}
    arrays = [x for units in batches.values() for unit in units for x in unit]
    shapes = list({x.shape: x for x in arrays}.values())
    for name, call in list(calls.items()):
        try:
            started = time.perf_counter()
            call(shapes[0])
            result["first_call_ms"][name] = ms_since(started)
            started = time.perf_counter()
            for x in shapes[1:]:
                call(x)
            result["warmup_ms"][name] = ms_since(started)
        except Exception as exc:  # XLA may not run here: say so, go on without it
            result["errors"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            del calls[name]
    for scenario, units in batches.items():
        out = result[scenario] = {"per_unit_ms": {}, "max_abs_diff": {}}
        eager = [[calls["eager"](x) for x in unit] for unit in units]
        for name, call in calls.items():
            out["per_unit_ms"][name] = [sum(median_ms(args.repeats, call, x) for x in unit) for unit in units]
            if name != "eager":
                out["max_abs_diff"][name] = max(
                    float(np.max(np.abs(call(x) - e), initial=0.0))
                    for unit, expected in zip(units, eager)
                    for x, e in zip(unit, expected)
                )
    return result


def pick_images(args) -> dict:
    from predict_stream import demo_source

    source = demo_source(args.work, args.smears, args.cells)
    images = {}
    for kind, pattern, count in (("smear", "ALL_IDB1/*.jpg", args.smears), ("cell", "ALL_IDB2/*.tif", args.cells)):
        pool = sorted(source.glob(pattern))
        images[kind] = [pool[i * len(pool) // count] for i in range(count)]  # evenly spaced over the set
    return images


def measure_kind(predictor, kind: str, paths: list[Path], args) -> dict:
    from leukemia_mtl.data.images import read_image
    from leukemia_mtl.predict import ImageRequest, PredictError
    from leukemia_mtl.preprocess import compute_roi

    limits = {"max_pixels": predictor.data_cfg.max_pixels, "min_side": predictor.data_cfg.min_side}
    roi_in_path = predictor.segmenter.info.isolation == "roi"
    usable = []
    for path in paths:
        try:
            predictor.predict(path, kind)  # warm-up (the first also builds Keras' predict function)
            usable.append(path)
        except PredictError as exc:
            print(f"  left out: {exc}")
    per_image = []
    for path in usable:
        row = {"image": str(path)}
        row["answer_ms"] = median_ms(args.repeats, predictor.predict, path, kind)
        logs = [instrumented(predictor, path, kind, keep=False) for _ in range(args.repeats)]
        row["parts_ms"] = {key: statistics.median(log["ms"].get(key, 0.0) for log in logs) for key in logs[0]["ms"]}
        rgb = read_image(path, **limits).rgb
        row["decode_ms"] = median_ms(args.repeats, lambda path: read_image(path, **limits), path)
        scale, _ = predictor.pixel_scale(rgb, kind)
        row["roi_ms"] = median_ms(args.repeats, compute_roi, rgb, predictor.preprocess_cfg, scale)
        row["calls"] = instrumented(predictor, path, kind, keep=True)["calls"]
        per_image.append(row)
    flight = [per_image[i % len(per_image)] for i in range(FLIGHT)]
    started = time.perf_counter()
    for row in flight:
        predictor.predict(row["image"], kind)
    serial16 = ms_since(started) / FLIGHT
    requests = [ImageRequest(row["image"], kind) for row in flight]
    batched16 = median_ms(args.repeats, predictor.predict_many, requests) / FLIGHT
    return {
        "per_image": per_image,
        "flight": flight,
        "answer16_ms": batched16,
        "serial16_ms": serial16,
        "roi_in_path": roi_in_path,
    }


def model_tables(predictor, measured: dict, args) -> dict:
    """Per kind and model: the variants' timings on the answers' arrays (scenario "1": one image's calls;
    "16": the 16 in flight's arrays concatenated)."""
    models = {role: model for role, (model, _) in predictor.models.items()} | {"unet": predictor.segmenter.model}
    tables, made = {}, {}
    for kind, m in measured.items():
        for name, model in models.items():
            per_image = [[x for n, x in row["calls"] if n == name] for row in m["per_image"]]
            if not any(per_image):
                continue
            flight = [x for row in m["flight"] for n, x in row["calls"] if n == name]
            batches = {"1": per_image, "16": [chunks(flight, args.max_batch)]}
            print(
                f"  timing {kind} / {name}: {sum(map(len, per_image))} calls over {len(per_image)} images", flush=True
            )
            if name not in made:  # one set per model: a later kind reuses its trace (a new shape: XLA compiles)
                made[name] = variants(model, per_image[0][0].shape[1:], args.xla)
            timing = time_model(dict(made[name]), batches, args)
            timing["calls_per_image"] = statistics.median(map(len, per_image))
            timing["batch_sizes"] = sorted({len(x) for unit in per_image for x in unit})
            timing["batch_sizes_16"] = [len(x) for x in batches["16"][0]]
            timing["input_shape"] = list(per_image[0][0].shape[1:])
            for scenario in ("1", "16"):
                out = timing[scenario]
                eligible = [
                    v for v in COMPILED if v in out["per_unit_ms"] and out["max_abs_diff"].get(v, 1) <= args.tolerance
                ]
                out["fastest"] = min(eligible, key=lambda v: sum(out["per_unit_ms"][v]), default="eager")
            tables[(kind, name)] = timing
    return tables


def summarise(measured: dict, tables: dict) -> dict:
    summary = {}
    for kind, m in measured.items():
        rows = m["per_image"]
        kind_tables = {name: t for (k, name), t in tables.items() if k == kind}
        floors = []
        for i, row in enumerate(rows):
            models = sum(t["1"]["per_unit_ms"][t["1"]["fastest"]][i] for t in kind_tables.values())
            floors.append(row["decode_ms"] + (row["roi_ms"] if m["roi_in_path"] else 0.0) + models)
        cpu16 = sum(r["decode_ms"] + (r["roi_ms"] if m["roi_in_path"] else 0.0) for r in m["flight"])
        models16 = sum(t["16"]["per_unit_ms"][t["16"]["fastest"]][0] for t in kind_tables.values())
        answer1 = statistics.median(r["answer_ms"] for r in rows)
        floor1 = statistics.median(floors)
        floor16 = (cpu16 + models16) / FLIGHT
        summary[kind] = {
            "images": len(rows),
            "floor_includes": ["read_image"]
            + (["compute_roi"] if m["roi_in_path"] else [])
            + [f"{name} ({t['1']['fastest']} at 1, {t['16']['fastest']} at 16)" for name, t in kind_tables.items()],
            "1": {"answer_ms": answer1, "floor_ms": floor1, "ratio": answer1 / floor1},
            "16": {
                "answer_ms": m["answer16_ms"],
                "one_at_a_time_ms": m["serial16_ms"],
                "answer_images_per_s": 1000 / m["answer16_ms"],
                "floor_ms": floor16,
                "ratio": m["answer16_ms"] / floor16,
            },
        }
    return summary


def parts_table(measured: dict) -> list[tuple[str, dict, str]]:
    """(part, {kind: median ms per image}, what it includes)."""
    labels = {
        "answer": "the whole answer (instrumented run)",
        "_read": "decoding, kind, pixel scale, ROI (if used)",
        "_segment_all": "Segmenter.segment_many: resize, U-Net windows, blend, clean, blue, crops",
        "model:unet": "  within it: the U-Net's calls (compiled, or predict_on_batch with --eager)",
    }
    for role in ("detection", "fab", "cells"):
        labels[f"_stained:{role}"] = f"stain normalisation for the {role} model (Predictor._stained)"
        labels[f"_probabilities:{role}"] = f"{role} model as predict calls it (compiled, or eager with --eager)"
    labels["_finish"] = "pixel scale told, overlay and heat maps (none here)"
    parts = []
    for key, what in labels.items():
        values = {
            kind: statistics.median(r["parts_ms"].get(key, 0.0) for r in m["per_image"])
            for kind, m in measured.items()
            if any(key in r["parts_ms"] for r in m["per_image"])
        }
        parts.append((key, values, what))
    answer = dict(parts[0][1])
    accounted = {kind: sum(v.get(kind, 0.0) for key, v, _ in parts[1:] if key != "model:unet") for kind in measured}
    parts.append(("rest", {k: answer[k] - accounted[k] for k in measured}, "squaring, the Predictions: answer - above"))
    parts.append(
        (
            "read_image",
            {k: statistics.median(r["decode_ms"] for r in m["per_image"]) for k, m in measured.items()},
            "decoding, alone (in the floor)",
        )
    )
    in_path = next(iter(measured.values()))["roi_in_path"]
    parts.append(
        (
            "compute_roi",
            {k: statistics.median(r["roi_ms"] for r in m["per_image"]) for k, m in measured.items()},
            "the ROI, alone: "
            + (
                "in predict's path and the floor"
                if in_path
                else "NOT in this release's path nor its floor (its segmenter isolates with the U-Net)"
            ),
        )
    )
    return parts


def print_report(summary: dict, parts: list, tables: dict) -> None:
    print(
        "\nanswer vs floor (ms per image; at 16 in flight: Predictor.predict_many of the 16 / 16, and in the last column"
        " the 16 answered one at a time by predict)"
    )
    print(
        f"{'kind':6} {'in flight':>9} {'answer ms':>10} {'floor ms':>9} {'answer/floor':>13} {'images/s':>9} "
        f"{'one at a time ms':>17}"
    )
    for kind, s in summary.items():
        for scenario in ("1", "16"):
            row = s[scenario]
            rate = f"{row['answer_images_per_s']:9.2f}" if "answer_images_per_s" in row else f"{'':9}"
            serial = f"{row['one_at_a_time_ms']:17.1f}" if "one_at_a_time_ms" in row else ""
            print(
                f"{kind:6} {scenario:>9} {row['answer_ms']:10.1f} {row['floor_ms']:9.1f} {row['ratio']:13.1f} "
                f"{rate} {serial}"
            )
    for kind, s in summary.items():
        print(f"floor of a {kind}: " + " + ".join(s["floor_includes"]))
    print("\nparts (median ms per image)")
    print(f"{'part':24} {'smear':>8} {'cell':>8}  includes")
    for key, values, what in parts:
        cells = " ".join(f"{values[k]:8.1f}" if k in values else f"{'-':>8}" for k in KINDS)
        print(f"{key:24} {cells}  {what}")
    print("\nmodels on the answers' own arrays (ms per image, summed over its calls; 16: per image of 16 in flight)")
    header = " ".join(f"{v:>16}" for v in VARIANTS)
    print(f"{'kind/model':16} {'flight':>6} {'calls':>5} {header}  fastest compiled / max |diff| vs eager")
    for (kind, name), t in tables.items():
        for scenario in ("1", "16"):
            out = t[scenario]
            per = {
                v: (statistics.median(ms) if scenario == "1" else ms[0] / FLIGHT)
                for v, ms in out["per_unit_ms"].items()
            }
            cols = " ".join(f"{per[v]:16.2f}" if v in per else f"{'n/a':>16}" for v in VARIANTS)
            calls = t["calls_per_image"] if scenario == "1" else len(t["batch_sizes_16"])
            diffs = ", ".join(f"{v} {d:.1e}" for v, d in out["max_abs_diff"].items())
            print(f"{kind + '/' + name:16} {scenario:>6} {calls:5g} {cols}  {out['fastest']} / {diffs}")
    print(
        "\nfirst calls (ms; left out of the timings: Keras' predict function built, the trace, XLA's compilation; the"
        " U-Net's predict_on_batch was built by the answers, and a model's later kind reuses its trace) and batches"
    )
    for (kind, name), t in tables.items():
        first = ", ".join(f"{v} {ms:.0f}" for v, ms in t["first_call_ms"].items())
        warm = ", ".join(f"{v} {ms:.0f}" for v, ms in t["warmup_ms"].items())
        print(
            f"{kind + '/' + name:16} input {t['input_shape']}, batches {t['batch_sizes']} (16 in flight: "
            f"{t['batch_sizes_16']}); first call: {first}; warm-up over every shape: {warm}"
        )
        for v, err in t["errors"].items():
            print(f"{'':16} {v} failed: {err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", type=Path, help="a release folder (default: make one with the tests' tiny DAG)")
    parser.add_argument("--smears", type=int, default=8, help="smears to time")
    parser.add_argument("--cells", type=int, default=8, help="single-cell images to time")
    parser.add_argument("--repeats", type=int, default=5, help="timings per measurement; the median is kept")
    parser.add_argument("--max-batch", type=int, default=256, help="largest batch of the 16 in flight's arrays")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest difference from the eager call")
    parser.add_argument("--no-xla", dest="xla", action="store_false", help="skip tf.function(jit_compile=True)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-floor")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument(
        "--eager", action="store_true", help="answer with the classifiers called eagerly, as before issue 35"
    )
    args = parser.parse_args()
    if min(args.smears, args.cells) < 1:
        parser.error("--smears and --cells: at least 1")

    import tensorflow as tf

    from leukemia_mtl.predict import Predictor

    tf.keras.utils.set_random_seed(0)
    if args.release is None:
        from predict_stream import make_release

        args.release = make_release(args.work)
    images = pick_images(args)
    predictor = Predictor(args.release, compiled=not args.eager)
    print(
        f"release {args.release} ({predictor.version}): input {predictor.input_size} px, stage-3 images "
        f"{predictor.stage3_images}, segmenter isolation {predictor.segmenter.info.isolation}; classifiers "
        f"{'eager' if args.eager else 'compiled'}, load {predictor.load_seconds:.1f} s (of which warm-up "
        f"{predictor.warmup_seconds:.1f} s); "
        f"{args.smears} smears, {args.cells} cells, {args.repeats} repeats",
        flush=True,
    )
    measured = {}
    for kind in KINDS:
        print(f"answering {kind}s", flush=True)
        measured[kind] = measure_kind(predictor, kind, images[kind], args)
    tables = model_tables(predictor, measured, args)
    summary = summarise(measured, tables)
    parts = parts_table(measured)
    print_report(summary, parts, tables)
    if args.json:
        for m in measured.values():
            for row in m["per_image"]:
                row["calls"] = [[name, list(x.shape)] for name, x in row["calls"]]
            m.pop("flight")
        numbers = {
            "release": str(args.release),
            "version": predictor.version,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "load_seconds": predictor.load_seconds,
            "warmup_seconds": predictor.warmup_seconds,
            "summary": summary,
            "parts_ms": [{"part": key, "ms": values, "includes": what} for key, values, what in parts],
            "models": {f"{kind}/{name}": t for (kind, name), t in tables.items()},
            "per_image": {kind: m["per_image"] for kind, m in measured.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=1) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
