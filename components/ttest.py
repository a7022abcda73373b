"""ttest: classical vs multistage transfer learning, and both vs the colour baseline, on the same folds."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ttest(crossval: Input[Artifact], profile: str, overrides: str, results: Output[Artifact], metrics: Output[Metrics]):
    """Corrected resampled (Nadeau-Bengio), paired, Welch, Student and Wilcoxon tests per task and backbone:
    multistage vs classical, and each against the colour-histogram baseline; the paper's Table V re-tested.

    Args:
        crossval: The cross-validated results, per fold.
        profile: The settings profile the task starts from (demo, workstation, paper).
        overrides: A JSON object of dotted settings applied over the profile.
    """
    from leukemia_mtl.config import task_settings
    from leukemia_mtl.errors import exit_on_user_error
    from leukemia_mtl.ttest import run_ttest_task

    with exit_on_user_error():
        run_ttest_task(crossval, results, metrics, task_settings(profile, overrides))
