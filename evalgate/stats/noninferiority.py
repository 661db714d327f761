"""Non-inferiority of a candidate against the baseline, at margin δ and level α.

H0: Δ <= -δ (the candidate loses at least the margin) against H1: Δ > -δ, where
Δ = E[cand - base] over cases. Three outcomes (:class:`NonInferiorityVerdict`):

- PASS: the one-sided p of H0 (Holm-adjusted across a suite's candidates) is below α,
  i.e. the lower bound of the (1-2α) interval of Δ lies above -δ;
- FAIL: the upper bound of that interval lies below -δ (the loss exceeds the margin);
- INCONCLUSIVE: neither; the report then says how many cases would settle it.

Which test (chosen by the kind of data, never by the outcome; compared by simulation in
``benchmarks/gate_validity.py``):

- every paired difference identical: an exact, distribution-free bound
  (:func:`identical_noninferiority`);
- binary scores, one unit per case: Tango's score test. Where its exact size at this n,
  δ and α (:func:`tango_exact_size`, the trinomial law summed over the PASS region,
  worst case over the nuisance) exceeds α + :data:`TANGO_SIZE_SLACK` (rare one-directional
  discordance), tables with fewer than :data:`TANGO_MIN_DISCORDANT` discordant pairs or
  no candidate-only win get an exact binomial test instead
  (:func:`exact_binomial_noninferiority`); the exact size of that rule (trinomial
  enumeration) was at most 0.054 for n 50-500 and δ 0.02-0.10, where Tango's alone
  reached 0.0579 (at n = 30 Tango's reaches 0.071 at δ = 0.1: such suites do not gate);
- everything else (continuous scores, case means over repeats, groups): the betting
  test of :mod:`evalgate.stats.betting` on the independent units (case differences, or
  per-group mean differences), valid at every n for every distribution on [-1, 1].
  Not the paired t: when a lever breaks a few cases badly and leaves the rest alone,
  the t-test's false-PASS rate reaches 2-3x α at the sizes eval suites have.

The verdict, the interval and the planning figures of a comparison all come from its one
test.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize, stats
from scipy.special import gammaln

from evalgate.stats import betting
from evalgate.stats._common import Record, make_units
from evalgate.stats.paired import GroupLabels

POWER = 0.8
TANGO_MIN_DISCORDANT = 5
"""Where Tango's size fails, tables with fewer discordant pairs (or no candidate-only win)
use the exact binomial test. Tango's exact size (n 30-1000, δ 0.02-0.10) with
one-directional discordance reached 0.058 (n = 300, δ = 0.02; n = 100, δ = 0.1), the
excess from tables with fewer than 5 discordant pairs or none won by the candidate."""
TANGO_SIZE_SLACK = 0.005
"""Tango is used on every table while its exact size stays within α + this."""
TANGO_EXACT_MAX_N = 1000
"""Above this many pairs the exact size is not enumerated: every pair count the fallback
matters for (n·δ small, δ >= 0.01) lies below it; larger tables keep Tango's asymptotic
size (exact size at 1000 pairs: 0.050 for δ = 0.02, 0.053 for δ = 0.05)."""


class NonInferiorityVerdict(enum.StrEnum):
    """Outcome of a non-inferiority test; its value is the string the reports show."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True, slots=True)
