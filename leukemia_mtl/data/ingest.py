"""Bring the run's inputs in: smears and single-cell images, each generated, copied from a local
folder, or downloaded from an s3:// prefix, into `data/smears` and `data/cells`.

The tree is materialised in a staging folder, checked in full (every image decoded, every label
parsed), and only then renamed into place: a run never starts on half a dataset, and a bad
dataset stops the run here with every problem listed.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leukemia_mtl.artifacts import log_metrics
from leukemia_mtl.config import Profile
from leukemia_mtl.data import synth
from leukemia_mtl.data.datasets import CELLS_DIR, LABELS_FILE, SMEARS_DIR, Dataset, find_datasets, load_datasets
from leukemia_mtl.data.files import walk
from leukemia_mtl.data.images import IMAGE_EXTENSIONS
from leukemia_mtl.data.layout import DATA_DIR, SUMMARY_FILE, user_path  # noqa: F401 (re-exported)
from leukemia_mtl.data.shortcuts import find_shortcuts
from leukemia_mtl.data.storage import ObjectStore, is_s3_uri
from leukemia_mtl.errors import DatasetError, Problem, environment_error_line
from leukemia_mtl.io_utils import atomic_write_json
from leukemia_mtl.train.data import fold_shortfall

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
NONE = "none"  # no single-cell input: stage 1 then adapts on the cells segmented from smears


@dataclass(frozen=True)
class IngestSummary:
    source: str
    datasets: dict[str, dict]
    images: int
    notes: list[str]
    smears: str = SYNTHETIC
    cells: str = SYNTHETIC
    # dataset name -> where its files came from, as the user named it: messages of later stages name
    # the user's file, not the staging copy under pipeline_root
    origins: dict[str, str] = field(default_factory=dict)
    # what besides the cells tells the classes apart (image size, camera, file format: data.shortcuts), measured
    shortcuts: list[dict] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"images": float(self.images), "notes": float(len(self.notes))}
        for name, info in self.datasets.items():
            for cls, count in info["class_counts"].items():
                out[f"{name}_{cls}"] = float(count)
        out["shortcuts_flagged"] = float(sum(s["flagged"] for s in self.shortcuts))
        return out


def _pick(root: Path, role: str) -> Path:
    """The dataset folder for `role` in a source: the source itself, or its ALL_IDB1 (smears) /
    ALL_IDB2 (cells) when it holds both."""
    found = find_datasets(root)
    other = ("ALL_IDB1", SMEARS_DIR) if role == CELLS_DIR else ("ALL_IDB2", CELLS_DIR)
    if len(found) == 1 and found[0] != root and found[0].name in other:
        raise DatasetError([Problem(str(root), f"holds no {role} dataset, only {found[0].name}")])
    if len(found) == 1:
        return found[0]
    wanted = ("ALL_IDB2", CELLS_DIR) if role == CELLS_DIR else ("ALL_IDB1", SMEARS_DIR)
    return next(p for p in found if p.name in wanted)


def input_source(role: str, value: str | None) -> str:
    """The source named for an input, refused when blank: an unset CI variable must not quietly
    become 'synthetic' and retrain (and publish) a model on generated data."""
    source = (value or "").strip()
    if not source:
        raise DatasetError(
            [
                Problem(
                    role,
                    f"is empty; give 'synthetic', a local folder or an s3:// URI"
                    f"{', or none' if role == CELLS_DIR else ''}",
                )
            ]
        )
    return source


# what a dataset can hold: images and masks, ALL-IDB's blast centres, its label file
DATASET_SUFFIXES = IMAGE_EXTENSIONS | {".xyc"}


def copy_tree(source: Path, target: Path) -> tuple[list[Problem], list[Problem]]:
    """Copy the dataset's files that the shared walk finds (links followed, hidden names skipped) into
    `target`; returns (notes, problems) under the source's names: what it left behind, and what it
    could not walk (loops, dangling links, special files, never opened), which stop the run with the
    scan's own problems, as validate lists them. Other files are never copied: a link to a system
    file in the user's folder does not become part of a run's artifacts."""
    tree = walk(source)
    notes = tree.notes()
    target.mkdir(parents=True, exist_ok=True)
    for folder in tree.folders:
        (target / folder.relative_to(source)).mkdir(parents=True, exist_ok=True)
    problems = list(tree.problems)
    for path in tree.files:
        if path.suffix.lower() in DATASET_SUFFIXES or path.name == LABELS_FILE:
            copy = target / path.relative_to(source)
            try:
                shutil.copyfile(path, copy)
            except OSError as exc:
                if environment_error_line(exc) is not None and (
                    exc.filename in (None, str(copy)) or exc.errno in (errno.ENOSPC, errno.EDQUOT)
                ):
                    # the copy could not be written (a full disk): no image of the user's is to blame, so the
                    # error names the copy (shutil's sendfile names the source first)
                    raise OSError(exc.errno, exc.strerror, str(copy)) from None
                problems.append(Problem(str(path), f"cannot be read ({exc.strerror or exc})"))  # as validate says
        else:
            notes.append(Problem(str(path), "ignored: not an image of this dataset"))
    return notes, problems


def ingest(smears: str, cells: str, out_dir: Path | str, profile: Profile, *, progress: bool = True) -> IngestSummary:
    """Materialise the smear and single-cell inputs ('synthetic', a local folder, s3://bucket/prefix;
    cells may be 'none') under out_dir/data/smears and out_dir/data/cells."""
    out = Path(out_dir)
    final = out / DATA_DIR
    staging = out / f".{DATA_DIR}.partial"
    work = out / f".{DATA_DIR}.sources"
    sources = {SMEARS_DIR: input_source(SMEARS_DIR, smears), CELLS_DIR: input_source(CELLS_DIR, cells)}
    if sources[SMEARS_DIR] == NONE:
        raise DatasetError([Problem("smears", "a run needs smear images (stage 3 trains and is scored on them)")])
    for folder in (staging, work):
        shutil.rmtree(folder, ignore_errors=True)
    staging.mkdir(parents=True)
    origins: dict[Path, str] = {}
    left_behind: dict[str, list[Problem]] = {}
    unwalkable: list[Problem] = []
    try:
        for role, source in sources.items():
            if source == NONE:
                continue
            if source == SYNTHETIC:
                root = work / SYNTHETIC
                if not root.exists():
                    synth.generate(root, profile.synth, profile.seed, progress=progress)
            elif is_s3_uri(source):
                root = work / role
                ObjectStore.from_env(profile.storage).download_prefix(source, root)
            else:
                root = Path(source).expanduser()
                if not root.is_dir():
                    raise DatasetError(
                        [Problem(source, "is neither 'synthetic', an s3:// URI, nor an existing folder")]
                    )
            chosen = _pick(root, role)
            relative = chosen.relative_to(root).as_posix()
            origin = source.rstrip("/") + ("" if relative == "." else f"/{relative}")
            notes, problems = copy_tree(chosen, staging / role)
            left_behind[role] = [Problem(_origin(n.where, {chosen: origin}), n.message) for n in notes]
            unwalkable += [Problem(_origin(p.where, {chosen: origin}), p.message) for p in problems]
            origins[staging / role] = origin
        try:
            checked = load_datasets(staging, profile.data, progress=progress)
        except DatasetError as exc:  # name the user's files, not our staging copy
            found = [_users(p, origins) for p in exc.problems]
            raise DatasetError(sorted(unwalkable + found, key=lambda p: p.where)) from None
        if unwalkable:
            raise DatasetError(sorted(unwalkable, key=lambda p: p.where))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed ingest leaves no copy of anyone's data behind
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    datasets = load_datasets(final, profile.data, check=False)  # paths under the final name
    for before, after in zip(checked, datasets):
        after.notes = [
            *left_behind.get(after.name, []),  # the user's file, not the staging copy
            *(_users(n, origins) for n in before.notes),
        ]
        after.merged_duplicates = before.merged_duplicates
    summary = summarise(
        f"smears: {sources[SMEARS_DIR]}; cells: {sources[CELLS_DIR]}",
        datasets,
        smears=sources[SMEARS_DIR],
        cells=sources[CELLS_DIR],
        origins={staged.name: origin for staged, origin in origins.items()},
    )
    atomic_write_json(out / SUMMARY_FILE, asdict(summary))
    log.info("ingested %d images (%s)", summary.images, summary.source)
    return summary


def run_ingest_task(
    smears: str, cells: str, data_version: str, dataset, metrics, summary, profile: Profile
) -> IngestSummary:
    """The ingest component's one call: the inputs into KFP's dataset artifact, its metrics and summary.
    `data_version` is the data's content fingerprint, shown beside the artifact."""
    result = ingest(smears, cells, dataset.path, profile)
    for note in result.notes:  # conversions and ignored files, in the task's log as well as the summary
        print(f"note: {note}", flush=True)
    dataset.metadata.update(
        {
            "source": result.source,
            "data_version": data_version,
            "images": result.images,
            "datasets": sorted(result.datasets),
        }
    )
    log_metrics(metrics, result.metrics())
    atomic_write_json(Path(summary.path), asdict(result))
    return result


