"""Is multistage transfer learning better than classical transfer learning on the same folds?

Cross-validated scores are not independent samples: the training sets of two folds share most of
their images, so the plain paired t-test underestimates the variance and rejects too often. The
corrected resampled t-test of Nadeau and Bengio (2003) inflates the variance by the test/train
size ratio; it is the test to read. The paired and Welch t-tests (and Student's, which the paper
used: df = 18 for two groups of ten) and the Wilcoxon signed-rank test are reported beside it.
Every test takes the same pairs and reports the mean difference (second minus first), a
confidence interval and an effect size.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from leukemia_mtl.errors import LeukemiaMtlError
from leukemia_mtl.results import CrossvalResult
from leukemia_mtl.stages import COLOUR, CTL, FEATURES, MTL


class StatsError(LeukemiaMtlError):
    """Scores that cannot be compared: unequal lengths, too few, not finite."""


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    df: float
    p_value: float
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    effect_size: float
    effect_size_name: str
    n: int
    note: str = ""

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _check(first, second) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise StatsError(f"paired scores need two equally long lists, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise StatsError(f"a test needs at least 2 pairs of scores, got {len(a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise StatsError("scores must be finite numbers")
    return a, b


def p_from_t(t: float, df: float) -> float:
    """Two-sided p of a t statistic."""
    from scipy import stats

    return float(2 * stats.t.sf(abs(t), df))


def t_for_p(p: float, df: float) -> float:
    """The |t| that gives two-sided `p`."""
    from scipy import stats

    return float(stats.t.isf(p / 2, df))


def _quiet(call):
    """scipy warns (and returns nan) on zero variance; the nan is the answer, the note says why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return call()


def paired_t(first, second, confidence: float = 0.95) -> TestResult:
    from scipy import stats

    a, b = _check(first, second)
    d = b - a
    result = _quiet(lambda: stats.ttest_rel(b, a))
    ci = _quiet(lambda: result.confidence_interval(confidence))
    sd = d.std(ddof=1)
    return TestResult(
        test="paired t-test",
        statistic=float(result.statistic),
        df=float(result.df),
        p_value=float(result.pvalue),
        mean_difference=float(d.mean()),
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        confidence=confidence,
        effect_size=float(d.mean() / sd) if sd > 0 else math.nan,
        effect_size_name="Cohen's d_z",
        n=len(d),
        note="" if sd > 0 else "all differences equal: t undefined",
    )


def _cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((b.mean() - a.mean()) / pooled) if pooled > 0 else math.nan


def independent_t(first, second, equal_var: bool, confidence: float = 0.95) -> TestResult:
    """Welch's (equal_var=False) or Student's t-test: the two lists as independent groups."""
    from scipy import stats

    a, b = _check(first, second)
    result = _quiet(lambda: stats.ttest_ind(b, a, equal_var=equal_var))
    ci = _quiet(lambda: result.confidence_interval(confidence))
    name = "Student's t-test (independent groups)" if equal_var else "Welch's t-test"
    return TestResult(
        test=name,
        statistic=float(result.statistic),
        df=float(result.df),
        p_value=float(result.pvalue),
        mean_difference=float(b.mean() - a.mean()),
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        confidence=confidence,
        effect_size=_cohens_d(a, b),
        effect_size_name="Cohen's d (pooled SD)",
        n=len(a),
    )


def corrected_resampled_t(first, second, test_train_ratio: float, confidence: float = 0.95) -> TestResult:
    """Nadeau and Bengio (2003): var(mean d) = (1/J + n_test/n_train) * s^2, df = J - 1.

    For J = K folds x R repeats of K-fold cross-validation (Bouckaert and Frank 2004) the ratio
    is 1/(K-1). scipy has no such test, so the statistic is computed here; p and the interval
    come from scipy's t distribution.
    """
    from scipy import stats

    a, b = _check(first, second)
    if not test_train_ratio > 0:
        raise StatsError(f"test/train size ratio must be positive, got {test_train_ratio}")
    d = b - a
    n = len(d)
    variance = d.var(ddof=1)
    scale = math.sqrt((1 / n + test_train_ratio) * variance)
    df = n - 1
    half_width = stats.t.ppf(0.5 + confidence / 2, df) * scale
    if scale > 0:
        t = float(d.mean() / scale)
        p = p_from_t(t, df)
        note = ""
    else:
        t = p = math.nan
        note = "all differences equal: t undefined"
    return TestResult(
        test="corrected resampled t-test (Nadeau-Bengio)",
        statistic=t,
        df=float(df),
        p_value=p,
        mean_difference=float(d.mean()),
        ci_low=float(d.mean() - half_width),
        ci_high=float(d.mean() + half_width),
        confidence=confidence,
        effect_size=float(d.mean() / math.sqrt(variance)) if variance > 0 else math.nan,
        effect_size_name="Cohen's d_z",
        n=n,
        note=note,
    )


