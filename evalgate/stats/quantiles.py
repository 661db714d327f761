"""Quantiles (latency p50/p95) with distribution-free order-statistic intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from evalgate.stats._common import Record


@dataclass(frozen=True, slots=True)
class QuantileCI(Record):
    """A sample quantile with its order-statistic confidence interval.

    Attributes:
        q: the quantile (0.95 for p95).
        estimate: the sample quantile (linear interpolation); None without data.
        low, high: interval bounds, each an observed value; None where the sample is too
            small for that bound to exist at this confidence (not a number we made up).
        bounds_defined: both bounds exist.
        n: observations.  confidence: the two-sided confidence level.
        min_n: the smallest n for which both bounds exist (72 for a 95% interval of p95).
    """

    q: float
    estimate: float | None
    low: float | None
    high: float | None
    bounds_defined: bool
    n: int
    confidence: float
    min_n: int


def min_n_for_quantile_ci(q: float, conf: float = 0.95) -> int:
    """Smallest n for which the two-sided order-statistic interval of quantile q exists.

    The upper bound needs q^n <= (1-conf)/2 (some order statistic above the quantile with
    enough probability), the lower one (1-q)^n < (1-conf)/2.
    """
    tail = (1 - conf) / 2
    n_high = math.ceil(math.log(tail) / math.log(q))
    n_low = math.floor(math.log(tail) / math.log(1 - q)) + 1
    return max(n_high, n_low)


def quantile_ci(x: Sequence[float] | np.ndarray, q: float, conf: float = 0.95) -> QuantileCI:
    """Sample quantile ``q`` of ``x`` with a two-sided ``conf`` order-statistic interval.

    The interval is [x_(l), x_(u)] with B ~ Binomial(n, q) the count of observations at
    or below the true quantile: l = ppf_B((1-conf)/2), u = isf_B((1-conf)/2) + 1 (1-based),
    each tail holding at most (1-conf)/2 for any continuous distribution. It is the same
    construction as ``scipy.stats.quantile_test(...).confidence_interval()``, which the
    tests check, computed here without the test's overhead. NaNs in ``x`` are ignored.
    """
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1) (got {q!r})")
    if not 0 < conf < 1:
        raise ValueError(f"conf must be in (0, 1) (got {conf!r})")
    values = np.asarray(x, dtype=float)
    values = np.sort(values[~np.isnan(values)])
    n = len(values)
    min_n = min_n_for_quantile_ci(q, conf)
    if n == 0:
        return QuantileCI(q, None, None, None, False, 0, conf, min_n)
    tail = (1 - conf) / 2
    dist = stats.binom(n, q)
    low_index = int(dist.ppf(tail)) - 1
    high_index = int(dist.isf(tail))
    low = float(values[low_index]) if low_index >= 0 else None
    high = float(values[high_index]) if high_index < n else None
    estimate = float(np.quantile(values, q))
    return QuantileCI(q, estimate, low, high, low is not None and high is not None, n, conf, min_n)


def resampled_quantiles(
    values: np.ndarray, units: np.ndarray, counts: np.ndarray, q: float
) -> np.ndarray:
    """The q-quantile of ``values`` in each bootstrap resample of their units, vectorised.

    Args:
        values: (M,) observations (e.g. call latencies); ``values[i]`` belongs to unit
            ``units[i]`` (its case or group), so a unit drawn twice counts its values twice.
        units: (M,) unit index of each value.
        counts: (B, G) how often each unit is drawn in each of B resamples.
        q: the quantile.

    Returns:
        (B,) quantiles, inverted-CDF definition (the smallest value whose cumulative
        weight reaches q of the total, ``numpy.quantile(..., method="inverted_cdf")`` on
        the expanded sample); NaN for a resample that draws none of the values.

    For an upper quantile only the top of the sorted values matters, so the cumulative
    weights are summed from the top over the first ~2(1-q)M values, falling back to all
    of them for any resample whose tail turned out heavier.
    """
    order = np.argsort(values, kind="stable")[::-1]
    desc, desc_units = values[order], units[order]
    m_values = len(desc)
    if m_values == 0:
        return np.full(len(counts), np.nan)
    # einsum, not BLAS: a matrix-vector product gains nothing from BLAS threads, which
    # only contend with each other on a busy machine.
    totals = np.einsum("bg,g->b", counts, np.bincount(desc_units, minlength=counts.shape[1]))
    above = (1 - q) * totals  # weight allowed strictly above the quantile
    head = min(m_values, math.ceil(2 * (1 - q) * m_values) + 64)
    top = np.cumsum(counts[:, desc_units[:head]], axis=1)
    n_above = (top <= above[:, None]).sum(axis=1)
    short = n_above == head
    if head < m_values and short.any():
        full = np.cumsum(counts[short][:, desc_units], axis=1)
        n_above[short] = (full <= above[short, None]).sum(axis=1)
    picked = desc[np.minimum(n_above, m_values - 1)]
    return np.where(totals > 0, picked, np.nan)
