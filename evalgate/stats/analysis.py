"""One suite's per-item rows -> figures, paired comparisons, verdicts, frontier, gate.

:func:`analyze_suite` is pure and seeded: the same rows (in any order) and seed give the
same :class:`SuiteAnalysis`. Every random draw comes from a generator seeded by ``seed``
and the name of what it is for, so adding a config leaves the others' numbers unchanged.

Conventions (the design's "Statistics" section is the standard):

- a case's score is the mean over its repeats that completed (``error`` False); repeats
  are never counted as cases. A case counts as completed when at least one repeat did.
- a config's own figures (quality, pass rate, cost, latency) describe its completed
  calls; errored calls are counted beside them (``n_errors``, ``error_rate`` = errored
  calls / calls). A config's cost is unknown (None) only if a completed call has no price.
- in the paired comparison a candidate's errored call is a loss, never dropped: it
  scores 0, the lowest score (conservative imputation), before repeats are averaged.
  A case the baseline never completed cannot be paired and is left out of the comparison
  (imputing the baseline would flatter the candidate); ``n_baseline_missing`` counts them.
- the score kind is "binary" when every case score (after averaging repeats, all configs)
  is 0 or 1, else "continuous".
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from evalgate.stats._common import Record, Units, derive_seed, finite_or_none, make_units
from evalgate.stats.noninferiority import (
    NonInferiorityTest,
    NonInferiorityVerdict,
    holm,
    noninferiority_test,
    replanned,
)
from evalgate.stats.paired import (
    Interval,
    difference_test,
    identical_mean_ci,
    mean_ci,
    proportion_ci,
    ratio_ci,
    resample_blocks,
)
from evalgate.stats.pareto import frontier_probability, pareto_front
from evalgate.stats.quantiles import QuantileCI, quantile_ci, resampled_quantiles

MIN_GATE_CASES = 100
"""Below this many baseline-completed cases a suite reports but does not gate."""
ERROR_EXCESS = 0.05
"""A candidate whose error rate exceeds the baseline's by more than this is flagged."""
ERROR_MAX = 0.10
"""A candidate whose error rate exceeds this is flagged."""
FRONTIER_RESAMPLES = 2000
CI_LEVEL = 0.95
SLO_KEYS = ("p95_latency_ms", "cost_per_case")

_CI_ALPHA = 1 - CI_LEVEL


@dataclass(frozen=True, slots=True)
class ConfigStats(Record):
    """One config's figures in the suite.

    Attributes:
        config_id: the config.  is_baseline: whether it is the suite's baseline.
        n_cases: distinct cases run.  n_completed: cases with at least one completed call.
        n_calls: calls (items, repeats included).  n_errors: calls that errored.
        error_rate: n_errors / n_calls.
        quality: mean case score with its 95% interval: Wilson's for binary scores (one
            0/1 score per case), Clopper-Pearson on the groups when clustered binary
            scores all pass or all fail, else bootstrap over cases (resampling groups
            when clustered; t-interval from 300 units on). Never zero-width at 0 or N of N.
        pass_rate: share of completed calls that passed.
        cost_per_case: mean cost of a case (mean over its completed repeats) with its 95%
            interval; None when any completed call has an unknown price.
        total_cost_usd: cost of all completed calls (None when unknown).
        latency_p50, latency_p95, ttft_p50, ttft_p95: quantiles over completed calls with
            order-statistic 95% intervals (None when there is no value at all).
        cache_hits: completed calls served from the cache.  saved_usd: what they saved.
    """

    config_id: str
    is_baseline: bool
    n_cases: int
    n_completed: int
    n_calls: int
    n_errors: int
    error_rate: float
    quality: Interval
    pass_rate: float | None
    cost_per_case: Interval | None
    total_cost_usd: float | None
    latency_p50: QuantileCI | None
    latency_p95: QuantileCI | None
    ttft_p50: QuantileCI | None
    ttft_p95: QuantileCI | None
    cache_hits: int
    saved_usd: float