class NonInferiorityTest(Record):
    """One candidate's non-inferiority test (before any multiplicity adjustment).

    Attributes:
        test: ``"tango"``, ``"exact-binomial"`` (binary, few discordant pairs or none
            won by the candidate alone, where Tango's size fails), ``"betting"`` (on case
            differences), ``"cluster-betting"`` (on per-group mean differences),
            ``"exact-identical"`` (every paired difference identical), or ``"none"``.
        margin, alpha: δ and α.
        n: paired cases.  n_units: independent units (groups when clustered).
        statistic: Tango's z; the betting test's log capital at -δ (PASS above
            log(1/α)); the baseline-only wins for the exact binomial test; NaN for the
            exact-identical test.
        p_value: one-sided p of H0: Δ <= -δ (small -> PASS).
        p_worse: one-sided p of H0': Δ >= -δ (small -> FAIL).
        lower, upper: the (1-2α) two-sided interval of Δ that the same test gives
            (Tango: score-test inversion; exact-identical: the exact bound).
        sd: sd of the paired differences (betting: of the units it bets on) used for
            planning.
        identical: every paired difference is the same value.
        n_needed: cases for 80% power at this sd if the true Δ is 0 (exact-identical: cases
            for the exact bound to pass if the outputs stay identical).
        min_detectable_margin: the smallest δ this n can demonstrate at 80% power
            (exact-identical: the smallest δ the exact bound passes at this n).
    """

    test: str
    margin: float
    alpha: float
    n: int
    n_units: int
    statistic: float
    p_value: float
    p_worse: float
    lower: float
    upper: float
    sd: float
    identical: bool
    n_needed: int | None
    min_detectable_margin: float | None

    def verdict(self, p_adjusted: float | None = None) -> NonInferiorityVerdict:
        """PASS if the (adjusted) p < α; FAIL if the upper bound < -δ; else INCONCLUSIVE."""
        p = self.p_value if p_adjusted is None else p_adjusted
        if p < self.alpha:
            return NonInferiorityVerdict.PASS
        if self.upper < -self.margin:
            return NonInferiorityVerdict.FAIL
        return NonInferiorityVerdict.INCONCLUSIVE


def _z_sum(alpha: float, power: float = POWER) -> float:
    return float(stats.norm.ppf(1 - alpha) + stats.norm.ppf(power))


def n_needed(sd: float, margin: float, *, alpha: float = 0.05, power: float = POWER) -> int | None:
    """Cases for ``power`` to show non-inferiority at ``margin`` when the true Δ is 0,
    by the normal approximation: ((z_{1-α} + z_power) · sd / δ)², rounded up; None when
    sd is unknown (NaN). The paired t's planning, kept as the reference the benchmark
    compares with; the gate plans with its own test (:func:`_planning`).
    """
    if not math.isfinite(sd) or margin <= 0:
        return None
    return max(1, math.ceil((_z_sum(alpha, power) * sd / margin) ** 2 - 1e-9))


def min_detectable_margin(
    sd: float, n: int, *, alpha: float = 0.05, power: float = POWER
) -> float | None:
    """The smallest margin ``n`` cases demonstrate with ``power``: (z_{1-α}+z_power)·sd/√n."""
    if n <= 0 or not math.isfinite(sd):
        return None
    return _z_sum(alpha, power) * sd / math.sqrt(n)


def _tango_null_variance(discordance: float, margin: float) -> float:
    """Var(d) at the point of H0 (Δ = -δ) nearest, in likelihood, to "Δ = 0 at this discordance".

    Tango's score test uses the variance of the restricted MLE under H0, which the margin
    keeps away from zero however few pairs disagree: planning with the observed sd alone
    promises far too few cases when discordance is low.
    """
    half = discordance / 2

    def score(x: float) -> float:  # d/dx of the expected log-likelihood, p01=x, p10=x+δ
        return half / (x + margin) + half / x - 2 * (1 - discordance) / (1 - 2 * x - margin)

    top = (1 - margin) / 2  # every pair discordant
    if half <= 0:
        x = 0.0
    elif score(top - 1e-12) >= 0:  # ψ at or near 1: the likelihood rises to the boundary
        x = top
    else:
        x = float(optimize.brentq(score, 1e-12, top - 1e-12, xtol=1e-14))
    return 2 * x + margin - margin**2


