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

    Args:
        smears: Smear images: 'synthetic', a folder, or s3://bucket/prefix.
        cells: Single-cell images: 'synthetic', a folder, s3://bucket/prefix, or 'none'.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
        data_version: The data's content fingerprint, which makes a cached ingest safe: filled in by the local
            runner, empty on a cluster (where ingest is never cached).
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.data.ingest import run_ingest_task
    from leukemia_mtl.errors import exit_on_user_error

    with exit_on_user_error():
        run_ingest_task(smears, cells, data_version, dataset, metrics, summary, task_settings(profile, overrides))