def wilcoxon_signed_rank(first, second, confidence: float = 0.95, seed: int = 0) -> TestResult:
    """scipy's Wilcoxon test; effect size the matched-pairs rank-biserial correlation; the interval
    a seeded bootstrap (BCa) of the mean difference, to stay free of a normality assumption."""
    from scipy import stats

    a, b = _check(first, second)
    d = b - a
    nonzero = d[d != 0]
    notes = []
    if len(nonzero) == 0:
        statistic = p = effect = math.nan
        notes.append("all differences are zero")
    else:
        result = stats.wilcoxon(b, a)
        statistic, p = float(result.statistic), float(result.pvalue)
        ranks = stats.rankdata(np.abs(nonzero))
        effect = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    low = high = math.nan
    if len(d) >= 3 and d.std() > 0:
        interval = _quiet(
            lambda: (
                stats.bootstrap(
                    (d,),
                    np.mean,
                    confidence_level=confidence,
                    n_resamples=9999,
                    method="BCa",
                    rng=np.random.default_rng(seed),
                ).confidence_interval
            )
        )
        low, high = float(interval.low), float(interval.high)
    else:
        notes.append("too few distinct differences for a bootstrap interval")
    return TestResult(
        test="Wilcoxon signed-rank test",
        statistic=statistic,
        df=math.nan,
        p_value=p,
        mean_difference=float(d.mean()),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        effect_size=effect,
        effect_size_name="rank-biserial r",
        n=len(d),
        note="; ".join(notes),
    )


def compare(first, second, test_train_ratio: float, confidence: float = 0.95, seed: int = 0) -> list[TestResult]:
    """Every test on the same pairs (first = classical, second = multistage by convention)."""
    return [
        corrected_resampled_t(first, second, test_train_ratio, confidence),
        paired_t(first, second, confidence),
        independent_t(first, second, equal_var=False, confidence=confidence),
        independent_t(first, second, equal_var=True, confidence=confidence),
        wilcoxon_signed_rank(first, second, confidence, seed),
    ]


# (first, second): second - first; a pair whose arm was not scored (the features baseline without ImageNet) is left out
COMPARISONS = ((CTL, MTL), (COLOUR, MTL), (COLOUR, CTL), (FEATURES, MTL), (FEATURES, CTL))


def compare_arms(
    crossval: CrossvalResult, metric: str = "balanced_accuracy", confidence: float = 0.95, seed: int = 0
) -> dict:
    """Per task and backbone, paired by fold, every test on: classical (ctl) vs multistage (mtl),
    and each against the colour-histogram baseline (is the method better than a trivial model?) and the
    ImageNet-features baseline (do the stages add anything to frozen ImageNet features?), where scored.

    `crossval` is evaluate.run_crossval's result (CrossvalResult.load reads its JSON). The ttest step sets the
    paper's Table V, re-tested, beside these (leukemia_mtl.ttest).
    """
    comparisons = []
    for task in crossval.task_names:
        for backbone in crossval.backbones(task):
            available = {result.arm: result for result in crossval.arms(task, backbone, baselines=True)}
            for first, second in COMPARISONS:
                if not {first, second} <= available.keys():
                    continue
                scores = {arm: available[arm].fold_scores(metric) for arm in (first, second)}
                if scores[first].keys() != scores[second].keys():
                    raise StatsError(
                        f"{task}/{backbone}: {first} and {second} were scored on different folds: "
                        f"{sorted(scores[first])} and {sorted(scores[second])}"
                    )
                folds = sorted(scores[second])
                a, b = [scores[first][f] for f in folds], [scores[second][f] for f in folds]
                entry = {
                    "task": task,
                    "backbone": backbone,
                    "metric": metric,
                    "first": first,
                    "second": second,
                    "folds": folds,
                    "first_scores": a,
                    "second_scores": b,
                    "test_train_ratio": available[second].test_train_ratio,
                    "tests": [],
                    "note": "",
                }
                if len(folds) < 2:
                    entry["note"] = "one fold: nothing to test"
                elif any(v is None for v in a + b):
                    entry["note"] = f"{metric} undefined in some fold: nothing to test"
                else:
                    entry["tests"] = [r.to_dict() for r in compare(a, b, entry["test_train_ratio"], confidence, seed)]
                comparisons.append(entry)
    return {"metric": metric, "confidence": confidence, "comparisons": comparisons}