@dataclass(frozen=True, slots=True)
class Comparison(Record):
    """A candidate against the baseline, paired on cases both completed.

    Attributes:
        config_id, baseline: the two configs.
        n_paired: cases in the comparison: the baseline completed them and the candidate
            was run on them (its errored calls count as losses, see the module docstring).
        n_imputed: paired cases where some candidate call errored and scored 0.
        n_baseline_missing: cases the candidate ran but the baseline never completed
            (left out: nothing to pair with).
        delta: mean paired difference cand - base with the (1-2α) interval of the
            non-inferiority test (``method`` names it): the interval the verdict uses.
        sd_delta: sd of the paired differences (NaN under 2 pairs).
        zero_variance: every paired difference is identical (e.g. a cache replaying the
            baseline); the exact bound then gives the interval, never a zero width.
        p_value, test: two-sided difference test ("mcnemar-exact" for binary scores,
            "wilcoxon-zsplit" for continuous ones).
        discordant: (cases only the candidate passed, cases only the baseline passed) for
            binary scores, else None.
        savings_pct: cost saving vs the baseline in %, 100·(1 - Σcost_cand/Σcost_base)
            over paired cases both completed, with its 95% interval; None when a cost is unknown.
        latency_p95_ratio: candidate p95 latency / baseline p95 latency.
        noninferiority: the non-inferiority test before multiplicity adjustment.
        p_adjusted: its one-sided p, Holm-adjusted across the suite's candidates.
        error_flag: error rate above the baseline's by > 5 points, or above 10%.
        quality_verdict: the statistical verdict (after Holm).
        verdict: the final verdict: ``quality_verdict``, except FAIL when ``error_flag``
            (a config that errors more fails its users however good its answers are).
        reason: one line a human can read.
    """

    config_id: str
    baseline: str
    n_paired: int
    n_imputed: int
    n_baseline_missing: int
    delta: Interval
    sd_delta: float
    zero_variance: bool
    p_value: float
    test: str
    discordant: tuple[int, int] | None
    savings_pct: Interval | None
    latency_p95_ratio: float | None
    noninferiority: NonInferiorityTest
    p_adjusted: float
    error_flag: bool
    quality_verdict: NonInferiorityVerdict
    verdict: NonInferiorityVerdict
    reason: str


@dataclass(frozen=True, slots=True)
class Pareto(Record):
    """Pareto frontier over the observed means, and the bootstrap chance of being on it.

    Attributes:
        objectives: the objectives used, of "quality" (higher is better), "cost_per_case"
            and "latency_p95_ms" (lower is better). Cost is left out when no config has a
            known cost.
        frontier: configs on the observed frontier.
        probability: config -> share of joint resamples (same resampled cases for every
            config) in which it is on the frontier; None for a config that cannot be
            placed (no completed call, or unknown cost while cost is an objective).
        n_resamples: joint resamples drawn.
    """

    objectives: tuple[str, ...]
    frontier: tuple[str, ...]
    probability: dict[str, float | None]
    n_resamples: int


@dataclass(frozen=True, slots=True)
class Recommendation(Record):
    """The cheapest candidate that passes non-inferiority (after Holm) and meets the SLOs.

    Attributes:
        config_id: the recommended config.  verdict: its verdict (PASS).
        delta: mean paired quality difference with its 95% interval.
        n_paired: paired cases.  p_value: Holm-adjusted one-sided non-inferiority p.
        savings_pct: cost saving vs the baseline in % with its interval (None if unknown).
        cost_per_case, latency_p95_ms: its point figures.
        reason: one line a human can read.
    """

    config_id: str
    verdict: NonInferiorityVerdict
    delta: Interval
    n_paired: int
    p_value: float
    savings_pct: Interval | None
    cost_per_case: float | None
    latency_p95_ms: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class GateReason(Record):
    """Why one gated config blocks: its verdict and a line a human can read."""

    config_id: str
    verdict: NonInferiorityVerdict
    message: str


@dataclass(frozen=True, slots=True)
class GateOutcome(Record):
    """The PR gate's input: blocking reasons, when the suite gates at all.

    Attributes:
        gating: whether this suite gates (enough cases, or forced).
        note: why it does or does not gate.
        fail: gated configs whose verdict is FAIL (always block).
        inconclusive: gated configs whose verdict is INCONCLUSIVE (the caller decides;
            they block by default).
    """

    gating: bool
    note: str
    fail: tuple[GateReason, ...]
    inconclusive: tuple[GateReason, ...]

    def blocking(self, *, inconclusive_blocks: bool = True) -> tuple[GateReason, ...]:
        """The reasons that block: every FAIL, and every INCONCLUSIVE unless allowed.

        The one home of the gate's blocking rule (the run gate and the stored-baseline
        comparison both call it).
        """
        return self.fail + (self.inconclusive if inconclusive_blocks else ())


@dataclass(frozen=True, slots=True)
class SuiteAnalysis(Record):
    """Everything the statistics say about one suite. ``to_dict()`` is JSON-safe.

    Attributes:
        baseline, margin, alpha, seed, n_boot: the inputs that shaped the numbers.
        score_kind: "binary" or "continuous".
        clustered: some cases share a group (resampled together).
        n_cases: distinct cases in the suite.
        configs: config id -> :class:`ConfigStats` (baseline first).
        comparisons: candidate id -> :class:`Comparison`.
        pareto: the frontier.  recommendation: or None when no candidate qualifies.
        gate: blocking reasons.  notes: anything a reader should know (one line each).
    """

    baseline: str
    margin: float
    alpha: float
    seed: int
    n_boot: int
    score_kind: str
    clustered: bool
    n_cases: int
    configs: dict[str, ConfigStats]
    comparisons: dict[str, Comparison]
    pareto: Pareto
    recommendation: Recommendation | None
    gate: GateOutcome
    notes: tuple[str, ...]


