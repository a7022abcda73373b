"""ingest: a dataset (generated, local folder, or s3:// prefix) -> a checked Dataset artifact."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest(
    data: str,
    profile: str,
    overrides: str,
    data_version: str,
    dataset: Output[Dataset],
    metrics: Output[Metrics],
):
    """Bring `data` ('synthetic', a folder, or s3://bucket/prefix) into the run, fully validated.

    `data_version` is the data's content fingerprint: it is what makes a cached ingest safe.
    """
    import json

    from leukemia_mtl.artifacts import log_metrics
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.data.ingest import ingest as run_ingest

    with exit_on_user_error():
        summary = run_ingest(data, dataset.path, get_profile(profile, json.loads(overrides or "{}")))
        dataset.metadata.update({"source": summary.source, "data_version": data_version, "images": summary.images, "datasets": sorted(summary.datasets)})
        log_metrics(metrics, summary.metrics())