def tango_n_needed(
    discordance: float, margin: float, *, alpha: float = 0.05, power: float = POWER
) -> int | None:
    """Pairs for ``power`` with Tango's test when the true Δ is 0 and a fraction
    ``discordance`` of the pairs disagree: ((z_{1-α}·σ0 + z_power·σ1) / δ)², with σ1² the
    variance of the paired difference at Δ = 0 and σ0² its variance under H0
    (:func:`_tango_null_variance`).
    """
    if not (math.isfinite(discordance) and 0 <= discordance <= 1) or not 0 < margin < 1:
        return None
    sigma0 = math.sqrt(_tango_null_variance(discordance, margin))
    sigma1 = math.sqrt(discordance)
    z_alpha, z_power = stats.norm.ppf(1 - alpha), stats.norm.ppf(power)
    return max(1, math.ceil(((z_alpha * sigma0 + z_power * sigma1) / margin) ** 2 - 1e-9))


def tango_min_detectable_margin(
    discordance: float, n: int, *, alpha: float = 0.05, power: float = POWER
) -> float | None:
    """The smallest δ for which ``n`` pairs give :func:`tango_n_needed` <= n."""
    if n <= 0 or not (math.isfinite(discordance) and 0 <= discordance <= 1):
        return None
    z_alpha, z_power = stats.norm.ppf(1 - alpha), stats.norm.ppf(power)
    sigma1 = math.sqrt(discordance)

    def gap(margin: float) -> float:
        sigma0 = math.sqrt(_tango_null_variance(discordance, margin))
        return margin * math.sqrt(n) - (z_alpha * sigma0 + z_power * sigma1)

    if gap(0.999) < 0:
        return None
    # Nudged above the root, so that tango_n_needed at this margin is <= n, as promised.
    return float(optimize.brentq(gap, 1e-9, 0.999, xtol=1e-10)) + 1e-9


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given).

    A NaN p (a test that could not be run) stays NaN but still counts in the family size,
    as if its p were 1: leaving it out would make the others' adjustment less strict.
    """
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return p.copy()
    filled = np.where(np.isnan(p), 1.0, p)
    order = np.argsort(filled, kind="stable")
    adjusted = np.maximum.accumulate((m - np.arange(m)) * filled[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    out[np.isnan(p)] = np.nan
    return out


# --- Tango's score test ------------------------------------------------------------------


def _tango_z(b, c, n, delta0):
    """Tango's score statistic for H0: p_cand - p_base = delta0 (vectorised).

    b: pairs (cand=1, base=0); c: pairs (cand=0, base=1); n: pairs. With p10 = P(b-cell)
    and p01 = P(c-cell), Δ = p10 - p01 and Var(b - c) = n(p10 + p01 - Δ²). The variance is
    evaluated at the restricted MLE of p01 under Δ = delta0 (Tango 1998, Statistics in
    Medicine; the same estimator as Nam 1997):
    the larger root of 2n·q² + [-(b+c) + (2n - b + c)·delta0]·q - c·delta0·(1 - delta0).
    """
    b, c, n, d0 = (np.asarray(v, dtype=float) for v in (b, c, n, delta0))
    big_b = -(b + c) + (2 * n - b + c) * d0
    big_c = -c * d0 * (1 - d0)
    disc = np.maximum(big_b**2 - 8 * n * big_c, 0.0)
    q01 = (-big_b + np.sqrt(disc)) / (4 * n)
    var = n * (2 * q01 + d0 - d0**2)
    num = b - c - n * d0
    with np.errstate(divide="ignore", invalid="ignore"):
        z = num / np.sqrt(var)
    degenerate = ~(var > 0)
    if np.any(degenerate):
        z = np.where(degenerate, np.sign(num) * np.inf, z)
        z = np.where(degenerate & (num == 0), 0.0, z)
    return z


def tango_statistic(b, c, n, margin):
    """Tango's z for H0: p_cand - p_base = -margin; large z favours non-inferiority.

    Vectorised over arrays of discordant counts ``b`` (candidate-only passes), ``c``
    (baseline-only passes) and pair counts ``n``. With ``margin=0`` it is McNemar's score
    statistic (b - c)/sqrt(b + c).
    """
    return _tango_z(b, c, n, -np.asarray(margin, dtype=float))


def tango_interval(b: int, c: int, n: int, *, level: float = 0.90) -> tuple[float, float]:
    """Two-sided ``level`` interval of p_cand - p_base by inverting Tango's score test."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    lo_end, hi_end = -1 + 1e-12, 1 - 1e-12

    def root(target: float, default: float) -> float:
        f = lambda d0: float(_tango_z(b, c, n, d0)) - target  # noqa: E731
        f_lo, f_hi = f(lo_end), f(hi_end)
        if np.sign(f_lo) == np.sign(f_hi):
            return default
        return float(optimize.brentq(f, lo_end, hi_end, xtol=1e-10))

    # z decreases in delta0: the lower bound is where z = +z_crit, the upper where -z_crit.
    return root(z, -1.0), root(-z, 1.0)


