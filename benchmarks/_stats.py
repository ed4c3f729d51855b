"""Paired intervals over seeds and plates, and win/loss/tie verdicts.

Benchmarks compare methods on the same seeds, data and held-out plates, so
the comparison is *paired*: for each seed (or held-out plate) take the
difference of the two methods' scores, then an interval for the mean
difference. A result is a **win** only when the whole 95% interval lies
above zero, a **loss** when it lies below, and a **tie** otherwise.

- :func:`t_interval`: Student-t interval for a mean (few seeds: the usual
  choice; assumes roughly normal differences).
- :func:`bootstrap_interval`: percentile bootstrap of the mean (no normality
  assumption, but too narrow with very few values; a cross-check).
- :func:`paired_difference`: interval of ``mean(a - b)`` over pairs.
- :func:`mcnemar_exact` and :func:`paired_bootstrap_accuracy`: for an
  accuracy over items (treatments in NSC/NSCB), where one item is ~1/n of
  accuracy and there are no seeds.
"""

from typing import NamedTuple

import numpy as np
from scipy import stats


class Interval(NamedTuple):
    """A mean (or difference), its interval and the number of values."""

    mean: float
    low: float
    high: float
    n: int


def _values(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(
            f"values must be a non-empty 1-d array of finite numbers, but got "
            f"{values!r}."
        )
    return values


def t_interval(values, level: float = 0.95) -> Interval:
    """Student-t interval of the mean; a lone value gets a NaN interval."""
    values = _values(values)
    n, mean = values.size, float(values.mean())
    if n < 2:
        return Interval(mean, np.nan, np.nan, n)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def bootstrap_interval(
    values, level: float = 0.95, n_resamples: int = 10_000, random_state: int = 0
) -> Interval:
    """Percentile bootstrap interval of the mean (seeded)."""
    values = _values(values)
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high), values.size)


def paired_difference(a, b, level: float = 0.95, method: str = "t") -> Interval:
    """Interval of the mean of ``a - b`` over pairs (same seed, same plate)."""
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(
            f"paired scores need the same number of values, but got {a.size} "
            f"and {b.size}."
        )
    if method == "t":
        return t_interval(a - b, level)
    if method == "bootstrap":
        return bootstrap_interval(a - b, level)
    raise ValueError(f"method must be 't' or 'bootstrap', but got {method!r}.")


def verdict(interval: Interval) -> str:
    """'win' when the interval is above zero, 'loss' below, else 'tie'."""
    if np.isnan(interval.low):
        return "n/a"
    if interval.low > 0:
        return "win"
    if interval.high < 0:
        return "loss"
    return "tie"


def format_mean(interval: Interval, digits: int = 3) -> str:
    """``mean ± half-width`` of a symmetric interval (no ± for one value)."""
    if np.isnan(interval.low):
        return f"{interval.mean:.{digits}f}"
    half = (interval.high - interval.low) / 2
    return f"{interval.mean:.{digits}f} ± {half:.{digits}f}"


def format_difference(interval: Interval, digits: int = 3) -> str:
    """``+0.012 [-0.010, +0.034]``: a signed difference and its interval."""
    if np.isnan(interval.low):
        return f"{interval.mean:+.{digits}f}"
    return (
        f"{interval.mean:+.{digits}f} "
        f"[{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"
    )


def _paired(a, b, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` as arrays of ``dtype``, refused unless paired item by item."""
    a, b = np.asarray(a, dtype=dtype), np.asarray(b, dtype=dtype)
    if a.shape != b.shape:
        raise ValueError(
            f"paired items need the same number of values, but got {a.size} "
            f"and {b.size}."
        )
    return a, b


def mcnemar_exact(correct_a, correct_b) -> tuple[int, int, float]:
    """Exact McNemar test of two classifiers scored on the same items.

    Returns ``(n_a_only, n_b_only, p_value)``: items only ``a`` gets right,
    items only ``b`` gets right, and the two-sided binomial p-value of the
    discordant counts (1.0 when there are none).
    """
    a, b = _paired(correct_a, correct_b, bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if a_only + b_only == 0:
        return a_only, b_only, 1.0
    p = stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
    return a_only, b_only, float(p)


def paired_bootstrap_accuracy(
    correct_a,
    correct_b,
    level: float = 0.95,
    n_resamples: int = 10_000,
    random_state: int = 0,
) -> Interval:
    """Bootstrap interval of ``accuracy(a) - accuracy(b)``, resampling items."""
    a, b = _paired(correct_a, correct_b, float)
    return bootstrap_interval(a - b, level, n_resamples, random_state)
