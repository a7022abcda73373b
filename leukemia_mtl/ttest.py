"""The ttest step: the run's arms compared on the same folds (stats.compare_arms), with the paper's own
Table V put through the same tests beside them (paper.table_v_reanalysis), so a reader of the run's
p-values sees what the paper's numbers give too. Here, not in stats, so stats needs nothing of paper."""

from __future__ import annotations

from pathlib import Path

from leukemia_mtl.artifacts import log_metrics
from leukemia_mtl.config import Profile
from leukemia_mtl.io_utils import atomic_write_json
from leukemia_mtl.paper import table_v_reanalysis
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.stats import compare_arms


def run_ttest(crossval: CrossvalResult | Path | str, out_json: Path | str, settings: Profile) -> dict:
    """Every test on the arms of `crossval` (its JSON file, or the CrossvalResult itself) by the profile's
    evaluate.ttest_metric, confidence and seed, and the paper's Table V re-tested (`paper_table_v`);
    written to `out_json` and returned."""
    if isinstance(crossval, (str, Path)):
        crossval = CrossvalResult.load(crossval)
    cfg = settings.evaluate
    result = {
        **compare_arms(crossval, cfg.ttest_metric, cfg.confidence, settings.seed),
        "paper_table_v": table_v_reanalysis(cfg.confidence),
    }
    atomic_write_json(Path(out_json), result)
    return result


def kfp_metrics(ttest: dict) -> dict[str, float]:
    """The scalars the KFP UI lists, per comparison ({task}_{backbone}_{second}_vs_{first}): the corrected
    resampled t-test's mean difference and p (left out where undefined), the one test to read."""
    values = {}
    for entry in ttest["comparisons"]:
        name = f"{entry['task']}_{entry['backbone']}_{entry['second']}_vs_{entry['first']}"
        for test in entry["tests"][:1]:
            values[f"{name}_mean_difference"] = round(test["mean_difference"], 4)
            if test["p_value"] is not None:
                values[f"{name}_corrected_p"] = test["p_value"]
    return values


def run_ttest_task(crossval, results, metrics, profile: Profile) -> dict:
    """The ttest component's one call: crossval's artifact in, the comparisons and their KFP metrics out."""
    result = run_ttest(crossval.path, results.path, profile)
    log_metrics(metrics, kfp_metrics(result))
    return result
