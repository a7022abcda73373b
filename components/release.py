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
    baseline), bundle with the segmenter and the model card, publish to evaluate.models_uri if set and not refused.

    Args:
        crossval: The cross-validated results the models are picked by.
        data_summary: What ingest read, for the model card.
        segmenter: The U-Net that finds white cells in a smear.
        stage2: Every (fold, backbone)'s stage 2 model, the single-cell scorer.
        stage3_detection: Every (fold, backbone)'s stage 3 detection model.
        stage3_fab: Every (fold, backbone)'s stage 3 FAB model.
        classical_detection: Every (fold, backbone)'s classical detection model.
        classical_fab: Every (fold, backbone)'s classical FAB model.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.release import run_release_task

    with exit_on_user_error():
        candidates = [*stage2, *stage3_detection, *stage3_fab, *classical_detection, *classical_fab]
        run_release_task(crossval, data_summary, segmenter, candidates, model, manifest, task_settings(profile, overrides))
