"""Paired quality deltas: confidence intervals of means and ratios, difference tests.

One rule picks the interval everywhere (means, paired deltas, cost ratios): with at least
:data:`T_INTERVAL_MIN_UNITS` independent resampling units (cases, or groups when cases are
clustered) the analytic t-interval (delta method for ratios, cluster-robust when
clustered) is used; below that, a seeded percentile bootstrap that resamples units.
The ``method`` field of every :class:`Interval` says which one produced it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from evalgate.stats._common import Record, make_units

T_INTERVAL_MIN_UNITS = 300
"""From this many independent units on, intervals are analytic instead of bootstrapped."""

# Elements of one resample-count block (resamples x units); bounds memory, not results.
_BLOCK_ELEMENTS = 2_000_000

Method = Literal["auto", "bootstrap", "t"]
GroupLabels = Sequence[Any] | np.ndarray | None


@dataclass(frozen=True, slots=True)
class Interval(Record):
    """A point estimate with a two-sided confidence interval.

    Attributes:
        estimate: the point estimate (NaN when there is no data).
        low, high: the interval's bounds.
        level: its confidence level (0.95 for a 95% interval).
        method: ``"t"`` / ``"cluster-t"`` (analytic; delta method for a ratio),
            ``"bootstrap"`` / ``"cluster-bootstrap"`` (percentile, resampling cases or groups),
            ``"wilson"`` / ``"clopper-pearson"`` (proportions), the non-inferiority test's
            name for a comparison's Δ (its (1-2α) interval), or ``"none"`` without data.
        n: observations (cases) used.
        n_units: independent resampling units (groups when clustered, else cases).
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int
    n_units: int

    @property
    def width(self) -> float:
        return self.high - self.low


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (got {alpha!r})")


