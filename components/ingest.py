"""ingest: smears and single-cell images (generated, local folders, or s3:// prefixes) -> a checked Dataset artifact."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    smears: str,
    cells: str,
    profile: str,
    overrides: str,
    data_version: str,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
    summary: Output[Artifact],
):
    """Bring the smear and single-cell inputs ('synthetic', a folder, or s3://bucket/prefix; cells may
    be 'none') into the run, fully validated.

    `data_version` is the data's content fingerprint: it is what makes a cached ingest safe.
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from leukemia_mtl.artifacts import log_metrics
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.io_utils import atomic_write_json
    from leukemia_mtl.data.ingest import ingest as run_ingest

    with exit_on_user_error():
        result = run_ingest(smears, cells, dataset.path, get_profile(profile, json.loads(overrides or "{}")))
        for note in result.notes:  # conversions and ignored files, in the task's log as well as the summary
            print(f"note: {note}", flush=True)
        dataset.metadata.update({"source": result.source, "data_version": data_version, "images": result.images, "datasets": sorted(result.datasets)})
        log_metrics(metrics, result.metrics())
        atomic_write_json(Path(summary.path), asdict(result))
