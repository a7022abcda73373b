"""Bring the run's inputs in: smears and single-cell images, each generated, copied from a local
folder, or downloaded from an s3:// prefix, into `data/smears` and `data/cells`.

The tree is materialised in a staging folder, checked in full (every image decoded, every label
parsed), and only then renamed into place: a run never starts on half a dataset, and a bad
dataset stops the run here with every problem listed.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from leukemia_mtl.config import Profile
from leukemia_mtl.data import synth
from leukemia_mtl.data.datasets import CELLS_DIR, SMEARS_DIR, Dataset, find_datasets, load_datasets
from leukemia_mtl.data.storage import ObjectStore, is_s3_uri
from leukemia_mtl.errors import DatasetError, Problem
from leukemia_mtl.io_utils import atomic_write_json

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
NONE = "none"  # no single-cell input: stage 1 then adapts on the cells segmented from smears
DATA_DIR = "data"
SUMMARY_FILE = "dataset.json"


@dataclass(frozen=True)
class IngestSummary:
    source: str
    datasets: dict[str, dict]
    images: int
    notes: list[str]
    smears: str = SYNTHETIC
    cells: str = SYNTHETIC

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"images": float(self.images), "notes": float(len(self.notes))}
        for name, info in self.datasets.items():
            for cls, count in info["class_counts"].items():
                out[f"{name}_{cls}"] = float(count)
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


def ingest(smears: str, cells: str, out_dir: Path | str, profile: Profile, *, progress: bool = True) -> IngestSummary:
    """Materialise the smear and single-cell inputs ('synthetic', a local folder, s3://bucket/prefix;
    cells may be 'none') under out_dir/data/smears and out_dir/data/cells."""
    out = Path(out_dir)
    final = out / DATA_DIR
    staging = out / f".{DATA_DIR}.partial"
    work = out / f".{DATA_DIR}.sources"
    for folder in (staging, work):
        shutil.rmtree(folder, ignore_errors=True)
    staging.mkdir(parents=True)
    sources = {SMEARS_DIR: smears.strip() or SYNTHETIC, CELLS_DIR: cells.strip() or SYNTHETIC}
    if sources[SMEARS_DIR] == NONE:
        raise DatasetError([Problem("smears", "a run needs smear images (stage 3 trains and is scored on them)")])
    origins: dict[Path, str] = {}
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
                    raise DatasetError([Problem(source, "is neither 'synthetic', an s3:// URI, nor an existing folder")])
            chosen = _pick(root, role)
            shutil.copytree(chosen, staging / role, ignore=shutil.ignore_patterns(".*"))
            relative = chosen.relative_to(root).as_posix()
            origin = source.rstrip("/") + ("" if relative == "." else f"/{relative}")
            origins[staging / role] = origin
        try:
            checked = load_datasets(staging, profile.data, progress=progress)
        except DatasetError as exc:  # name the user's files, not our staging copy
            raise DatasetError([Problem(_origin(p.where, origins), p.message) for p in exc.problems]) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    datasets = load_datasets(final, profile.data, check=False)  # paths under the final name
    for before, after in zip(checked, datasets):
        after.notes = [Problem(_origin(n.where, origins), n.message) for n in before.notes]  # the user's file
    summary = summarise(f"smears: {sources[SMEARS_DIR]}; cells: {sources[CELLS_DIR]}", datasets,
                        smears=sources[SMEARS_DIR], cells=sources[CELLS_DIR])
    atomic_write_json(out / SUMMARY_FILE, asdict(summary))
    log.info("ingested %d images (%s)", summary.images, summary.source)
    return summary


def _origin(where: str, origins: dict[Path, str]) -> str:
    for staged, origin in origins.items():
        if where == str(staged) or where.startswith(str(staged) + "/"):
            return origin + where[len(str(staged)):]
    return where


def summarise(source: str, datasets: list[Dataset], **inputs: str) -> IngestSummary:
    return IngestSummary(
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
            }
            for d in datasets
        },
        images=sum(len(d.records) for d in datasets),
        notes=[str(n) for d in datasets for n in d.notes],
    )


def fingerprint(smears: str, cells: str, profile: Profile) -> str:
    """A content version of both inputs for cache keys: changes whenever the data would change."""
    return f"smears={_fingerprint(smears, profile)};cells={_fingerprint(cells, profile)}"


def _fingerprint(source: str, profile: Profile) -> str:
    import hashlib
    import json

    source = source.strip() or SYNTHETIC
    digest = hashlib.sha256()
    if source == NONE:
        return NONE
    if source == SYNTHETIC:
        digest.update(json.dumps({"v": synth.GENERATOR_VERSION, "seed": profile.seed, "synth": asdict(profile.synth)},
                                 sort_keys=True).encode())
    elif is_s3_uri(source):
        from leukemia_mtl.data.storage import parse_s3_uri

        bucket, prefix = parse_s3_uri(source)
        store = ObjectStore.from_env(profile.storage)
        for key, size in store.list_keys(bucket, prefix):
            digest.update(f"{key}\0{size}\0{store.client.stat_object(bucket, key).etag}\n".encode())
    else:
        root = Path(source).expanduser()
        if not root.is_dir():
            raise DatasetError([Problem(source, "is neither 'synthetic', an s3:// URI, nor an existing folder")])
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{source.split('://')[0] if '://' in source else 'local' if source != SYNTHETIC else SYNTHETIC}-{digest.hexdigest()[:16]}"