# --- input ---------------------------------------------------------------------------------


INPUT_COLUMNS = (
    "case_id",
    "config_id",
    "group",
    "score",
    "passed",
    "error",
    "cost_usd",
    "saved_usd",
    "latency_ms",
    "ttft_ms",
    "cached",
)
"""Every column of the results frame that analysis reads (:func:`_normalise`); callers
build frames of these only, and others are ignored."""


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """The columns analysis needs (:data:`INPUT_COLUMNS`), with builtin-friendly dtypes
    and defaults."""
    missing = [c for c in ("case_id", "config_id", "score") if c not in df.columns]
    if missing:
        raise ValueError(
            f"results frame lacks column(s) {missing}; it has {sorted(map(str, df.columns))}"
        )
    n = len(df)

    def column(name: str, default: Any) -> pd.Series:
        if name in df.columns:
            return df[name].reset_index(drop=True)
        return pd.Series([default] * n, dtype=object)

    def flags(name: str) -> np.ndarray:
        return np.asarray(column(name, False).fillna(False).to_numpy(), dtype=bool)

    def numbers(name: str, default: float = math.nan) -> np.ndarray:
        return pd.to_numeric(column(name, default), errors="coerce").to_numpy(dtype=float)

    rows = pd.DataFrame(
        {
            "case_id": column("case_id", "").astype(str).to_numpy(dtype=object),
            "config_id": column("config_id", "").astype(str).to_numpy(dtype=object),
            "group": column("group", None).to_numpy(dtype=object),
            "score": numbers("score"),
            "passed": flags("passed"),
            "error": flags("error"),
            "cost_usd": numbers("cost_usd"),
            "saved_usd": np.nan_to_num(numbers("saved_usd", 0.0)),
            "latency_ms": numbers("latency_ms"),
            "ttft_ms": numbers("ttft_ms"),
            "cached": flags("cached"),
        }
    )
    scores = rows.loc[~rows["error"], "score"]
    bad = scores[~scores.between(0.0, 1.0)]
    if len(bad):
        first = rows.loc[bad.index[0]]
        raise ValueError(
            f"score must be a number in [0, 1] for every completed call; {len(bad)} are not "
            f"(first: case {first['case_id']!r}, config {first['config_id']!r}, "
            f"score {first['score']!r})"
        )
    return rows


def _case_units(rows: pd.DataFrame, cases: np.ndarray) -> tuple[Units, bool]:
    """Resampling units of the suite's cases; True if a case carries two different groups."""
    labelled = rows[rows["group"].notna()]
    per_case = labelled.groupby("case_id")["group"]
    conflict = bool((per_case.nunique() > 1).any())
    labels = per_case.first().reindex(cases)
    # Sorted group labels keep the unit numbering, hence the draws, independent of row order.
    labels = labels.astype(object).where(labels.notna(), None).to_numpy()
    present = [g for g in labels if g is not None]
    order = {g: i for i, g in enumerate(sorted(set(map(str, present))))}
    keyed = [None if g is None else order[str(g)] for g in labels]
    return make_units(keyed, len(cases)), conflict


