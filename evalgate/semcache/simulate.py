"""Seeded simulation of the certified semantic cache where the truth is known.

One population of intents is drawn (seeded); each stream draws ``n`` requests from it
i.i.d. (a popular intent recurs: Zipf-like weights, exponent ``zipf``). Intents have
random unit centres in ``dim`` dimensions; a share of them has a *sibling*, a different
intent whose centre is close (a near-miss: a number changed, a negation added). A request
is a paraphrase of its intent: its embedding is the centre plus Gaussian noise,
renormalised. A fresh call passes with probability ``p_pass``; the answer stored for j
passes i's graders exactly when i and j share an intent and j's own answer passed.

Each trial draws a stream, certifies a threshold on it (:func:`calibrate`, no
cross-fitting: this checks the guarantee itself) and looks up the threshold's true risk:
the expected share of wrong hits on a fresh stream of the same size, estimated once per
threshold on ``fresh`` independent streams (its Monte Carlo standard error is reported,
so a threshold whose risk sits within noise of the bound is visible). The share of trials
where the true risk exceeds ``max_wrong_hit`` estimates how often the bound fails (target:
at most alpha), with its Monte Carlo standard error over the trials.

:func:`compare` runs several calibration tests on the *same* streams and truth (the
per-request binomial test as the baseline, the per-entry test the certifier uses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalgate.semcache.certify import calibrate, p_value
from evalgate.semcache.replay import Replay

SIM_GRID: tuple[float, ...] = tuple(round(0.99 - 0.01 * i, 2) for i in range(50))


@dataclass(frozen=True, slots=True)
class CacheSimulation:
    trials: int
    violation_rate: float  # share of trials whose certified threshold's true risk > bound
    none_certified: int
    mean_threshold: float  # over trials that certified one
    mean_true_risk: float  # of the certified thresholds (0 for exact caching)
    mean_hit_rate: float  # of the certified thresholds, on fresh streams
    fixed_080_risk: float  # the true risk of a fixed 0.80 threshold, for contrast
    units: str = "entries"  # the calibration test (certify.CALIBRATION_UNITS)
    violations: int = 0
    violation_se: float = 0.0  # Monte Carlo standard error of violation_rate
    truth_se: float = 0.0  # largest standard error of a true risk looked up
    near_bound: int = 0  # trials whose chosen risk is within 2 truth_se of the bound
    # Var(wrong hits per stream) / the binomial n r (1 - r), at the threshold this test
    # chose most often, over the fresh streams: how far requests are from independent.
    dispersion: float = float("nan")
    # The truth is an estimate: violations certain (risk - 2 se > bound) and possible
    # (risk + 2 se > bound), as shares of the trials.
    violation_rate_sure: float = 0.0
    violation_rate_possible: float = 0.0
    # The p-value alone, at the strictest grid threshold that is clearly unsafe (risk -
    # 2 se > bound): the share of trials rejecting it must be at most alpha for a valid
    # test, whatever the grid and fixed-sequence testing do around it.
    probe_threshold: float = float("nan")
    probe_risk: float = float("nan")
    probe_rejection: float = float("nan")


@dataclass(frozen=True, slots=True)
class Population:
    """The traffic's source: intent centres (siblings included) and their popularity."""

    centres: np.ndarray
    weights: np.ndarray


