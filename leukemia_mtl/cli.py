"""`python -m leukemia_mtl synth | validate | preprocess | predict | serve | tune | buckets`: the library without Kubeflow."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from leukemia_mtl.config import ConfigError, ServeConfig, get_profile, parse_overrides
from leukemia_mtl.data.datasets import load_datasets
from leukemia_mtl.data.files import check_output, location_argument, mark_output, path_argument
from leukemia_mtl.data.synth import generate
from leukemia_mtl.errors import DatasetError, LeukemiaMtlError, environment_error_line, printable
from leukemia_mtl.predict import (
    BATCH_IMAGES,
    CSV_COLUMNS,
    NOTICE,
    csv_row,
    format_prediction,
    iter_predictions,
    open_predictor,
)
from leukemia_mtl.preprocess import preprocess_datasets


def _profile_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="demo", help="named settings profile (default: demo)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set synth.n_smears=8 (value parsed as JSON)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m leukemia_mtl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic dataset in ALL-IDB's layout")
    synth.add_argument(
        "--out", required=True, type=path_argument, help="output folder (ALL_IDB1/ and ALL_IDB2/ go inside)"
    )
    synth.add_argument("--seed", type=int, default=None, help="random seed (default: the profile's)")
    synth.add_argument("--smears", type=int, help="number of ALL_IDB1 smears")
    synth.add_argument("--width", type=int, help="smear width in px (ALL-IDB1: 2592)")
    synth.add_argument("--height", type=int, help="smear height in px (ALL-IDB1: 1944)")
    synth.add_argument("--crops", type=int, help="number of ALL_IDB2 single-cell crops")
    _profile_args(synth)

    validate = sub.add_parser("validate", help="check every image and label of a dataset")
    validate.add_argument(
        "path",
        type=path_argument,
        help="dataset folder (ALL_IDB1, ALL_IDB2, folder-per-class, or a root holding ALL_IDB1/ALL_IDB2)",
    )
    validate.add_argument("--layout", default="auto", choices=("auto", "allidb1", "allidb2", "folders"))
    validate.add_argument(
        "--labels", type=path_argument, help="CSV with columns filename,class[,patient] for multi-class labels"
    )
    validate.add_argument("--negative-class", help="class that counts as 'no leukemia' for detection (default: normal)")
    _profile_args(validate)

    prep = sub.add_parser("preprocess", help="the paper's ROI step on a dataset")
    prep.add_argument("path", type=path_argument, help="dataset folder")
    prep.add_argument(
        "--out", required=True, type=path_argument, help="output folder for ROI masks, ROI images and manifest"
    )
    _profile_args(prep)
    weights = sub.add_parser("weights", help="each backbone and where its ImageNet weights come from (no network)")
    weights.add_argument(
        "--prepare",
        action="store_true",
        help="check and convert every packaged ImageNet file now (into $KERAS_HOME/models)",
    )
    buckets = sub.add_parser("buckets", help="create object-storage buckets if missing (MINIO_* environment)")
    buckets.add_argument("names", nargs="+", help="bucket names")

    pred = sub.add_parser("predict", help="classify smear or single-cell images with a released model")
    pred.add_argument(
        "--model",
        required=True,
        type=location_argument,
        help="release folder or s3://bucket/prefix/<version> (from a pipeline run)",
    )
    pred.add_argument("images", nargs="+", type=path_argument, help="image files, or folders (every image under them)")
    pred.add_argument(
        "--kind",
        default="auto",
        choices=("auto", "smear", "cell"),
        help="auto: square images up to 512 px are single cells, others smears (default)",
    )
    pred.add_argument(
        "--overlays",
        type=path_argument,
        default=Path("predictions"),
        help="folder for the smear overlays (default ./predictions)",
    )
    pred.add_argument(
        "--pixel-size",
        type=float,
        metavar="UM",
        help="micrometres per pixel of the images (ALL-IDB: 0.09); default: the training images' of that "
        "kind, else estimated from each image's nuclei (said in every answer)",
    )
    pred.add_argument(
        "--threshold",
        type=float,
        metavar="P",
        help="call a smear ALL at P(ALL) >= P; default: the release's operating point (the threshold that "
        "reached evaluate.target_sensitivity on cross-validation's inner splits)",
    )
    pred.add_argument(
        "--explain",
        action="store_true",
        help="also write Grad-CAM heat maps (<image>_gradcam.png, beside the overlays): where each model "
        "found its evidence",
    )
    pred.add_argument(
        "--batch",
        type=int,
        default=BATCH_IMAGES,
        metavar="N",
        help="images answered per call of the models (default %(default)d; the same answers at any N, "
        "more memory and faster at larger N)",
    )
    pred.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: notice, model version, settings, predictions (errors in place) and errors",
    )
    pred.add_argument(
        "--csv", type=path_argument, metavar="FILE", help="also write one CSV row per image (errors included) to FILE"
    )
    pred.add_argument(
        "--cache", type=path_argument, help="where an s3:// release is kept (default ~/.cache/leukemia-mtl/releases)"
    )

    tune = sub.add_parser(
        "tune", help="search the training settings (Optuna's TPE) on one fold's training part, nested"
    )
    tune.add_argument(
        "--smears",
        required=True,
        type=location_argument,
        help="smear images: a folder, s3://bucket/prefix, or 'synthetic'",
    )
    tune.add_argument(
        "--cells",
        default="none",
        type=location_argument,
        help="single-cell images: a folder, s3://bucket/prefix, 'synthetic' or 'none' (default)",
    )
    tune.add_argument(
        "--output",
        required=True,
        type=path_argument,
        help="work folder: the prepared data (reused), study.json, tuning.html, best_overrides.json",
    )
    tune.add_argument("--trials", type=int, help="number of trials (default: the profile's tune.trials, else 10)")
    tune.add_argument("--fold", type=int, default=0, help="the fold whose training part is searched (default 0)")
    tune.add_argument("--backbone", help="default: the profile's first")
    tune.add_argument(
        "--trial",
        action="store_true",
        help="run one trial at the settings --set gives (e.g. --set train.learning_rate=0.001) instead "
        "of a search, and print NAME=VALUE per scored stage and objective=VALUE (Katib's trials: "
        "its metrics collector reads those lines)",
    )
    _profile_args(tune)

    serve = sub.add_parser("serve", help="serve a released model: KServe's v2 protocol, /metrics and a page at /ui/")
    serve.add_argument(
        "--model",
        required=True,
        type=location_argument,
        help="release folder or s3://bucket/prefix/<version> (from a pipeline run)",
    )
    serve.add_argument("--port", type=int, default=ServeConfig.port, help=f"HTTP port (default {ServeConfig.port})")
    serve.add_argument(
        "--model-name",
        default=ServeConfig.model_name,
        help=f"the name in the endpoints' paths, /v2/models/NAME/infer (default {ServeConfig.model_name})",
    )
    serve.add_argument(
        "--max-request-mb",
        type=float,
        default=ServeConfig.max_request_bytes / (1 << 20),
        help="refuse (413) a request body above this many MiB (default %(default)g)",
    )
    serve.add_argument(
        "--max-images",
        type=int,
        default=ServeConfig.max_images_per_request,
        help="refuse (400) a request with more images (default %(default)d)",
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=ServeConfig.request_timeout_s,
        metavar="S",
        help=f"seconds a client has to send a request's body (default {ServeConfig.request_timeout_s:g}; "
        "then 408 and the connection closed)",
    )
    serve.add_argument(
        "--batch-images",
        type=int,
        default=ServeConfig.batch_max_images,
        metavar="N",
        help="most images answered in one call of the models, across requests (default %(default)d)",
    )
    serve.add_argument(
        "--batch-wait-ms",
        type=float,
        default=ServeConfig.batch_wait_ms,
        metavar="MS",
        help="how long a request waits for others to join its batch while the models are idle "
        "(default %(default)g; 0: no wait)",
    )
    serve.add_argument(
        "--queue-images",
        type=int,
        default=ServeConfig.queue_max_images,
        metavar="N",
        help="images waiting beyond which a request is refused with 503 (default %(default)d)",
    )
    serve.add_argument("--pixel-size", type=float, metavar="UM", help="as for predict")
    serve.add_argument(
        "--threshold", type=float, metavar="P", help="as for predict (default: the release's operating point)"
    )
    serve.add_argument(
        "--cache", type=path_argument, help="where an s3:// release is kept (default ~/.cache/leukemia-mtl/releases)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return _run(args)
    except DatasetError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found; fix them and run again.", file=sys.stderr)
        return 1
    except LeukemiaMtlError as exc:  # ConfigError and StorageError included
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a folder without write permission: one line
        line = environment_error_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(getattr(args, "overrides", []))  # predict takes its settings from the release
    if args.command == "synth":
        for flag, key in (
            ("smears", "synth.n_smears"),
            ("width", "synth.smear_width"),
            ("height", "synth.smear_height"),
            ("crops", "synth.n_crops"),
        ):
            if getattr(args, flag) is not None:
                overrides[key] = getattr(args, flag)
        profile = get_profile(args.profile, overrides)

        seed = profile.seed if args.seed is None else args.seed
        try:
            out = generate(args.out, profile.synth, seed)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        print(
            f"wrote {profile.synth.n_smears} smears ({profile.synth.smear_width}x{profile.synth.smear_height}) "
            f"and {profile.synth.n_crops} crops to {out} (seed {seed})"
        )
        return 0

    if args.command == "validate":
        if getattr(args, "negative_class", None):
            if "=" in args.negative_class:
                raise ConfigError(
                    f"--negative-class {args.negative_class!r}: validate reads one dataset; give its "
                    "negative class alone (smears=NAME,cells=NAME is for pipeline.py)"
                )
            overrides["data.negative_class"] = args.negative_class
        profile = get_profile(args.profile, overrides)

        datasets = load_datasets(args.path, profile.data, layout=args.layout, labels_csv=args.labels)
        for dataset in datasets:
            counts = " ".join(f"{c}={n}" for c, n in dataset.class_counts().items())
            extras = []
            if dataset.has_masks:
                extras.append(f"masks for {sum(r.mask_path is not None for r in dataset.records)}")
            centres = sum(bool(r.blast_centres) for r in dataset.records)
            if centres:
                extras.append(f"blast centres for {centres}")
            print(
                f"{dataset.root} ({dataset.layout}): {len(dataset.records)} images; {counts}"
                + (f"; {', '.join(extras)}" if extras else "")
            )
            for note in dataset.notes:
                print(f"  note: {note}")
        total = sum(len(d.records) for d in datasets)
        print(f"OK: {len(datasets)} dataset(s), {total} images, no problems")
        return 0

    if args.command == "preprocess":
        profile = get_profile(args.profile, overrides)

        check_output("--out", args.out, [args.path], kind="folder", marks=True)
        datasets = load_datasets(args.path, profile.data, check=False)
        mark_output(args.out)  # ROI images: never read back as a dataset's images by a walk over a folder above
        summary = preprocess_datasets(datasets, args.out, profile.preprocess, profile.data)
        print(json.dumps(summary.metrics(), indent=2))
        print(f"wrote ROI masks, ROI images, manifest.csv and overlay.png to {args.out}")
        return 0
    if args.command == "weights":
        return _weights(args)
    if args.command == "buckets":
        from leukemia_mtl.data.storage import ObjectStore

        store = ObjectStore.from_env()
        for name in args.names:
            store.ensure_bucket(name)
            print(f"bucket {name}: ready")
        return 0
    if args.command == "predict":
        return _predict(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "tune":
        return _tune(args, overrides)
    raise AssertionError(args.command)


def _weights(args: argparse.Namespace) -> int:
    from leukemia_mtl.models.backbones import BACKBONES, keras_models_dir, resolve_weights

    for backbone in BACKBONES.values():
        if backbone.packaged is not None:
            where = (
                resolve_weights("imagenet", backbone).description + f"; licence {backbone.packaged.licence}"
                if args.prepare
                else f"{backbone.packaged.describe()}; licence {backbone.packaged.licence} (offline)"
            )
        else:
            cached = keras_models_dir() / backbone.weights_file
            where = (
                f"ImageNet, Keras' file from {cached}"
                if cached.is_file()
                else f"ImageNet from Keras' download (needs the internet, or {backbone.weights_file} in {cached.parent})"
            )
        print(f"{backbone.name}{' (paper)' if backbone.paper else ''}: {where}")
    return 0


def _tune(args: argparse.Namespace, overrides: dict) -> int:
    from leukemia_mtl.tune import tune_folder

    if args.trial and args.trials is not None:
        raise ConfigError("--trial runs one trial at the --set settings; --trials is for a search: give one of them")
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials {args.trials}: a search needs at least 1 trial")
    trials = args.trials
    if not args.trial and trials is None:
        trials = get_profile(args.profile, overrides).tune.trials or 10
    result = tune_folder(
        args.smears,
        args.cells,
        args.output,
        args.profile,
        overrides,
        fold=args.fold,
        backbone=args.backbone,
        trials=trials,
        one_trial=args.trial,
    )
    if args.trial:
        for stage, value in result["stages"].items():
            print(f"{stage}={value:.6f}")
        print(f"objective={result['objective']:.6f}")  # Katib's StdOut metrics collector reads NAME=VALUE lines
        return 0
    best, own = result["best"], result["profile_trial"]
    print(
        f"{len(result['trials'])} trials on fold {result['fold_id']}'s training part ({result['backbone']}), scored on its "
        f"inner validation split: {result['objective']}"
    )
    if own and own["value"] is not None:
        print(f"  the profile's own settings (trial 0): {own['value']:.4f}")
    if best:
        print(f"  best: trial {best['number']}, {best['value']:.4f}")
        print("  to train with it: " + " ".join(f"--set {k}={json.dumps(v)}" for k, v in best["params"].items()))
    work = Path(args.output) / f"fold{args.fold}-{result['backbone']}"
    print(f"wrote {work / 'study.json'}, {work / 'tuning.html'} and {work / 'best_overrides.json'}")
    return 0


# a request must hold at least one small image (base64) and at most what a server should buffer
MIN_REQUEST_MB, MAX_REQUEST_MB = 0.1, 4096.0


def _serve(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port}: give a TCP port from 1 to 65535")
    if not MIN_REQUEST_MB <= args.max_request_mb <= MAX_REQUEST_MB:  # nan and inf fail too
        raise ConfigError(
            f"--max-request-mb {args.max_request_mb:g}: give {MIN_REQUEST_MB:g} to {MAX_REQUEST_MB:g} "
            "(MiB a request's body may hold: base64 images are 4/3 of their files)"
        )
    if args.max_images < 1:
        raise ConfigError(f"--max-images {args.max_images}: give 1 or more")
    if not 0 < args.request_timeout <= 3600:
        raise ConfigError(f"--request-timeout {args.request_timeout:g}: give seconds above 0, at most 3600")
    if not 1 <= args.batch_images <= 256:
        raise ConfigError(f"--batch-images {args.batch_images}: give 1 to 256")
    if not 0 <= args.batch_wait_ms <= 1000:  # nan fails too
        raise ConfigError(f"--batch-wait-ms {args.batch_wait_ms:g}: give milliseconds from 0 to 1000")
    if args.queue_images < max(args.batch_images, args.max_images):
        raise ConfigError(
            f"--queue-images {args.queue_images}: give at least --batch-images ({args.batch_images}) and "
            f"--max-images ({args.max_images}), or no request could wait"
        )
    from leukemia_mtl.serve import serve  # kserve and its web stack: only for this command

    config = ServeConfig(
        model_name=args.model_name,
        port=args.port,
        max_request_bytes=int(args.max_request_mb * (1 << 20)),
        max_images_per_request=args.max_images,
        request_timeout_s=args.request_timeout,
        batch_max_images=args.batch_images,
        batch_wait_ms=args.batch_wait_ms,
        queue_max_images=args.queue_images,
    )
    serve(args.model, config, args.cache, args.pixel_size, args.threshold)
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Each answer is printed as soon as it exists (JSON: one object whose predictions array is written
    element by element), so a folder of thousands streams; errors go to stderr as they happen and
    into the JSON and CSV in place; exit 1 if any image could not be classified."""
    if not 1 <= args.batch <= 1024:
        raise ConfigError(f"--batch {args.batch}: give 1 to 1024 images per call of the models")
    # outputs never overwrite or land among the inputs; the overlay folder is marked, so a rerun skips it
    if args.overlays is not None:
        check_output("--overlays", args.overlays, args.images, kind="folder", marks=True, inside_inputs=True)
    if args.csv is not None:
        check_output("--csv", args.csv, args.images)
    predictor = open_predictor(args.model, args.cache, args.pixel_size, args.threshold)
    settings = {**predictor.settings(), "kind": args.kind, "explain": args.explain}
    print(f"note: {NOTICE}", file=sys.stderr)
    errors: list[dict] = []
    count = 0
    progress = tqdm(desc="predict", unit="image", file=sys.stderr, disable=None)
    csv_file = writer = None
    complete = False
    try:
        if args.csv is not None:  # written under a temporary name, renamed only when every image was answered
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            partial = args.csv.with_name(f".{args.csv.name}.part")
            csv_file = partial.open("w", newline="", encoding="utf-8")
            writer = csv.DictWriter(csv_file, CSV_COLUMNS)
            writer.writeheader()
        if args.json:
            head = {"notice": NOTICE, "model_version": predictor.version, "settings": settings}
            print(json.dumps(head, indent=2)[:-2] + ',\n  "predictions": [', flush=True)
        for image, result, error in iter_predictions(
            predictor, [str(i) for i in args.images], args.kind, args.overlays, args.explain, args.batch
        ):
            progress.update()
            if writer is not None:
                writer.writerow(csv_row(image, result, error, predictor.version))
            separator = "  " if count + len(errors) == 0 else ", "  # before this element: the array's first or not
            if error is not None:
                errors.append({"image": image, "error": error})
                progress.write(f"error: {printable(error)}", file=sys.stderr)
                if args.json:  # in place, so the array's order is the inputs'
                    print(separator + json.dumps(errors[-1]), flush=True)
                continue
            for conversion in result.get("conversions") or []:  # as validate prints them: never silent
                progress.write(f"note: {printable(image)}: {conversion}", file=sys.stderr)
            if args.json:
                print(separator + json.dumps(result, indent=2).replace("\n", "\n  "), flush=True)
            else:
                print(format_prediction(result), flush=True)
            count += 1
        complete = True
    finally:  # the JSON is closed even when a fault stops the stream, and says whether it holds every image
        progress.close()
        if args.json:
            print(
                '  ],\n  "errors": ' + json.dumps(errors) + f',\n  "classified": {count},\n'
                f'  "complete": {json.dumps(complete)}\n}}',
                flush=True,
            )
        if csv_file is not None:
            csv_file.close()
            if complete:
                os.replace(partial, args.csv)
            else:  # kept, under its temporary name: the rows so far are not the whole answer
                print(f"error: stopped before the last image; the CSV so far is {partial}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} image(s) could not be classified, {count} were", file=sys.stderr)
    return 1 if errors else 0
