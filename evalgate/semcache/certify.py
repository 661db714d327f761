"""Certify a semantic cache's similarity threshold with Learn-then-Test, and report it.

The guarantee. For a fixed grid of thresholds, tested from the strictest (highest
similarity) down by fixed-sequence testing (:mod:`evalgate.stats.ltt`, the project's one
home of Learn-then-Test) on 0/1 losses (loss = the request was served a wrong cached
answer), every certified threshold has, with probability at least 1 - alpha, an expected
share of wrong hits among requests at most ``max_wrong_hit``. The most aggressive
certified threshold is exported. Nothing certified: the cache falls back to exact caching
(threshold 1.0) and the report says so.

Why requests are not the unit (the cause of the earlier failures). A replay is one
stream, and its wrong hits come in bursts: every hit is served the answer stored by one
earlier miss (its *entry*), so when that stored answer is bad (the call that stored it
failed, or a near-miss of another intent happened to arrive first and was stored), every
later request that lands on it is wrong together; and which request gets stored depends on
the arrival order. Write the stream's wrong hits as S = sum_i L_i: the L_i of requests
served by one entry are positively correlated, so Var(S) is far above the binomial
n r (1 - r) that a per-request binomial test assumes (measured in the seeded simulation:
2.0x to 4.2x at the thresholds it certifies), the binomial p-values are too small (they
rejected a clearly unsafe threshold in 16-27% of trials at alpha 0.1), and the certified
threshold broke the bound in 12-17% of 300 trials (``benchmarks/semantic_cache.py``, in
four settings; README "Semantic cache"). Cross-fitting by cluster does not change this:
the calibration folds are still streams.

The fix: calibrate on entries. For each candidate threshold, the hits one entry serves
form one *unit* (a miss cannot be a wrong hit); the p-value is the ``"clustered"`` one of
:func:`evalgate.stats.ltt.learn_then_test`: units independent, each wholly wrong with a
common probability q (the extreme of dependence inside a unit), tested exactly by
convolution, and never below the per-request binomial p-value. Its assumption, stated
plainly: whether a stored answer is bad for the requests it serves does not depend on how
many it serves, and units are independent given which entry served whom (which depends on
embeddings and order only, not on grades). The seeded simulation checks it, including
near-misses that are popular (a big unit wholly wrong): the bound failed in 0.3-3% of 300
trials at alpha 0.1 in every setting measured. The price is hit rate: the threshold is
stricter than the per-request test's, which was not valid. ``calibrate(units="requests")``
keeps the old test for that comparison only.

Honest figures (cross-fitting). The reported hit rate, wrong-hit rate and savings come
from requests whose threshold was calibrated without them: requests are split into k
folds **by cluster** (paraphrases of one intent; the tenant when the traffic has no
clusters), the threshold for fold f is certified on the other folds' requests replayed
as a stream of their own, and fold f's requests are then scored in a replay of the whole
stream at that threshold. Folding by cluster, not by request, matters: paraphrases of one
intent hit and miss together (they share answers and near-misses), so a split that put
some of them in calibration and others in the report would let calibration see the very
cases it is scored on, and the reported wrong-hit rate would be optimistic.

The guard. :func:`evaluate` certifies the cache with and without the near-miss guard,
each at alpha / 2 (Bonferroni, so whichever is picked keeps its guarantee at alpha), and
keeps the guard by a rule fixed before any data: **keep it unless the unguarded cache's
cross-fitted hit rate is strictly higher** (ties keep the guard, which also protects
near-misses that the average bound does not single out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalgate.semcache.replay import EXACT, Replay, ReplayRun

DEFAULT_GRID: tuple[float, ...] = tuple(round(1.0 - 0.005 * i, 3) for i in range(1, 101))
"""Candidate thresholds, strictest first: 0.995 down to 0.5 in steps of 0.005. Fixed
before any data, so a fine grid costs no alpha under fixed-sequence testing."""

FIXED_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.90, 0.95)
"""The fixed thresholds reported beside the certified one (what other caches default to)."""


@dataclass(frozen=True, slots=True)
class CacheFigures:
    """What one cache policy did on the traffic (one row of the comparison).

    Rates are over the requests scored (every request for fixed thresholds; every
    request, each from its held-out fold, for the certified cache); intervals are Wilson
    95% (``evalgate.stats.paired.proportion_ci``) as (estimate, low, high).
    """

    label: str
    requests: int
    hits: int
    hit_rate: float
    wrong_hits: int
    wrong_hit_rate: tuple[float, float, float]
    wrong_among_hits: tuple[float, float, float]
    cost_saved: float
    latency_saved_ms: float
    near_miss_wrong_rate: float | None = None  # among requests labelled near-miss

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class Certification:
    """The certified threshold on all the traffic, and the cross-fitted figures."""

    threshold: float  # exported: EXACT when nothing was certified
    certified: bool
    max_wrong_hit: float
    alpha: float
    guard: bool
    calibration_risk: float | None
    p_value: float | None
    fold_thresholds: tuple[float | None, ...]
    figures: CacheFigures
    fixed: tuple[CacheFigures, ...]
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        out["figures"] = self.figures.to_dict()
        out["fixed"] = [f.to_dict() for f in self.fixed]
        return out


CALIBRATION_UNITS = ("entries", "requests")
"""How calibration counts evidence: "entries" (the sound default: requests served by one
stored answer form one unit, see the module docstring) or "requests" (each request an
independent sample: the earlier, too-optimistic test, kept for the simulation's baseline)."""


def calibrate(
    replay: Replay,
    *,
    max_wrong_hit: float,
    alpha: float,
    only: np.ndarray | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    units: str = "entries",
) -> tuple[float | None, Any]:
    """The most aggressive certified threshold on the ``only`` requests (None: none).

    Replays stop at the first candidate whose p-value exceeds alpha: fixed-sequence
    testing never looks further, so neither do the (costly, grader-calling) replays.
    ``units`` (keyword, added after the first release; default "entries", the sound
    test): see :data:`CALIBRATION_UNITS`.
    """
    from evalgate.stats.ltt import learn_then_test

    if units not in CALIBRATION_UNITS:
        raise ValueError(f"units must be one of {', '.join(CALIBRATION_UNITS)} (got {units!r})")
    mask = np.ones(replay.n, dtype=bool) if only is None else np.asarray(only, dtype=bool)
    if not mask.any():
        return None, None

    rows: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for threshold in grid:
        run = replay.run(threshold, only=mask)
        rows.append(run.wrong_hit[mask])
        # A hit's unit is the entry that served it; a miss cannot be a wrong hit (-1).
        labels.append(run.served_from[mask])
        # The newest candidate alone: the walk stops at the first one not rejected.
        if not _p_value(rows[-1], labels[-1], max_wrong_hit, units) <= alpha:
            break
    result = None
    if rows:
        matrix = np.vstack(rows)
        result = learn_then_test(
            matrix,
            bound=max_wrong_hit,
            alpha=alpha,
            units=np.vstack(labels) if units == "entries" else None,
        )
    chosen = result.chosen if result is not None else None
    return (float(grid[chosen]) if chosen is not None else None), result


def p_value(run: ReplayRun, *, max_wrong_hit: float, units: str = "entries") -> float:
    """One threshold's p-value of "expected share of wrong hits > max_wrong_hit", alone.

    What :func:`calibrate` computes per candidate, for a replay of the whole stream; the
    simulation uses it to check that a clearly unsafe threshold is rejected at most alpha
    of the time.
    """
    if units not in CALIBRATION_UNITS:
        raise ValueError(f"units must be one of {', '.join(CALIBRATION_UNITS)} (got {units!r})")
    return _p_value(run.wrong_hit, run.served_from, max_wrong_hit, units)


def _p_value(losses: np.ndarray, served_from: np.ndarray, bound: float, units: str) -> float:
    from evalgate.stats.ltt import learn_then_test

    labels = served_from[None, :] if units == "entries" else None
    # alpha does not enter a p-value; any level in (0, 1) will do.
    return learn_then_test(losses[None, :], bound=bound, alpha=0.5, units=labels).p_values[0]


def fold_labels(groups: Sequence[Any], k: int, seed: int) -> np.ndarray:
    """Fold of each request: whole groups (clusters) assigned to folds at random."""
    labels = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(labels))
    fold_of = {labels[o]: i % k for i, o in enumerate(order)}
    return np.array([fold_of[g] for g in groups], dtype=int)