def population(
    rng: np.random.Generator,
    dim: int,
    intents: int,
    sibling_share: float,
    zipf: float = 0.8,
    popular_siblings: bool = False,
) -> Population:
    """Intents, then their siblings, with Zipf weights in that order (siblings are rare),
    or, with ``popular_siblings``, in a random order (a sibling may be the popular one, so
    a near-miss stored first can serve a popular intent's many paraphrases)."""
    centres = rng.standard_normal((intents, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    has_sibling = rng.random(intents) < sibling_share
    siblings = centres[has_sibling] + 0.12 * rng.standard_normal((int(has_sibling.sum()), dim))
    siblings /= np.linalg.norm(siblings, axis=1, keepdims=True)
    all_centres = np.vstack([centres, siblings])
    weights = 1.0 / np.arange(1, len(all_centres) + 1) ** zipf
    if popular_siblings:
        weights = rng.permutation(weights)
    return Population(all_centres, weights / weights.sum())


def stream(rng: np.random.Generator, source: Population, n: int, p_pass: float) -> Replay:
    """``n`` requests drawn i.i.d. from ``source``, as a replayable stream."""
    intent = rng.choice(len(source.centres), size=n, p=source.weights)
    vectors = source.centres[intent] + 0.1 * rng.standard_normal((n, source.centres.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    fresh = rng.random(n) < p_pass

    def grade(i: int, j: int) -> bool:
        return bool(intent[i] == intent[j] and fresh[j])

    # Texts are distinct (paraphrases), so only similarity decides.
    return Replay(["k"] * n, [str(i) for i in range(n)], vectors, list(fresh), grade)


def compare(
    *,
    units: Sequence[str] = ("requests", "entries"),
    n: int = 300,
    dim: int = 16,
    intents: int = 120,
    sibling_share: float = 0.3,
    zipf: float = 0.8,
    popular_siblings: bool = False,
    p_pass: float = 0.9,
    max_wrong_hit: float = 0.05,
    alpha: float = 0.1,
    trials: int = 100,
    fresh: int = 200,
    seed: int = 0,
) -> tuple[CacheSimulation, ...]:
    """One :class:`CacheSimulation` per calibration test, all on the same streams."""
    rng = np.random.default_rng(seed)
    source = population(rng, dim, intents, sibling_share, zipf, popular_siblings)
    fresh_streams = [stream(rng, source, n, p_pass) for _ in range(fresh)]
    truth: dict[float, tuple[float, float, float, float]] = {}

    def true_risk(threshold: float) -> tuple[float, float, float, float]:
        """(risk, its standard error, hit rate, dispersion) on the fresh streams."""
        if threshold not in truth:
            runs = [s.run(threshold) for s in fresh_streams]
            shares = np.array([r.wrong_hit.mean() for r in runs])
            risk = float(shares.mean())
            spread = float(shares.std(ddof=1)) if len(shares) > 1 else 0.0
            binomial_sd = math.sqrt(risk * (1 - risk) / n)
            truth[threshold] = (
                risk,
                spread / math.sqrt(len(shares)),
                float(np.mean([r.hit.mean() for r in runs])),
                (spread / binomial_sd) ** 2 if binomial_sd > 0 else float("nan"),
            )
        return truth[threshold]

    probe = next(
        (t for t in SIM_GRID if true_risk(t)[0] - 2 * true_risk(t)[1] > max_wrong_hit), None
    )
    chosen: dict[str, list[float | None]] = {u: [] for u in units}
    rejected = dict.fromkeys(units, 0)
    for _ in range(trials):
        drawn = stream(rng, source, n, p_pass)
        probe_run = drawn.run(probe) if probe is not None else None
        for u in units:
            if probe_run is not None:
                p = p_value(probe_run, max_wrong_hit=max_wrong_hit, units=u)
                rejected[u] += p <= alpha
            threshold, _ = calibrate(
                drawn,
                max_wrong_hit=max_wrong_hit,
                alpha=alpha,
                grid=SIM_GRID,
                units=u,
            )
            chosen[u].append(threshold)
    fixed_080 = true_risk(0.80)[0]
    out = []
    for u in units:
        picked = [t for t in chosen[u] if t is not None]
        looked_up = [true_risk(t) for t in picked]
        violations = sum(risk > max_wrong_hit for risk, *_ in looked_up)
        sure = sum(risk - 2 * se > max_wrong_hit for risk, se, *_ in looked_up)
        possible = sum(risk + 2 * se > max_wrong_hit for risk, se, *_ in looked_up)
        modal = max(set(picked), key=picked.count) if picked else None
        rate = violations / trials if trials else float("nan")
        none = trials - len(picked)
        out.append(
            CacheSimulation(
                trials=trials,
                violation_rate=rate,
                none_certified=none,
                mean_threshold=float(np.mean(picked)) if picked else float("nan"),
                # Exact caching (nothing certified) has no wrong hits and no semantic hits.
                mean_true_risk=float(sum(r for r, *_ in looked_up) / trials) if trials else 0.0,
                mean_hit_rate=float(sum(h for _, _, h, _ in looked_up) / trials) if trials else 0.0,
                fixed_080_risk=fixed_080,
                units=u,
                violations=violations,
                violation_se=math.sqrt(rate * (1 - rate) / trials) if trials else float("nan"),
                truth_se=max((se for _, se, *_ in looked_up), default=0.0),
                near_bound=sum(abs(r - max_wrong_hit) <= 2 * se for r, se, *_ in looked_up),
                dispersion=true_risk(modal)[3] if modal is not None else float("nan"),
                violation_rate_sure=sure / trials if trials else float("nan"),
                violation_rate_possible=possible / trials if trials else float("nan"),
                probe_threshold=float("nan") if probe is None else probe,
                probe_risk=float("nan") if probe is None else true_risk(probe)[0],
                probe_rejection=(
                    rejected[u] / trials if probe is not None and trials else float("nan")
                ),
            )
        )
    return tuple(out)


def simulate(*, units: str = "entries", **kwargs: Any) -> CacheSimulation:
    """One calibration test's :class:`CacheSimulation` (see :func:`compare` for the rest)."""
    return compare(units=(units,), **kwargs)[0]