def precheck(smears: str, cells: str, profile: Profile) -> None:
    """The inputs' fitness for the split, from names alone (nothing decoded), before the first task:
    a local folder is scanned, generated data is counted from its settings (s3:// is checked by ingest)."""
    folds = profile.split.folds
    problems: list[Problem] = []
    for role, source in ((SMEARS_DIR, input_source(SMEARS_DIR, smears)), (CELLS_DIR, input_source(CELLS_DIR, cells))):
        if source == SYNTHETIC and role == SMEARS_DIR:
            labels = synth.smear_classes(profile.synth)
            unfit = fold_shortfall(
                labels, [label != "normal" for label in labels], [str(i) for i in range(len(labels))], folds
            )
            if unfit:
                problems.append(
                    Problem(
                        "synth.n_smears",
                        f"{profile.synth.n_smears} generated smears: {unfit} (or raise synth.n_smears)",
                    )
                )
        elif source not in (SYNTHETIC, NONE) and not is_s3_uri(source):
            root = Path(source).expanduser()
            if not root.is_dir():
                problems.append(Problem(source, "is neither 'synthetic', an s3:// URI, nor an existing folder"))
                continue
            chosen = _pick(root, role)
            own = getattr(profile.data, f"{role}_negative_class").strip() or profile.data.negative_class
            for dataset in load_datasets(chosen, dataclasses.replace(profile.data, negative_class=own), check=False):
                records = dataset.records
                unfit = fold_shortfall(
                    [r.label for r in records], [r.positive for r in records], [r.group for r in records], folds
                )
                if unfit:
                    problems.append(Problem(source, unfit))
    if problems:
        raise DatasetError(problems)


