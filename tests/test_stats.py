import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as scipy_stats

from helpers import fold_predictions
from leukemia_mtl import paper, stats
from leukemia_mtl.config import get_profile
from leukemia_mtl.evaluate import cross_validate
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.ttest import kfp_metrics, run_ttest

CLASSICAL = np.array([0.81, 0.78, 0.84, 0.80, 0.79, 0.83, 0.77, 0.82])
MULTISTAGE = np.array([0.86, 0.80, 0.85, 0.86, 0.80, 0.88, 0.83, 0.82])


def test_paired_welch_student_and_wilcoxon_equal_scipy():
    d = MULTISTAGE - CLASSICAL
    paired = stats.paired_t(CLASSICAL, MULTISTAGE)
    expected = scipy_stats.ttest_rel(MULTISTAGE, CLASSICAL)
    assert paired.statistic == pytest.approx(expected.statistic, abs=1e-9)
    assert paired.p_value == pytest.approx(expected.pvalue, abs=1e-9)
    half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert (paired.ci_low, paired.ci_high) == pytest.approx((d.mean() - half, d.mean() + half), abs=1e-9)
    assert paired.effect_size == pytest.approx(d.mean() / d.std(ddof=1), abs=1e-9)

    for equal_var in (False, True):
        result = stats.independent_t(CLASSICAL, MULTISTAGE, equal_var=equal_var)
        expected = scipy_stats.ttest_ind(MULTISTAGE, CLASSICAL, equal_var=equal_var)
        assert (result.statistic, result.p_value, result.df) == pytest.approx(
            (expected.statistic, expected.pvalue, expected.df), abs=1e-9
        )
    assert stats.independent_t(CLASSICAL, MULTISTAGE, equal_var=True).df == 2 * len(d) - 2

    wilcoxon = stats.wilcoxon_signed_rank(CLASSICAL, MULTISTAGE)
    expected = scipy_stats.wilcoxon(MULTISTAGE, CLASSICAL)
    assert (wilcoxon.statistic, wilcoxon.p_value) == pytest.approx((expected.statistic, expected.pvalue), abs=1e-9)
    assert wilcoxon.ci_low < d.mean() < wilcoxon.ci_high
    assert 0 < wilcoxon.effect_size <= 1  # multistage never worse here: all signed ranks positive
    assert wilcoxon.effect_size == pytest.approx(1.0)


def test_corrected_resampled_t_against_hand_computation():
    # d = 0.05 0.02 0.01 0.06 0.01 0.05 0.06 0.00 ; mean 0.0325 ; s^2 = 0.0068/7 ... worked out by hand:
    d = MULTISTAGE - CLASSICAL
    mean = sum(d) / 8
    s2 = sum((x - mean) ** 2 for x in d) / 7
    ratio = 1 / 3  # 4-fold cross-validation
    t = mean / math.sqrt((1 / 8 + ratio) * s2)
    result = stats.corrected_resampled_t(CLASSICAL, MULTISTAGE, test_train_ratio=ratio)
    assert mean == pytest.approx(0.0325, abs=1e-12)
    assert result.statistic == pytest.approx(t, abs=1e-9)
    assert result.df == 7
    assert result.p_value == pytest.approx(2 * scipy_stats.t.sf(t, 7), abs=1e-9)
    # the correction makes it more conservative than the naive paired test on the same pairs
    assert result.p_value > stats.paired_t(CLASSICAL, MULTISTAGE).p_value
    half = scipy_stats.t.ppf(0.975, 7) * math.sqrt((1 / 8 + ratio) * s2)
    assert (result.ci_low, result.ci_high) == pytest.approx((mean - half, mean + half), abs=1e-9)


