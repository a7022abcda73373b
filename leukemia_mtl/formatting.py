"""How a number reads, in one place: the report, the model card and the run's console summary write
scores, intervals and mean ± SD the same way through these."""

from __future__ import annotations

from collections.abc import Mapping

NOT_AVAILABLE = "n/a"  # a score that is undefined (a class absent from every fold, an AUC of one class)
UNBROKEN = ",\u00a0"  # an interval's separator that a line never breaks at (HTML)


def number(value: float | None, digits: int = 3) -> str:
    """`value` to `digits` decimals; n/a for None."""
    return NOT_AVAILABLE if value is None else f"{value:.{digits}f}"


def interval(entry: Mapping | None, digits: int = 3, separator: str = ", ") -> str:
    """An operating point's {"value", "low", "high"} as 'value [low, high]' (the value alone without an
    interval; n/a without a value)."""
    if not entry or entry.get("value") is None:
        return NOT_AVAILABLE
    value = number(entry["value"], digits)
    if entry.get("low") is None:
        return value
    return f"{value} [{number(entry['low'], digits)}{separator}{number(entry['high'], digits)}]"


def mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """'mean ± SD' over folds; n/a without a mean."""
    return NOT_AVAILABLE if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"
