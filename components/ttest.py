"""ttest: classical vs multistage transfer learning, and both vs the colour baseline, on the same folds."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ttest(crossval: Input[Artifact], profile: str, overrides: str, results: Output[Artifact], metrics: Output[Metrics]):
    """Corrected resampled (Nadeau-Bengio), paired, Welch, Student and Wilcoxon tests per task and backbone:
    multistage vs classical, and each against the colour-histogram baseline."""
    import json
    from pathlib import Path

    from leukemia_mtl.artifacts import log_metrics
    from leukemia_mtl.config import get_profile
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.io_utils import atomic_write_json
    from leukemia_mtl.stats import compare_arms

    with exit_on_user_error():
        settings = get_profile(profile, json.loads(overrides or "{}"))
        cfg = settings.evaluate
        result = compare_arms(json.loads(Path(crossval.path).read_text()), cfg.ttest_metric, cfg.confidence, settings.seed)
        atomic_write_json(Path(results.path), result)
        values = {}
        for entry in result["comparisons"]:
            name = f"{entry['task']}_{entry['backbone']}_{entry['second']}_vs_{entry['first']}"
            for test in entry["tests"][:1]:  # the corrected resampled t-test: the one to read
                values[f"{name}_mean_difference"] = round(test["mean_difference"], 4)
                if test["p_value"] is not None:
                    values[f"{name}_corrected_p"] = test["p_value"]
        log_metrics(metrics, values)