def resample_counts(n_units: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each unit is drawn in each resample: an (n_resamples, n_units) float matrix.

    Each row is one bootstrap resample (``n_units`` draws with replacement). Statistics that
    are ratios of sums become matrix products: ``counts @ unit_sums``.
    """
    out = np.empty((n_resamples, n_units))
    _fill_counts(out, rng)
    return out


# Rows of draws counted at once: keeps the counting's temporaries small beside a block.
_COUNT_ELEMENTS = 1 << 16


def _fill_counts(out: np.ndarray, rng: np.random.Generator) -> None:
    """Fills ``out`` (resamples x units) with a fresh :func:`resample_counts` draw.

    The draws are made in one call, as before (the same seed gives the same numbers
    whatever the block size of the caller), then counted a few rows at a time into
    ``out``, so the only large temporary is the draws themselves.
    """
    n_resamples, n_units = out.shape
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    step = max(1, _COUNT_ELEMENTS // max(n_units, 1))
    offsets = (np.arange(step) * n_units)[:, None]
    for start in range(0, n_resamples, step):
        chunk = draws[start : start + step]
        flat = np.bincount((chunk + offsets[: len(chunk)]).ravel(), minlength=chunk.size)
        out[start : start + len(chunk)] = flat.reshape(chunk.shape)


def resample_blocks(
    n_units: int, n_resamples: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yields :func:`resample_counts` blocks, together ``n_resamples`` rows (bounded memory).

    Every block is written into one buffer, which the next block overwrites: use a block
    (``counts @ ...``) before asking for the next, never keep it. A fresh array per block
    would be held by the caller's loop variable while the next is drawn: two blocks at
    once, the statistics' peak memory for any suite of more than one block.
    """
    block = max(1, _BLOCK_ELEMENTS // max(n_units, 1))
    buffer = np.empty((min(block, n_resamples), n_units)) if n_resamples > 0 else None
    for start in range(0, n_resamples, block):
        assert buffer is not None
        counts = buffer[: min(block, n_resamples - start)]
        _fill_counts(counts, rng)
        yield counts


def _bootstrap_ratio_replicates(
    num: np.ndarray, den: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of sum(num)/sum(den) over units: (n_boot, K) for (G, K) inputs."""
    out = np.empty((n_boot, num.shape[1]))
    row = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for counts in resample_blocks(num.shape[0], n_boot, rng):
            out[row : row + len(counts)] = (counts @ num) / (counts @ den)
            row += len(counts)
    return out


def _percentile_bounds(replicates: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.nanquantile(replicates, [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high


def bootstrap_mean_ci(
    x: np.ndarray,
    groups: GroupLabels = None,
    *,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Percentile bootstrap interval of the mean, for one or many datasets at once.

    Args:
        x: observations, shape (N,) or (S, N) for S datasets sharing the same ``groups``
            (each row gets its own interval; all rows use the same resampled indices).
        groups: optional cluster label per observation; clusters are resampled whole and
            the mean is the ratio estimator sum(x)/N of the resample.
        alpha: 1 - confidence level.  n_boot: resamples.  seed: for the resampling.

    Returns:
        (low, high): floats for 1-D ``x``, arrays of shape (S,) for 2-D ``x``.
    """
    _check_alpha(alpha)
    x = np.asarray(x, dtype=float)
    one = x.ndim == 1
    data = x[None, :] if one else x
    units = make_units(groups, data.shape[1])
    if data.shape[1] == 0:
        nan = np.full(data.shape[0], np.nan)
        return (float(nan[0]), float(nan[0])) if one else (nan, nan)
    num = units.totals(data.T)  # (G, S)
    den = units.totals(np.ones(data.shape[1]))[:, None]  # (G, 1)
    reps = _bootstrap_ratio_replicates(num, den, n_boot, np.random.default_rng(seed))
    low, high = _percentile_bounds(reps, alpha)
    if one:
        return float(low[0]), float(high[0])
    return low, high


def _ratio_t(num: np.ndarray, den: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """sum(num)/sum(den) with a cluster-robust (CR1) t-interval on G-1 degrees of freedom.

    For one observation per unit and ``den`` = 1 this is exactly the classic one-sample
    t-interval of the mean: se = s/sqrt(N), t quantile on N-1 df.
    """
    g = len(num)
    total = den.sum()
    ratio = num.sum() / total
    resid = num - ratio * den
    se = np.sqrt(g / (g - 1) * np.sum(resid**2)) / abs(total)
    half = stats.t.ppf(1 - alpha / 2, g - 1) * se
    return float(ratio), float(ratio - half), float(ratio + half)


def ratio_ci(
    num: np.ndarray,
    den: np.ndarray,
    groups: GroupLabels = None,
    *,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    method: Method = "auto",
) -> Interval:
    """Interval of sum(num)/sum(den) over paired observations (e.g. cost_cand / cost_base).

    ``method="auto"``: delta-method t-interval with at least 300 units, else percentile
    bootstrap resampling units (cases, or groups). NaN bounds when sum(den) is 0.
    """
    _check_alpha(alpha)
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim != 1:
        raise ValueError("num and den must be 1-D arrays of the same length")
    n = len(num)
    units = make_units(groups, n)
    prefix = "cluster-" if units.clustered else ""
    if n == 0 or den.sum() == 0:
        return Interval(np.nan, np.nan, np.nan, 1 - alpha, "none", n, units.count)
    if method == "auto":
        method = "t" if units.count >= T_INTERVAL_MIN_UNITS else "bootstrap"
    unum, uden = units.totals(num), units.totals(den)
    if method == "t":
        if units.count < 2:
            est = float(num.sum() / den.sum())
            return Interval(est, np.nan, np.nan, 1 - alpha, prefix + "t", n, units.count)
        est, low, high = _ratio_t(unum, uden, alpha)
    elif method == "bootstrap":
        est = float(num.sum() / den.sum())
        reps = _bootstrap_ratio_replicates(
            unum[:, None], uden[:, None], n_boot, np.random.default_rng(seed)
        )
        lows, highs = _percentile_bounds(reps, alpha)
        low, high = float(lows[0]), float(highs[0])
    else:
        raise ValueError(f"method must be one of 'auto', 'bootstrap', 't' (got {method!r})")
    return Interval(est, low, high, 1 - alpha, prefix + method, n, units.count)


def mean_ci(
    x: np.ndarray,
    groups: GroupLabels = None,
    *,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    method: Method = "auto",
) -> Interval:
    """Interval of the mean of ``x`` (cases; clustered by ``groups`` when given).

    ``method="auto"``: t-interval (cluster-robust with groups) with at least 300 units,
    else seeded percentile bootstrap over units. Without data: NaN with method "none".
    """
    x = np.asarray(x, dtype=float)
    return ratio_ci(
        x, np.ones_like(x), groups, alpha=alpha, n_boot=n_boot, seed=seed, method=method
    )


def proportion_ci(successes: int, n: int, *, alpha: float = 0.05) -> Interval:
    """Wilson score interval of a proportion (one 0/1 score per independent case).

    Never zero-width: 102 passes of 102 give [0.964, 1.000], where a t or bootstrap
    interval of identical scores would claim [1.000, 1.000]. Its coverage stays near the
    nominal level at small n and near 0 or 1, where the Wald interval's collapses.
    """
    _check_alpha(alpha)
    if n <= 0:
        return Interval(np.nan, np.nan, np.nan, 1 - alpha, "none", 0, 0)
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = successes / n
    scale = 1 + z**2 / n
    center = (p + z**2 / (2 * n)) / scale
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / scale
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return Interval(p, float(low), float(high), 1 - alpha, "wilson", n, n)


def identical_mean_ci(value: float, n_units: int, *, alpha: float = 0.05) -> Interval:
    """Interval of the mean of scores in [0, 1] that were all ``value`` (0 or 1) over
    ``n_units`` independent units (groups when clustered): the exact Clopper-Pearson
    bound on the units, e.g. all pass -> [(α/2)^(1/G), 1]."""
    _check_alpha(alpha)
    if n_units <= 0:
        return Interval(np.nan, np.nan, np.nan, 1 - alpha, "none", 0, 0)
    edge = (alpha / 2) ** (1 / n_units)
    low, high = (edge, 1.0) if value >= 1 else (0.0, 1 - edge)
    return Interval(float(value), low, high, 1 - alpha, "clopper-pearson", n_units, n_units)


def paired_delta_ci(
    d: np.ndarray,
    groups: GroupLabels = None,
    *,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    method: Method = "auto",
) -> Interval:
    """Interval of the mean paired difference d_i = cand_i - base_i.

    Seeded percentile bootstrap with ``n_boot`` resamples below 300 units; t-interval from
    300 on (the bootstrap adds nothing there). With ``groups``, cases of one group are
    resampled together (and the t-interval is cluster-robust on G-1 df).
    """
    return mean_ci(d, groups, alpha=alpha, n_boot=n_boot, seed=seed, method=method)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    ``b``: pairs where only the candidate passed; ``c``: only the baseline passed. It is the
    binomial test of b successes in b + c trials at 1/2; 1.0 with no discordant pair.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0 (got b={b}, c={c})")
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zero_method="zsplit").

    zsplit keeps zero differences in the ranking (half to each side), so ties with the
    baseline count as evidence of no difference instead of being dropped. All-zero (or
    no) differences give 1.0.
    """
    d = np.asarray(d, dtype=float)
    if len(d) == 0 or not np.any(d):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="zsplit").pvalue)


def difference_test(d: np.ndarray, *, binary: bool) -> tuple[float, str]:
    """(two-sided p, test name) for paired differences: McNemar exact or Wilcoxon.

    Both treat cases as independent; with clustered cases the p-value is descriptive
    (the gate relies on the cluster-aware non-inferiority test instead).
    """
    d = np.asarray(d, dtype=float)
    if binary:
        return mcnemar_exact(int(np.sum(d > 0)), int(np.sum(d < 0))), "mcnemar-exact"
    return wilcoxon_p(d), "wilcoxon-zsplit"
