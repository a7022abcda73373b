"""release: the best cross-validated models and their settings as one versioned, checksummed artifact."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def release(
    crossval: Input[Artifact],
    data_summary: Input[Artifact],
    segmenter: Input[Model],
    stage2: Input[List[Model]],
    stage3_detection: Input[List[Model]],
    stage3_fab: Input[List[Model]],
    classical_detection: Input[List[Model]],
    classical_fab: Input[List[Model]],
    profile: str,
    overrides: str,
    model: Output[Model],
    manifest: Output[Artifact],
):
    """Select per task on the inner validation splits, check the gate (beat the majority class and the colour
    baseline), bundle with the segmenter and the model card, publish to evaluate.models_uri if set and not refused."""
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.release import run_release_task

    with exit_on_user_error():
        candidates = [*stage2, *stage3_detection, *stage3_fab, *classical_detection, *classical_fab]
        run_release_task(crossval, data_summary, segmenter, candidates, model, manifest, task_settings(profile, overrides))
