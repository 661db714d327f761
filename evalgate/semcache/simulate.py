"""Seeded simulation of the certified semantic cache where the truth is known.

One population of intents is drawn (seeded); each stream draws ``n`` requests from it
i.i.d. (a popular intent recurs, Zipf-like). Intents have random unit centres in ``dim`` dimensions;
a share of them has a *sibling*, a different intent whose centre is close (a near-miss:
a number changed, a negation added). A request is a paraphrase of its intent: its
embedding is the centre plus Gaussian noise, renormalised. A fresh call passes with
probability ``p_pass``; the answer stored for j passes i's graders exactly when i and j
share an intent and j's own answer passed.

Each trial draws a stream, certifies a threshold on it (:func:`calibrate`, no
cross-fitting: this checks the guarantee itself) and looks up the threshold's true risk:
the expected share of wrong hits on a fresh stream of the same size, estimated once per
threshold on ``fresh`` independent streams. The share of trials where the true risk
exceeds ``max_wrong_hit`` estimates how often the bound fails (target: at most alpha).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evalgate.semcache.certify import calibrate
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


@dataclass(frozen=True, slots=True)
class Population:
    """The traffic's source: intent centres (siblings included) and their popularity."""

    centres: np.ndarray
    weights: np.ndarray


def population(
    rng: np.random.Generator, dim: int, intents: int, sibling_share: float
) -> Population:
    centres = rng.standard_normal((intents, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    has_sibling = rng.random(intents) < sibling_share
    siblings = centres[has_sibling] + 0.12 * rng.standard_normal((int(has_sibling.sum()), dim))
    siblings /= np.linalg.norm(siblings, axis=1, keepdims=True)
    all_centres = np.vstack([centres, siblings])
    weights = 1.0 / np.arange(1, len(all_centres) + 1) ** 0.8
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


def simulate(
    *,
    n: int = 300,
    dim: int = 16,
    intents: int = 120,
    sibling_share: float = 0.3,
    p_pass: float = 0.9,
    max_wrong_hit: float = 0.05,
    alpha: float = 0.1,
    trials: int = 100,
    fresh: int = 200,
    seed: int = 0,
) -> CacheSimulation:
    rng = np.random.default_rng(seed)
    source = population(rng, dim, intents, sibling_share)
    fresh_streams = [stream(rng, source, n, p_pass) for _ in range(fresh)]
    truth: dict[float, tuple[float, float]] = {}

    def true_risk(threshold: float) -> tuple[float, float]:
        if threshold not in truth:
            runs = [s.run(threshold) for s in fresh_streams]
            truth[threshold] = (
                float(np.mean([r.wrong_hit.mean() for r in runs])),
                float(np.mean([r.hit.mean() for r in runs])),
            )
        return truth[threshold]

    violations = none = 0
    thresholds, risks, hit_rates = [], [], []
    for _ in range(trials):
        drawn = stream(rng, source, n, p_pass)
        threshold, _ = calibrate(drawn, max_wrong_hit=max_wrong_hit, alpha=alpha, grid=SIM_GRID)
        if threshold is None:
            none += 1
            risks.append(0.0)
            hit_rates.append(0.0)
            continue
        risk, hit_rate = true_risk(threshold)
        violations += risk > max_wrong_hit
        thresholds.append(threshold)
        risks.append(risk)
        hit_rates.append(hit_rate)
    return CacheSimulation(
        trials=trials,
        violation_rate=violations / trials,
        none_certified=none,
        mean_threshold=float(np.mean(thresholds)) if thresholds else float("nan"),
        mean_true_risk=float(np.mean(risks)),
        mean_hit_rate=float(np.mean(hit_rates)),
        fixed_080_risk=true_risk(0.80)[0],
    )
