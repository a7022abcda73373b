"""The ingested dataset artifact's layout, and the names its files had before ingest copied them.

Every later stage reads the artifact; only ingest writes it. Kept apart from ingest so that the
stages reading it do not import the code that downloads and checks data (nor close a cycle
through it).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = "data"  # the datasets (smears/, cells/) under the artifact
SUMMARY_FILE = "dataset.json"  # ingest's summary, with each dataset's origin


def origin_of(dataset_root: Path) -> str:
    """An ingested dataset's folder under the user's name (the folder itself when it is not one)."""
    dataset_root = Path(dataset_root)
    if dataset_root.parent.name != DATA_DIR:
        return str(dataset_root)
    try:
        origins = json.loads((dataset_root.parent.parent / SUMMARY_FILE).read_text()).get("origins", {})
    except (OSError, ValueError):
        return str(dataset_root)
    return origins.get(dataset_root.name, str(dataset_root))


def user_path(ingested: Path | str, dataset: str, rel_path: str) -> str:
    """An ingested file under the name its owner knows it by (the staging path if ingest recorded none)."""
    return f"{origin_of(Path(ingested) / DATA_DIR / dataset)}/{rel_path}"