@functools.lru_cache(maxsize=64)
def tango_exact_size(n: int, margin: float, alpha: float) -> float:
    """Tango's false-PASS probability at n pairs, worst case over the nuisance parameter.

    Sums the trinomial law of (b, c) over Tango's PASS region at the boundary
    p01 = p10 + δ, for p10 from 0 to (1 - δ)/2 on a grid dense near 0 (where the size
    fails: rare, one-directional discordance). Tables with no discordant pair are left
    out (the exact identical bound decides them). Above :data:`TANGO_EXACT_MAX_N` pairs:
    α (asymptotic).
    """
    if n > TANGO_EXACT_MAX_N or n < 1:
        return alpha
    counts = np.arange(n + 1)
    b = np.repeat(counts, n + 1 - counts)  # every table with b + c <= n
    c = np.concatenate([counts[: n + 1 - k] for k in counts])
    passes = (stats.norm.sf(tango_statistic(b, c, n, margin)) < alpha) & (b + c > 0)
    b, c = b[passes].astype(float), c[passes].astype(float)
    if len(b) == 0:
        return 0.0
    rest = n - b - c
    log_choose = gammaln(n + 1) - gammaln(b + 1) - gammaln(c + 1) - gammaln(rest + 1)
    top = (1 - margin) / 2
    p10 = np.r_[0.0, np.geomspace(1e-5, top - 1e-9, 40)][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = (
            log_choose
            + np.where(b > 0, b * np.log(p10), 0.0)
            + c * np.log(p10 + margin)
            + np.where(rest > 0, rest * np.log(1 - 2 * p10 - margin), 0.0)
        )
    return float(np.exp(log_p).sum(axis=1).max())


def tango_size_holds(n: int, margin: float, alpha: float) -> bool:
    """Whether Tango's exact size at (n, δ, α) stays within α + :data:`TANGO_SIZE_SLACK`."""
    return tango_exact_size(int(n), round(float(margin), 12), float(alpha)) <= (
        alpha + TANGO_SIZE_SLACK
    )


def exact_binomial_noninferiority(
    c: int, n: int, margin: float, *, alpha: float = 0.05
) -> tuple[float, float]:
    """(p, lower): exact test of non-inferiority from the baseline-only wins c alone.

    Under H0 (p_cand - p_base <= -δ) the chance that a pair is a baseline-only win is
    p01 >= δ + p10 >= δ, so P(C <= c) <= BinomCDF(c; n, δ): an exact p that holds for
    every nuisance value, conservative when the candidate also wins some pairs alone
    (their count is ignored). Its (1-α) lower bound of Δ is minus the Clopper-Pearson
    upper bound of p01 (Δ >= -p01), so p < α exactly when lower > -δ.
    """
    p = float(stats.binom.cdf(c, n, margin))
    p01_high = 1.0 if c >= n else float(stats.beta.ppf(1 - alpha, c + 1, n - c))
    return p, -p01_high


# --- identical differences ---------------------------------------------------------------


def identical_noninferiority(
    value: float, n: int, margin: float, *, alpha: float = 0.05
) -> tuple[float, float, float, float]:
    """Exact, distribution-free test when all ``n`` paired differences equal ``value``.

    Returns (p_value, p_worse, lower, upper), the bounds forming the (1-2α) interval.

    Why: the sd of identical differences is 0, so a t-interval has zero width and would
    "pass" any margin (e.g. a cached config replaying the baseline's outputs), while a
    floor on the sd would be arbitrary. Instead use what bounded scores imply: d lies in
    [-1, 1], so if E[d] <= -δ then P(d >= value) <= (1 - δ)/(1 + value) (from
    E[d] >= value·P - (1 - P)), and n independent cases all at ``value`` have probability at
    most ((1 - δ)/(1 + value))^n. That bound is the p-value; it is sharp (a loss of δ hidden
    as a fraction δ of cases dropping by 1). Mirror-wise P(all equal | E[d] >= -δ) <=
    ((1 + δ)/(1 - value))^n gives p_worse. For value = 0 and δ = 0.05, n >= 59 identical
    cases pass at α = 0.05 (Tango's asymptotic test would pass at 52); under the same
    argument the interval is [(1 + value)·α^(1/n) - 1, 1 - (1 - value)·α^(1/n)].
    With clustered cases pass the number of groups as ``n``.
    """
    if n <= 0:
        return math.nan, math.nan, math.nan, math.nan
    with np.errstate(divide="ignore"):
        r_pass = (1 - margin) / (1 + value) if value > -1 else math.inf
        r_worse = (1 + margin) / (1 - value) if value < 1 else math.inf
    p_value = min(1.0, r_pass**n)
    p_worse = min(1.0, r_worse**n)
    root = alpha ** (1 / n)
    return p_value, p_worse, (1 + value) * root - 1, 1 - (1 - value) * root


def _identical_planning(value: float, n: int, margin: float, alpha: float):
    """(n_needed, min_detectable_margin) for the exact identical-differences test."""
    ratio = (1 - margin) / (1 + value) if value > -1 else math.inf
    needed = math.floor(math.log(alpha) / math.log(ratio)) + 1 if 0 < ratio < 1 else None
    mdm = max(0.0, 1 - (1 + value) * alpha ** (1 / n)) if n > 0 else None
    return needed, mdm


def _planning(
    test: str,
    identical: bool,
    value: float,
    sd: float,
    n: int,
    n_units: int,
    margin: float,
    alpha: float,
) -> tuple[int | None, float | None]:
    """(n_needed, min_detectable_margin) at level ``alpha``, for the test that was run.

    ``value`` is the mean paired difference (the identical one when ``identical``). For
    Tango's test the discordance is recovered from the sd of the 0/±1 differences:
    Var(d) = ψ - Δ², so ψ = sd²·(n-1)/n + Δ². For the betting test the figures come from
    its own power (:func:`evalgate.stats.betting.power`) at the units' sd; with groups the
    units needed are scaled back to cases by the cases per group.
    """
    if identical:
        return _identical_planning(value, n_units, margin, alpha)
    # The exact binomial test stands in for Tango only on one-sided tables; the cases
    # it takes to settle the question are where Tango's test decides again.
    if test in ("tango", "exact-binomial") and n > 1 and math.isfinite(sd):
        psi = min(1.0, sd**2 * (n - 1) / n + value**2)
        return (
            tango_n_needed(psi, margin, alpha=alpha),
            tango_min_detectable_margin(psi, n, alpha=alpha),
        )
    if test in ("betting", "cluster-betting") and n_units > 1:
        units = betting.n_needed(sd, margin, alpha=alpha)
        needed = None if units is None else math.ceil(units * n / n_units)
        return needed, betting.min_detectable_margin(sd, n_units, alpha=alpha)
    return None, None


def replanned(test: NonInferiorityTest, alpha: float, value: float) -> NonInferiorityTest:
    """``test`` with its planning figures computed at another level ``alpha``.

    For a family of m comparisons under Holm, α/m is the level the first rejection must
    meet: planning at α would promise a PASS that the adjustment then withholds. ``value``
    is the paired difference when every one is identical (ignored otherwise).
    """
    needed, mdm = _planning(
        test.test, test.identical, value, test.sd, test.n, test.n_units, test.margin, alpha
    )
    return replace(test, n_needed=needed, min_detectable_margin=mdm)


def _all_identical(d: np.ndarray) -> bool:
    return len(d) > 0 and float(np.ptp(d)) <= 1e-12


# --- public tests --------------------------------------------------------------------------


def tango_noninferiority(
    cand: Sequence[float] | np.ndarray, base: Sequence[float] | np.ndarray, margin: float
) -> tuple[float, float]:
    """(z, one-sided p) of Tango's test of H0: p_cand - p_base <= -margin, on 0/1 pairs.

    When every pair has the same difference (e.g. identical outputs: no discordant pair)
    the exact bound of :func:`identical_noninferiority` gives p (and z is NaN).
    """
    cand = np.asarray(cand, dtype=float)
    base = np.asarray(base, dtype=float)
    if cand.shape != base.shape:
        raise ValueError("cand and base must be paired arrays of the same length")
    if not np.all(np.isin(cand, (0.0, 1.0)) & np.isin(base, (0.0, 1.0))):
        raise ValueError("Tango's test needs binary (0/1) outcomes")
    d = cand - base
    if len(d) == 0:
        return math.nan, math.nan
    if _all_identical(d):
        return math.nan, identical_noninferiority(float(d[0]), len(d), margin)[0]
    z = float(tango_statistic(int(np.sum(d > 0)), int(np.sum(d < 0)), len(d), margin))
    return z, float(stats.norm.sf(z))


def _t_parts(d: np.ndarray, groups: GroupLabels) -> tuple[float, float, int, int]:
    """(mean, se, df, units): the plain paired t, or cluster-robust (CR1) with groups."""
    units = make_units(groups, len(d))
    n, g = len(d), units.count
    mean = float(d.mean())
    if g < 2:
        return mean, math.nan, 0, g
    if units.clustered:
        resid = units.totals(d - mean)
        se = math.sqrt(g / (g - 1) * float(np.sum(resid**2))) / n
    else:
        se = float(d.std(ddof=1)) / math.sqrt(n)
    return mean, se, g - 1, g


def paired_t_noninferiority(
    d: Sequence[float] | np.ndarray, margin: float, groups: GroupLabels = None
) -> tuple[float, float]:
    """(t, one-sided p) of the paired t-test of H0: mean(d) <= -margin, i.e. on d + margin.

    Without groups this equals ``scipy.stats.ttest_1samp(d + margin, 0,
    alternative="greater")``; with groups the standard error is cluster-robust (CR1) on
    G-1 df. Identical differences use the exact bound of :func:`identical_noninferiority`
    (t is NaN) instead of a zero standard error.
    """
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan
    if _all_identical(d):
        n_units = make_units(groups, len(d)).count
        return math.nan, identical_noninferiority(float(d[0]), n_units, margin)[0]
    mean, se, df, _ = _t_parts(d, groups)
    if df < 1:
        return math.nan, math.nan
    t = (mean + margin) / se
    return float(t), float(stats.t.sf(t, df))


def _unit_differences(d: np.ndarray, groups: GroupLabels) -> tuple[np.ndarray, bool]:
    """The independent units' differences: each case's, or each group's mean."""
    units = make_units(groups, len(d))
    if not units.clustered:
        return d, False
    sizes = units.totals(np.ones(len(d)))
    return units.totals(d) / sizes, True


def betting_noninferiority(
    d: Sequence[float] | np.ndarray,
    margin: float,
    *,
    alpha: float = 0.05,
    groups: GroupLabels = None,
    seed: int = 0,
) -> tuple[float, float, float, float, float]:
    """(log capital at -δ, p, p_worse, lower, upper) of the betting test on the units.

    The units are the case differences, or with ``groups`` each group's mean difference
    (cases of a group are not independent). ``lower``/``upper`` are one-sided (1-α)
    bounds, so p < α exactly when lower > -δ and p_worse < α when upper < -δ.
    """
    values, _ = _unit_differences(np.asarray(d, dtype=float), groups)
    if not np.all((values >= -1 - 1e-9) & (values <= 1 + 1e-9)):
        raise ValueError("paired differences must lie in [-1, 1] (scores in [0, 1])")
    values = np.clip(values, -1.0, 1.0)  # rounding of case means, nothing more
    p, p_worse = betting.difference_p_values(values, margin, alpha=alpha, seed=seed)
    lower, upper = betting.difference_bounds(values, alpha=alpha, seed=seed)
    return math.log(1 / p) if p > 0 else math.inf, p, p_worse, lower, upper


def noninferiority_test(
    d: Sequence[float] | np.ndarray,
    *,
    margin: float,
    alpha: float = 0.05,
    binary: bool = False,
    groups: GroupLabels = None,
    seed: int = 0,
) -> NonInferiorityTest:
    """Non-inferiority of paired differences d = cand - base at margin δ and level α.

    Chooses the test by the kind of data (see the module docstring): the exact bound when
    every difference is identical; for binary scores with one unit per case Tango's score
    test, or the exact binomial test for a table with few discordant pairs or no
    candidate-only win where Tango's size fails; otherwise the betting test on case (or
    group) differences, valid at every n. ``seed`` fixes the betting test's random orders.
    """
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1) (got {margin!r})")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5) (got {alpha!r})")
    d = np.asarray(d, dtype=float)
    n = len(d)
    units = make_units(groups, n)
    nan = math.nan
    identical = _all_identical(d)
    b, c = int(np.sum(d > 0)), int(np.sum(d < 0))
    value = float(d.mean()) if n else nan
    if n == 0:
        test, statistic, p, p_worse, lower, upper, sd = "none", nan, nan, nan, nan, nan, nan
    elif identical:
        value = float(d[0])
        test, statistic, sd = "exact-identical", nan, 0.0
        p, p_worse, lower, upper = identical_noninferiority(value, units.count, margin, alpha=alpha)
    elif (
        binary
        and not units.clustered
        and (b + c < TANGO_MIN_DISCORDANT or b == 0)
        and not tango_size_holds(n, margin, alpha)
    ):
        # The exact test guards the PASS side (the size the gate promises); the FAIL side
        # keeps Tango's upper bound.
        test, statistic, sd = "exact-binomial", float(c), float(d.std(ddof=1))
        p, lower = exact_binomial_noninferiority(c, n, margin, alpha=alpha)
        p_worse = float(stats.norm.cdf(tango_statistic(b, c, n, margin)))
        upper = tango_interval(b, c, n, level=1 - 2 * alpha)[1]
    elif binary and not units.clustered:
        test, statistic = "tango", float(tango_statistic(b, c, n, margin))
        p, p_worse = float(stats.norm.sf(statistic)), float(stats.norm.cdf(statistic))
        lower, upper = tango_interval(b, c, n, level=1 - 2 * alpha)
        sd = float(d.std(ddof=1)) if n > 1 else nan
    else:
        test = "cluster-betting" if units.clustered else "betting"
        statistic, p, p_worse, lower, upper = betting_noninferiority(
            d, margin, alpha=alpha, groups=groups, seed=seed
        )
        unit_values, _ = _unit_differences(d, groups)
        value = float(unit_values.mean())
        sd = float(unit_values.std(ddof=1)) if len(unit_values) > 1 else nan
    needed, mdm = _planning(test, identical, value, sd, n, units.count, margin, alpha)
    return NonInferiorityTest(
        test=test,
        margin=margin,
        alpha=alpha,
        n=n,
        n_units=units.count,
        statistic=statistic,
        p_value=p,
        p_worse=p_worse,
        lower=lower,
        upper=upper,
        sd=sd,
        identical=identical,
        n_needed=needed,
        min_detectable_margin=mdm,
    )