def figures(
    label: str,
    run_hit: np.ndarray,
    wrong: np.ndarray,
    cost_saved: np.ndarray,
    latency_saved: np.ndarray,
    near_miss: np.ndarray | None = None,
) -> CacheFigures:
    from evalgate.stats.paired import proportion_ci

    n, hits, n_wrong = len(run_hit), int(run_hit.sum()), int(wrong.sum())
    overall = proportion_ci(n_wrong, n)
    among = proportion_ci(n_wrong, hits)
    near = None
    if near_miss is not None and near_miss.any():
        near = float(wrong[near_miss].mean())
    return CacheFigures(
        label=label,
        requests=n,
        hits=hits,
        hit_rate=hits / n if n else float("nan"),
        wrong_hits=n_wrong,
        wrong_hit_rate=(overall.estimate, overall.low, overall.high),
        wrong_among_hits=(among.estimate, among.low, among.high),
        cost_saved=float(cost_saved.sum()),
        latency_saved_ms=float(latency_saved.sum()),
        near_miss_wrong_rate=near,
    )


def _run_figures(label: str, run: ReplayRun, near_miss: np.ndarray | None) -> CacheFigures:
    return figures(label, run.hit, run.wrong_hit, run.cost_saved, run.latency_saved_ms, near_miss)