def test_table_v_reproduced_and_the_claimed_pair_cannot_hold():
    result = paper.table_v_reanalysis()
    by_name = {r["test"]: r for r in result["tests"]}
    student = by_name["Student's t-test (independent groups)"]
    assert student["df"] == paper.CLAIMED_DF  # the paper's df = 18: two independent groups of ten
    assert student["statistic"] == pytest.approx(8.3568, abs=1e-4)
    assert student["p_value"] < 1e-6
    assert by_name["paired t-test"]["statistic"] == pytest.approx(8.9396, abs=1e-4)
    assert by_name["corrected resampled t-test (Nadeau-Bengio)"]["statistic"] == pytest.approx(6.1526, abs=1e-4)
    assert student["mean_difference"] == pytest.approx(4.689, abs=1e-9)
    # t = 0.853 with 18 df gives p = 0.40, and p = 0.0001 needs |t| = 4.97: the pair is impossible
    assert result["p_of_claimed_t"] == pytest.approx(0.4048, abs=1e-4)
    assert result["t_for_claimed_p"] == pytest.approx(4.9657, abs=1e-4)


def test_degenerate_and_bad_scores():
    same = stats.compare([0.5, 0.6, 0.7], [0.5, 0.6, 0.7], test_train_ratio=0.5)
    assert all(math.isnan(r.mean_difference) or r.mean_difference == 0 for r in same)
    assert "all differences" in same[0].note and same[0].to_dict()["statistic"] is None
    with pytest.raises(stats.StatsError, match="equally long"):
        stats.paired_t([1, 2, 3], [1, 2])
    with pytest.raises(stats.StatsError, match="at least 2"):
        stats.paired_t([1], [2])
    with pytest.raises(stats.StatsError, match="finite"):
        stats.paired_t([1, float("nan")], [1, 2])


def test_stats_needs_nothing_of_the_paper():
    code = "import sys, leukemia_mtl.stats; assert 'leukemia_mtl.paper' not in sys.modules, 'stats imports paper'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_ttest_step_writes_the_arms_tests_beside_the_paper_table_v(tmp_path):
    rng = np.random.default_rng(1)
    predictions = []
    backbones = {
        "colour": "colour histogram",
        "features": "DenseNet121 ImageNet features (224 px) + logistic regression",
    }
    for arm in ("mtl", "ctl", "colour", "features"):
        for k in range(3):
            labels = np.arange(12) % 2
            positive = np.clip(0.5 + (0.3 if arm == "mtl" else 0.1) * (2 * labels - 1) + rng.normal(0, 0.2, 12), 0, 1)
            predictions.append(
                fold_predictions(
                    "detection",
                    arm,
                    k,
                    labels,
                    np.stack([1 - positive, positive], 1),
                    classes=("normal", "ALL"),
                    backbone=backbones.get(arm, "Xception"),
                )
            )
    scored = cross_validate(predictions)
    baselines = {arm: scored["detection"][backbone][arm] for arm, backbone in backbones.items()}
    crossval = {
        "folds": ["r0f0", "r0f1", "r0f2"],
        "tasks": {"detection": {"Xception": scored["detection"]["Xception"]}},
        "baselines": {"detection": baselines},
    }
    (tmp_path / "crossval.json").write_text(json.dumps(crossval))
    result = run_ttest(tmp_path / "crossval.json", tmp_path / "ttest.json", get_profile("demo"))
    assert json.loads((tmp_path / "ttest.json").read_text()) == result
    assert result == {
        **stats.compare_arms(CrossvalResult.from_dict(crossval)),
        "paper_table_v": paper.table_v_reanalysis(),
    }
    assert [(c["first"], c["second"]) for c in result["comparisons"]] == list(stats.COMPARISONS)
    assert {("features", "mtl"), ("features", "ctl")} <= set(stats.COMPARISONS)
    values = kfp_metrics(result)
    assert set(values) >= {
        "detection_Xception_mtl_vs_ctl_mean_difference",
        "detection_Xception_ctl_vs_colour_corrected_p",
        "detection_Xception_mtl_vs_features_corrected_p",
    }
    # a run without ImageNet weights has no features baseline: its pairs are left out, nothing else changes
    without = {**crossval, "baselines": {"detection": {"colour": baselines["colour"]}}}
    assert [
        (c["first"], c["second"]) for c in stats.compare_arms(CrossvalResult.from_dict(without))["comparisons"]
    ] == [pair for pair in stats.COMPARISONS if "features" not in pair]