def _users(problem: Problem, origins: dict[Path, str]) -> Problem:
    """`problem` with every staged path, in where it points and in its words, under the user's name."""
    message = problem.message
    for staged, origin in sorted(origins.items(), key=lambda item: -len(str(item[0]))):
        message = message.replace(str(staged), origin)
    return Problem(_origin(problem.where, origins), message)


def _origin(where: str, origins: dict[Path, str]) -> str:
    for staged, origin in origins.items():
        if where == str(staged) or where.startswith(str(staged) + "/"):
            return origin + where[len(str(staged)) :]
    return where


def summarise(source: str, datasets: list[Dataset], **inputs) -> IngestSummary:
    shortcuts = [s for d in datasets for s in find_shortcuts(d)]
    return IngestSummary(
        shortcuts=[s.to_dict() for s in shortcuts],
        **inputs,
        source=source,
        datasets={
            d.name: {
                "layout": d.layout,
                "classes": list(d.classes),
                "class_counts": d.class_counts(),
                "negative_class": d.negative_class,
                "with_masks": sum(r.mask_path is not None for r in d.records),
                "with_blast_centres": sum(bool(r.blast_centres) for r in d.records),
                "merged_duplicates": len(d.merged_duplicates),
            }
            for d in datasets
        },
        images=sum(len(d.records) for d in datasets),
        notes=[str(n) for d in datasets for n in d.notes]
        + [f"SHORTCUT: {s.sentence()}" for s in shortcuts if s.flagged],
    )


def fingerprint(smears: str, cells: str, profile: Profile) -> str:
    """A content version of both inputs for cache keys: changes whenever the data would change."""
    return (
        f"smears={_fingerprint(input_source(SMEARS_DIR, smears), profile)};"
        f"cells={_fingerprint(input_source(CELLS_DIR, cells), profile)}"
    )


def _fingerprint(source: str, profile: Profile) -> str:
    digest = hashlib.sha256()
    if source == NONE:
        return NONE
    if source == SYNTHETIC:
        digest.update(
            json.dumps(
                {"v": synth.GENERATOR_VERSION, "seed": profile.seed, "synth": asdict(profile.synth)}, sort_keys=True
            ).encode()
        )
    elif is_s3_uri(source):
        from leukemia_mtl.data.storage import parse_s3_uri, safe_local_path

        bucket, prefix = parse_s3_uri(source)
        store = ObjectStore.from_env(profile.storage)
        for key, size in store.list_keys(bucket, prefix):
            safe_local_path(Path("/dataset"), key)  # a key ingest would refuse (.., absolute) is refused here, first
            stat = store.retrying(f"stat s3://{bucket}/{key}", lambda key=key: store.client.stat_object(bucket, key))
            digest.update(f"{key}\0{size}\0{stat.etag}\n".encode())
    else:
        root = Path(source).expanduser()
        if not root.is_dir():
            raise DatasetError([Problem(source, "is neither 'synthetic', an s3:// URI, nor an existing folder")])
        tree = walk(root)  # the walk ingest copies with: linked folders are in the version too
        if tree.problems:
            raise DatasetError(tree.problems)
        for path in tree.files:
            stat = path.stat()  # the link's target: editing it changes the version, and so does repointing it
            target = os.path.relpath(os.path.realpath(path), os.path.realpath(root))  # its own name unless linked
            digest.update(f"{target}\0".encode())
            digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{source.split('://')[0] if '://' in source else 'local' if source != SYNTHETIC else SYNTHETIC}-{digest.hexdigest()[:16]}"