def _case_means(codes: tuple[np.ndarray, np.ndarray], values: np.ndarray, shape: tuple[int, int]):
    """Mean of ``values`` per (case, config) cell; NaN for empty cells."""
    sums = np.zeros(shape)
    counts = np.zeros(shape)
    np.add.at(sums, codes, values)
    np.add.at(counts, codes, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


@dataclass(frozen=True)
class _Table:
    """A suite's rows as case x config matrices (column 0 is the baseline).

    Attributes:
        rows: the normalised rows.  order: config ids, baseline first.
        cases: sorted case ids.  units: resampling units of the cases.
        case_code, config_code: each row's case and config index.  ok: rows that completed.
        scores, costs: (cases, configs) means over completed repeats, NaN where none.
    """

    rows: pd.DataFrame
    order: list[str]
    cases: np.ndarray
    units: Units
    case_code: np.ndarray
    config_code: np.ndarray
    ok: np.ndarray
    scores: np.ndarray
    costs: np.ndarray
    imputed: np.ndarray
    errored: np.ndarray

    @classmethod
    def build(cls, rows: pd.DataFrame, order: list[str], cases: np.ndarray, units: Units):
        case_code = pd.Categorical(rows["case_id"], categories=cases).codes.astype(np.int64)
        config_code = pd.Categorical(rows["config_id"], categories=order).codes.astype(np.int64)
        ok = ~rows["error"].to_numpy()
        cells = (case_code[ok], config_code[ok])
        shape = (len(cases), len(order))
        scores = _case_means(cells, rows["score"].to_numpy()[ok], shape)
        costs = _case_means(cells, rows["cost_usd"].to_numpy()[ok], shape)
        every = (case_code, config_code)
        imputed = _case_means(every, np.where(ok, rows["score"].to_numpy(), 0.0), shape)
        errored = np.zeros(shape, dtype=bool)
        errored[case_code[~ok], config_code[~ok]] = True
        return cls(
            rows, order, cases, units, case_code, config_code, ok, scores, costs, imputed, errored
        )

    @property
    def completed(self) -> np.ndarray:
        return ~np.isnan(self.scores)

    @property
    def binary(self) -> bool:
        values = self.scores[self.completed]
        return bool(len(values)) and bool(np.all((values == 0) | (values == 1)))

    def groups(self, mask: np.ndarray) -> np.ndarray | None:
        """Unit labels of the cases in ``mask`` (None when no cases are clustered)."""
        return self.units.index[mask] if self.units.clustered else None

    def calls(self, j: int) -> pd.DataFrame:
        """The completed rows (calls) of config ``j``."""
        return self.rows[(self.config_code == j) & self.ok]

    def latencies(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Latency of each completed call of config ``j``, and the unit of its case."""
        good = (self.config_code == j) & self.ok
        lat = self.rows["latency_ms"].to_numpy()[good]
        known = ~np.isnan(lat)
        return lat[known], self.units.index[self.case_code[good][known]]


def _optional_quantile(values: np.ndarray, q: float) -> QuantileCI | None:
    return quantile_ci(values, q) if (~np.isnan(values)).any() else None


def _config_stats(t: _Table, j: int, *, seed: int, n_boot: int) -> ConfigStats:
    cid = t.order[j]
    mine = t.config_code == j
    calls = t.calls(j)
    mask = t.completed[:, j]
    cost_known = len(calls) > 0 and not bool(calls["cost_usd"].isna().any())
    n_calls = int(mine.sum())
    n_errors = n_calls - len(calls)
    lat = calls["latency_ms"].to_numpy()
    ttft = calls["ttft_ms"].to_numpy()

    def interval(matrix: np.ndarray, what: str) -> Interval:
        seed_ = derive_seed(seed, what, cid)
        return mean_ci(matrix[mask, j], t.groups(mask), alpha=_CI_ALPHA, n_boot=n_boot, seed=seed_)

    def quality() -> Interval:
        # Binary scores: an interval for a proportion, never zero-width at 0 or N of N.
        scores = t.scores[mask, j]
        binary = len(scores) > 0 and bool(np.all((scores == 0) | (scores == 1)))
        if binary and not t.units.clustered:
            return proportion_ci(int(scores.sum()), len(scores), alpha=_CI_ALPHA)
        if binary and float(np.ptp(scores)) == 0:
            n_units = make_units(t.groups(mask), len(scores)).count
            return replace(
                identical_mean_ci(float(scores[0]), n_units, alpha=_CI_ALPHA), n=len(scores)
            )
        return interval(t.scores, "quality")

    return ConfigStats(
        config_id=cid,
        is_baseline=j == 0,
        n_cases=int(np.unique(t.case_code[mine]).size),
        n_completed=int(mask.sum()),
        n_calls=n_calls,
        n_errors=n_errors,
        error_rate=n_errors / n_calls,
        quality=quality(),
        pass_rate=float(calls["passed"].mean()) if len(calls) else None,
        cost_per_case=interval(t.costs, "cost") if cost_known else None,
        total_cost_usd=float(calls["cost_usd"].sum()) if cost_known else None,
        latency_p50=_optional_quantile(lat, 0.50),
        latency_p95=_optional_quantile(lat, 0.95),
        ttft_p50=_optional_quantile(ttft, 0.50),
        ttft_p95=_optional_quantile(ttft, 0.95),
        cache_hits=int(calls["cached"].sum()),
        saved_usd=float(calls["saved_usd"].sum()),
    )


def config_stats(df: pd.DataFrame, *, seed: int = 0, n_boot: int = 2000) -> ConfigStats:
    """:class:`ConfigStats` of one config's rows alone (all rows share one config_id).

    The same function :func:`analyze_suite` uses per config, so the report's per-config
    figures agree with the statistics' when a suite has no analysis (e.g. its baseline
    was not run). Raises ValueError as :func:`analyze_suite` does on bad rows.
    """
    rows = _normalise(df)
    order = list(dict.fromkeys(rows["config_id"]))
    if len(order) != 1:
        raise ValueError(f"config_stats needs the rows of one config (got {order})")
    cases = np.sort(rows["case_id"].unique())
    units, _ = _case_units(rows, cases)
    table = _Table.build(rows, order, cases, units)
    return _config_stats(table, 0, seed=seed, n_boot=n_boot)


def _compare(
    t: _Table,
    j: int,
    configs: dict[str, ConfigStats],
    *,
    margin: float,
    alpha: float,
    seed: int,
    n_boot: int,
) -> Comparison:
    """Candidate ``j`` against the baseline; the verdict fields wait for Holm (_decide)."""
    cid, baseline = t.order[j], t.order[0]
    cand, base = configs[cid], configs[baseline]
    ran = ~np.isnan(t.imputed[:, j])
    pair = t.completed[:, 0] & ran
    d = t.imputed[pair, j] - t.scores[pair, 0]
    groups = t.groups(pair)
    # An errored repeat scored 0 can make a binary suite's case mean 0.5: not a 0/1 pair.
    binary = t.binary and bool(np.all(np.isin(d, (-1.0, 0.0, 1.0))))
    p_value, test = difference_test(d, binary=binary)
    savings = None
    if cand.cost_per_case is not None and base.cost_per_case is not None:
        costed = pair & t.completed[:, j]  # an errored case has no cost to compare
        ratio = ratio_ci(
            t.costs[costed, j],
            t.costs[costed, 0],
            t.groups(costed),
            alpha=_CI_ALPHA,
            n_boot=n_boot,
            seed=derive_seed(seed, "savings", cid),
        )
        savings = replace(  # saving = 1 - ratio, so the bounds swap
            ratio,
            estimate=100 * (1 - ratio.estimate),
            low=100 * (1 - ratio.high),
            high=100 * (1 - ratio.low),
        )
    p95_cand, p95_base = cand.latency_p95, base.latency_p95
    lat_ratio = None
    if p95_cand and p95_base and p95_cand.estimate is not None and p95_base.estimate:
        lat_ratio = finite_or_none(p95_cand.estimate / p95_base.estimate)
    ni = noninferiority_test(
        d,
        margin=margin,
        alpha=alpha,
        binary=binary,
        groups=groups,
        seed=derive_seed(seed, "noninferiority", cid),
    )
    return Comparison(
        config_id=cid,
        baseline=baseline,
        n_paired=int(pair.sum()),
        n_imputed=int((pair & t.errored[:, j]).sum()),
        n_baseline_missing=int((ran & ~t.completed[:, 0]).sum()),
        delta=Interval(
            estimate=float(d.mean()) if len(d) else math.nan,
            low=ni.lower,
            high=ni.upper,
            level=1 - 2 * alpha,
            method=ni.test,
            n=ni.n,
            n_units=ni.n_units,
        ),
        sd_delta=float(d.std(ddof=1)) if len(d) > 1 else math.nan,
        zero_variance=ni.identical,
        p_value=p_value,
        test=test,
        discordant=(int(np.sum(d > 0)), int(np.sum(d < 0))) if binary else None,
        savings_pct=savings,
        latency_p95_ratio=lat_ratio,
        noninferiority=ni,
        p_adjusted=math.nan,
        error_flag=(
            cand.error_rate > base.error_rate + ERROR_EXCESS or cand.error_rate > ERROR_MAX
        ),
        quality_verdict=NonInferiorityVerdict.INCONCLUSIVE,
        verdict=NonInferiorityVerdict.INCONCLUSIVE,
        reason="",
    )


def _decide(
    comp: Comparison, p_adjusted: float, configs: dict[str, ConfigStats], family: int
) -> Comparison:
    """The verdicts once the Holm-adjusted p is known, and the line that explains them.

    The planning figures (cases needed, smallest demonstrable margin) are recomputed at
    α/family, the level Holm's first step needs, so that "about N cases" is a promise
    the adjustment keeps.
    """
    quality = comp.noninferiority.verdict(p_adjusted=p_adjusted)
    ni = comp.noninferiority
    if family > 1:
        ni = replanned(ni, ni.alpha / family, comp.delta.estimate)
    decided = replace(
        comp,
        noninferiority=ni,
        p_adjusted=p_adjusted,
        quality_verdict=quality,
        verdict=NonInferiorityVerdict.FAIL if comp.error_flag else quality,
    )
    return replace(decided, reason=_reason(decided, configs, family))


# --- formatting ------------------------------------------------------------------------------


def _f(value: float | None, spec: str = "+.3f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _reason(c: Comparison, configs: dict[str, ConfigStats], family: int = 1) -> str:
    ni = c.noninferiority
    margin, alpha = ni.margin, ni.alpha
    level = f"{1 - 2 * alpha:.0%}"
    facts = f"Δ={_f(c.delta.estimate)}, {ni.test}, N={ni.n}"
    if c.n_imputed:
        facts += f", {c.n_imputed} case(s) with a candidate error scored 0"
    if c.error_flag:
        cand, base = configs[c.config_id].error_rate, configs[c.baseline].error_rate
        return (
            f"FAIL: error rate {cand:.1%} vs baseline {base:.1%} (flagged above "
            f"+{ERROR_EXCESS:.0%} or {ERROR_MAX:.0%}); quality {c.quality_verdict} ({facts})"
        )
    if ni.n == 0:
        return "INCONCLUSIVE: no case completed by both the candidate and the baseline"
    if c.quality_verdict is NonInferiorityVerdict.PASS:
        return (
            f"PASS: {level} lower bound {_f(ni.lower)} > -δ={-margin:.3f} "
            f"({facts}, Holm p={_f(c.p_adjusted, '.3g')})"
        )
    if c.quality_verdict is NonInferiorityVerdict.FAIL:
        return f"FAIL: {level} upper bound {_f(ni.upper)} < -δ={-margin:.3f} ({facts})"
    extra = ""
    if ni.p_value < alpha:
        extra = f"; passes unadjusted (p={_f(ni.p_value, '.3g')}) but not after Holm"
    need = f"about {ni.n_needed} cases" if ni.n_needed else "more cases"
    holm_note = f" after Holm over {family} comparisons" if family > 1 else ""
    return (
        f"INCONCLUSIVE: {level} CI [{_f(ni.lower)}, {_f(ni.upper)}] includes "
        f"-δ={-margin:.3f} ({facts}){extra}; {need} give 80% power if the true Δ is 0"
        f"{holm_note}; this N can show δ >= {_f(ni.min_detectable_margin, '.3f')}"
    )


# --- the analysis ----------------------------------------------------------------------------


def analyze_suite(
    df: pd.DataFrame,
    *,
    baseline: str,
    margin: float = 0.05,
    alpha: float = 0.05,
    gated: Collection[str] | None = None,
    force_gate: bool = False,
    slo: Mapping[str, float] | None = None,
    seed: int = 0,
    n_boot: int = 10_000,
    n_frontier_boot: int = FRONTIER_RESAMPLES,
    offline: Collection[str] = (),
) -> SuiteAnalysis:
    """Analyse one suite's per-item rows against its baseline config.

    Args:
        df: one row per item (call) with columns case_id, config_id, repeat, group, score,
            passed, error, cost_usd, saved_usd, latency_ms, ttft_ms, cached (only case_id,
            config_id and score are required; the rest default to "absent").
        baseline: the baseline config id.
        margin: non-inferiority margin δ on the score scale.  alpha: one-sided level α.
        gated: config ids whose verdict can block (None: every candidate).
        force_gate: gate even under 100 cases.
        slo: optional limits a recommendation must meet: ``p95_latency_ms``,
            ``cost_per_case``.
        seed: seeds every resampling.  n_boot: bootstrap resamples for intervals.
        n_frontier_boot: joint resamples for the frontier probability.
        offline: batch configs: their latency is a batch's turnaround, not a per-call
            figure, so it is left out of every latency statistic (no p50/p95, not placed
            on the latency-aware frontier, never preferred for it); quality and cost count.

    Raises:
        ValueError: on a missing column, a score outside [0, 1], an absent baseline, or
            parameters out of range (naming what was expected and what arrived).
    """
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1) (got {margin!r})")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5) (got {alpha!r})")
    if not (isinstance(seed, int | np.integer) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    slo = dict(slo or {})
    unknown = sorted(set(slo) - set(SLO_KEYS))
    if unknown:
        raise ValueError(f"slo keys must be among {list(SLO_KEYS)} (got {unknown})")

    rows = _normalise(df)
    if offline:
        batch_rows = rows["config_id"].isin(list(offline))
        rows = rows.copy()  # the caller's frame keeps the turnaround (reported apart)
        rows.loc[batch_rows, ["latency_ms", "ttft_ms"]] = np.nan
    present = list(dict.fromkeys(rows["config_id"]))
    if baseline not in present:
        raise ValueError(
            f"baseline {baseline!r} has no results in this suite (configs: {sorted(present)})"
        )
    order = [baseline] + [c for c in present if c != baseline]
    notes: list[str] = []
    cases = np.sort(rows["case_id"].unique())
    units, conflict = _case_units(rows, cases)
    if conflict:
        notes.append("some cases carry different groups in different rows; the first is used")
    table = _Table.build(rows, order, cases, units)

    configs = {
        cid: _config_stats(table, j, seed=seed, n_boot=n_boot) for j, cid in enumerate(order)
    }
    n_baseline = configs[baseline].n_completed
    if n_baseline == 0:
        notes.append(f"the baseline {baseline!r} completed no case: nothing can be compared")
    preliminary = [
        _compare(table, j, configs, margin=margin, alpha=alpha, seed=seed, n_boot=n_boot)
        for j in range(1, len(order))
    ]
    adjusted = holm([c.noninferiority.p_value for c in preliminary])
    comparisons = {
        c.config_id: _decide(c, float(p), configs, len(preliminary))
        for c, p in zip(preliminary, adjusted, strict=True)
    }
    notes += [
        f"{c.config_id}: {c.n_baseline_missing} case(s) left out of the comparison: the "
        "baseline errored on every call of them"
        for c in comparisons.values()
        if c.n_baseline_missing
    ]
    notes += [
        f"{c.config_id}: every paired difference is identical ({_f(c.delta.estimate)}); its "
        "verdict uses the exact bound for identical outcomes, not the zero-width interval"
        for c in comparisons.values()
        if c.zero_variance
    ]

    recommendation, why = _recommend(configs, comparisons, slo, margin, baseline)
    if recommendation is None:
        notes.append(f"no recommendation: {why} at δ={margin} (Holm-adjusted α={alpha})")
    gate = _gate(comparisons, baseline, order[1:], gated, force_gate, n_baseline)
    if not gate.gating:
        notes.append(gate.note)
    return SuiteAnalysis(
        baseline=baseline,
        margin=margin,
        alpha=alpha,
        seed=seed,
        n_boot=n_boot,
        score_kind="binary" if table.binary else "continuous",
        clustered=units.clustered,
        n_cases=len(cases),
        configs=configs,
        comparisons=comparisons,
        pareto=_pareto(table, configs, seed, n_frontier_boot),
        recommendation=recommendation,
        gate=gate,
        notes=tuple(notes),
    )


def _gate(
    comparisons: dict[str, Comparison],
    baseline: str,
    candidates: list[str],
    gated: Collection[str] | None,
    force_gate: bool,
    n_baseline: int,
) -> GateOutcome:
    gating = force_gate or n_baseline >= MIN_GATE_CASES
    if force_gate:
        note = "gating (forced)"
    elif gating:
        note = f"gating: the baseline completed {n_baseline} cases (>= {MIN_GATE_CASES})"
    else:
        note = (
            f"reports but does not gate: the baseline completed {n_baseline} cases "
            f"(< {MIN_GATE_CASES}); force the gate to block anyway"
        )
    fail: list[GateReason] = []
    inconclusive: list[GateReason] = []
    if gating:
        targets = candidates if gated is None else list(dict.fromkeys(gated))
        for cid in targets:
            if cid == baseline:
                continue
            comp = comparisons.get(cid)
            if comp is None:
                message = f"{cid}: no results in this suite"
                inconclusive.append(GateReason(cid, NonInferiorityVerdict.INCONCLUSIVE, message))
            elif comp.verdict is NonInferiorityVerdict.FAIL:
                fail.append(GateReason(cid, comp.verdict, f"{cid}: {comp.reason}"))
            elif comp.verdict is NonInferiorityVerdict.INCONCLUSIVE:
                inconclusive.append(GateReason(cid, comp.verdict, f"{cid}: {comp.reason}"))
    return GateOutcome(gating, note, tuple(fail), tuple(inconclusive))


def _recommend(
    configs: dict[str, ConfigStats],
    comparisons: dict[str, Comparison],
    slo: dict[str, float],
    margin: float,
    baseline: str,
) -> tuple[Recommendation | None, str]:
    """The recommendation, or None and why there is none."""

    def p95(cid: str) -> float | None:
        q = configs[cid].latency_p95
        return q.estimate if q is not None else None

    def cost(cid: str) -> float | None:
        c = configs[cid].cost_per_case
        return c.estimate if c is not None else None

    def within(value: float | None, key: str) -> bool:
        return key not in slo or (value is not None and value <= slo[key])

    def meets(cid: str) -> bool:
        return within(p95(cid), "p95_latency_ms") and within(cost(cid), "cost_per_case")

    def faster(cid: str) -> bool | None:
        # Clearly faster: the candidate's p95 interval lies below the baseline's. Point
        # estimates alone would make an equally fast twin "faster" in half the runs by
        # latency noise, and the recommendation would flip between runs of the same code.
        mine, theirs = configs[cid].latency_p95, configs[baseline].latency_p95
        if mine is None or theirs is None or mine.estimate is None or theirs.estimate is None:
            return None
        if mine.high is not None and theirs.low is not None:
            return mine.high < theirs.low
        return mine.estimate < theirs.estimate

    def gains(cid: str) -> bool:
        # A candidate neither cheaper nor faster than the baseline pulls no lever (a
        # router that certified nothing and routes every case to the baseline's config,
        # a cascade that escalates every case): shipping it gains nothing.
        mine, theirs = cost(cid), cost(baseline)
        cheaper = None if mine is None or theirs is None else mine < theirs
        known = [gain for gain in (cheaper, faster(cid)) if gain is not None]
        return not known or any(known)

    passing = [cid for cid, c in comparisons.items() if c.verdict is NonInferiorityVerdict.PASS]
    if not passing:
        return None, "no candidate passes non-inferiority"
    if not any(meets(cid) for cid in passing):
        return None, "no candidate that passes non-inferiority meets the SLOs"
    qualifying = [cid for cid in passing if meets(cid) and gains(cid)]
    if not qualifying:
        return None, (
            f"no candidate passing non-inferiority is cheaper or faster than {baseline!r}"
        )
    inf = math.inf
    best = min(
        qualifying,
        key=lambda c: (
            cost(c) if cost(c) is not None else inf,
            p95(c) if p95(c) is not None else inf,
            c,
        ),
    )
    comp = comparisons[best]
    saving = comp.savings_pct
    saving_text = (
        f"saves {saving.estimate:.1f}% cost [{_f(saving.low, '.1f')}, {_f(saving.high, '.1f')}]"
        if saving is not None
        else "cost saving unknown"
    )
    slo_text = " and meeting the SLOs" if slo else ""
    reason = (
        f"{best}: cheapest of {len(qualifying)} candidate(s) passing non-inferiority at "
        f"δ={margin}{slo_text} vs {baseline}; Δ={_f(comp.delta.estimate)} "
        f"[{_f(comp.delta.low)}, {_f(comp.delta.high)}], N={comp.n_paired}, "
        f"Holm p={_f(comp.p_adjusted, '.3g')}, {saving_text}"
    )
    recommendation = Recommendation(
        config_id=best,
        verdict=comp.verdict,
        delta=comp.delta,
        n_paired=comp.n_paired,
        p_value=comp.p_adjusted,
        savings_pct=saving,
        cost_per_case=cost(best),
        latency_p95_ms=p95(best),
        reason=reason,
    )
    return recommendation, ""


def _pareto(t: _Table, configs: dict[str, ConfigStats], seed: int, n_resamples: int) -> Pareto:
    """Frontier over (quality, cost, p95) and each config's chance of being on it.

    A config with no completed call, or with an unknown cost while some config's cost is
    known, is not placed (its probability is None); with no known cost at all the
    frontier is over quality and p95 only.
    """
    use_cost = any(c.cost_per_case is not None for c in configs.values())
    objectives: tuple[str, ...] = ("quality", "cost_per_case", "latency_p95_ms")
    maximize: tuple[bool, ...] = (True, False, False)
    if not use_cost:
        objectives, maximize = ("quality", "latency_p95_ms"), (True, False)

    def observed(c: ConfigStats) -> list[float] | None:
        if c.latency_p95 is None or c.latency_p95.estimate is None or c.n_completed == 0:
            return None
        if not use_cost:
            return [c.quality.estimate, c.latency_p95.estimate]
        if c.cost_per_case is None:
            return None
        return [c.quality.estimate, c.cost_per_case.estimate, c.latency_p95.estimate]

    points = {j: observed(configs[cid]) for j, cid in enumerate(t.order)}
    placed = [j for j, point in points.items() if point is not None]
    probability: dict[str, float | None] = {cid: None for cid in t.order}
    if not placed:
        return Pareto(objectives, (), probability, 0)
    front = pareto_front(np.array([points[j] for j in placed]), maximize)
    probs = _joint_frontier_probability(
        t.scores[:, placed],
        t.costs[:, placed] if use_cost else None,
        t.units,
        [t.latencies(j) for j in placed],
        maximize,
        np.random.default_rng(derive_seed(seed, "frontier")),
        n_resamples,
    )
    for j, p in zip(placed, probs, strict=True):
        probability[t.order[j]] = float(p)
    frontier = tuple(t.order[j] for j, on in zip(placed, front, strict=True) if on)
    return Pareto(objectives, frontier, probability, n_resamples)


def _joint_frontier_probability(
    scores: np.ndarray,
    costs: np.ndarray | None,
    units: Units,
    latencies: list[tuple[np.ndarray, np.ndarray]],
    maximize: tuple[bool, ...],
    rng: np.random.Generator,
    n_resamples: int,
    q: float = 0.95,
) -> np.ndarray:
    """Frontier probability from a joint bootstrap of cases (or groups).

    Every config sees the same resampled units in a resample, so the configs' correlation
    (same hard cases) is kept. A resample's quality and cost are means over the config's
    completed cases drawn; its p95 is the weighted (inverted-CDF) 95th percentile of the
    latencies of the calls of the drawn cases.
    """
    if n_resamples <= 0:
        return np.full(scores.shape[1], math.nan)

    # Per-unit sums and counts of every config's case scores (and costs), side by side,
    # so one matrix product per block gives every config's resampled means.
    blocks = [scores] if costs is None else [scores, costs]
    seen = [~np.isnan(m) for m in blocks]
    sums = np.hstack([np.where(s, m, 0.0) for m, s in zip(blocks, seen, strict=True)])
    unit_sums = units.totals(np.hstack([sums, *(s.astype(float) for s in seen)]))
    k = sums.shape[1]
    on_front = np.zeros(scores.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        for counts in resample_blocks(units.count, n_resamples, rng):
            resampled = counts @ unit_sums
            means = resampled[:, :k] / resampled[:, k:]
            columns = np.split(means, len(blocks), axis=1)
            columns.append(
                np.column_stack(
                    [resampled_quantiles(lat, lat_units, counts, q) for lat, lat_units in latencies]
                )
            )
            samples = np.stack(columns, axis=-1)
            on_front += frontier_probability(samples, maximize) * len(counts)
    return on_front / n_resamples
