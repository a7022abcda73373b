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
    import json
    from pathlib import Path

    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.io_utils import atomic_write_json
    from leukemia_mtl.release import build_release, publish

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        candidates = [m.path for group in (stage2, stage3_detection, stage3_fab, classical_detection, classical_fab) for m in group]
        result = build_release(json.loads(Path(crossval.path).read_text()), candidates, segmenter.path, model.path, settings,
                               json.loads(Path(data_summary.path).read_text()))
        uri = settings.evaluate.models_uri
        result["published_to"] = publish(model.path, uri, settings) if uri and not result.get("refused") else None
        atomic_write_json(Path(manifest.path), result)
        model.metadata.update({"version": result["version"] or "refused", "published_to": result["published_to"] or "",
                               "gate_passed": result["gate"]["passed"],
                               **{f"{task}_backbone": pick["backbone"] for task, pick in result["selection"].items()}})
