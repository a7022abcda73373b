"""Bring a dataset into a run: generate it, copy a local folder, or download an s3:// prefix.

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
from leukemia_mtl.data.datasets import Dataset, load_datasets
from leukemia_mtl.data.storage import ObjectStore, is_s3_uri
from leukemia_mtl.errors import DatasetError, Problem
from leukemia_mtl.io_utils import atomic_write_json

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
DATA_DIR = "data"
SUMMARY_FILE = "dataset.json"


@dataclass(frozen=True)
class IngestSummary:
    source: str
    datasets: dict[str, dict]
    images: int
    notes: list[str]

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"images": float(self.images), "notes": float(len(self.notes))}
        for name, info in self.datasets.items():
            for cls, count in info["class_counts"].items():
                out[f"{name}_{cls}"] = float(count)
        return out


def ingest(source: str, out_dir: Path | str, profile: Profile, *, progress: bool = True) -> IngestSummary:
    """Materialise `source` ('' or 'synthetic', a local folder, or s3://bucket/prefix) under out_dir/data."""
    out = Path(out_dir)
    final = out / DATA_DIR
    staging = out / f".{DATA_DIR}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    source = source.strip() or SYNTHETIC

    if source == SYNTHETIC:
        synth.generate(staging, profile.synth, profile.seed, progress=progress)
    elif is_s3_uri(source):
        ObjectStore.from_env(profile.storage).download_prefix(source, staging)
    else:
        local = Path(source).expanduser()
        if not local.is_dir():
            raise DatasetError([Problem(source, "is neither 'synthetic', an s3:// URI, nor an existing folder")])
        shutil.copytree(local, staging, ignore=shutil.ignore_patterns(".*"))

    try:
        checked = load_datasets(staging, profile.data, progress=progress)
    except DatasetError as exc:  # name the user's files, not our staging copy
        origin = source.rstrip("/") if source != SYNTHETIC else "synthetic"
        raise DatasetError([Problem(p.where.replace(str(staging), origin, 1), p.message) for p in exc.problems]) from None
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    datasets = load_datasets(final, profile.data, check=False)  # paths under the final name
    for before, after in zip(checked, datasets):
        after.notes = [Problem(n.where.replace(str(staging), str(final), 1), n.message) for n in before.notes]
    summary = summarise(source, datasets)
    atomic_write_json(out / SUMMARY_FILE, asdict(summary))
    log.info("ingested %d images from %s", summary.images, source)
    return summary


def summarise(source: str, datasets: list[Dataset]) -> IngestSummary:
    return IngestSummary(
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


def fingerprint(source: str, profile: Profile) -> str:
    """A content version of `source` for cache keys: changes whenever the data would change."""
    import hashlib
    import json

    source = source.strip() or SYNTHETIC
    digest = hashlib.sha256()
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