def certify(
    replay: Replay,
    *,
    max_wrong_hit: float,
    alpha: float,
    groups: Sequence[Any] | None = None,
    near_miss: Sequence[bool] | None = None,
    k: int = 5,
    seed: int = 0,
    grid: Sequence[float] = DEFAULT_GRID,
    fixed: Sequence[float] = FIXED_THRESHOLDS,
) -> Certification:
    """Certify on all the traffic (the exported threshold) and cross-fit the figures.

    Args:
        groups: per request, its cluster (paraphrases of one intent); default: its key
            (the tenant); with fewer distinct groups than folds, folds by request (noted).
        near_miss: per request, whether it is a labelled near-miss (reported apart).
    """
    if not 0 < max_wrong_hit < 1 or not 0 < alpha < 1:
        raise ValueError(
            f"max_wrong_hit and alpha must be in (0, 1) (got {max_wrong_hit!r}, {alpha!r})"
        )
    if k < 2:
        raise ValueError(f"k must be at least 2 (got {k})")
    n = replay.n
    near = None if near_miss is None else np.asarray(near_miss, dtype=bool)
    notes: list[str] = []
    units = list(groups) if groups is not None else list(replay.keys)
    if len(set(units)) < k:
        # Too few clusters to hold one out: folds by request, and the report says so.
        notes.append(
            f"{len(set(units))} cluster(s) for {k} folds: cross-fitted by request, so "
            "paraphrases may straddle calibration and report (figures optimistic)"
        )
        units = list(range(n))
    folds = fold_labels(units, k, seed)
    hit = np.zeros(n, dtype=bool)
    wrong = np.zeros(n)
    cost = np.zeros(n)
    latency = np.zeros(n)
    fold_thresholds: list[float | None] = []
    for f in range(k):
        held = folds == f
        if not held.any():
            fold_thresholds.append(None)
            continue
        t, _ = calibrate(replay, max_wrong_hit=max_wrong_hit, alpha=alpha, only=~held, grid=grid)
        fold_thresholds.append(t)
        run = replay.run(EXACT if t is None else t)
        hit[held], wrong[held] = run.hit[held], run.wrong_hit[held]
        cost[held], latency[held] = run.cost_saved[held], run.latency_saved_ms[held]
    threshold, test = calibrate(replay, max_wrong_hit=max_wrong_hit, alpha=alpha, grid=grid)
    chosen = test.chosen if test is not None else None
    if threshold is None:
        notes.append(
            f"no threshold certified at max_wrong_hit={max_wrong_hit}, alpha={alpha} on "
            f"{n} requests: falls back to exact caching"
        )
    # A fold that holds no request (more folds than units) scored nothing: not counted.
    scored = [t for f, t in enumerate(fold_thresholds) if (folds == f).any()]
    uncertified = sum(t is None for t in scored)
    if uncertified:
        notes.append(
            f"{uncertified} of {len(scored)} folds holding requests certified nothing "
            "(exact caching there)"
        )
    label = "certified" if threshold is not None else "exact (nothing certified)"
    return Certification(
        threshold=EXACT if threshold is None else threshold,
        certified=threshold is not None,
        max_wrong_hit=float(max_wrong_hit),
        alpha=float(alpha),
        guard=replay.guard,
        calibration_risk=test.risks[chosen] if chosen is not None else None,
        p_value=test.p_values[chosen] if chosen is not None else None,
        fold_thresholds=tuple(fold_thresholds),
        figures=figures(label, hit, wrong, cost, latency, near),
        fixed=tuple(_run_figures(f"fixed {t:.2f}", replay.run(t), near) for t in fixed),
        notes=tuple(notes),
    )


@dataclass(frozen=True, slots=True)
class GuardChoice:
    """Both certifications (each at alpha / 2) and the one kept."""

    with_guard: Certification
    without_guard: Certification

    @property
    def chosen(self) -> Certification:
        """The rule fixed in advance: keep the guard unless unguarded hits strictly more."""
        if self.without_guard.figures.hit_rate > self.with_guard.figures.hit_rate:
            return self.without_guard
        return self.with_guard


def evaluate(
    plain: Replay, guarded: Replay, *, max_wrong_hit: float, alpha: float, **kwargs: Any
) -> GuardChoice:
    """Certify without and with the guard at alpha / 2 each; see :class:`GuardChoice`."""
    if plain.guard or not guarded.guard:
        raise ValueError("evaluate() takes the unguarded replay first, the guarded second")
    return GuardChoice(
        with_guard=certify(guarded, max_wrong_hit=max_wrong_hit, alpha=alpha / 2, **kwargs),
        without_guard=certify(plain, max_wrong_hit=max_wrong_hit, alpha=alpha / 2, **kwargs),
    )
