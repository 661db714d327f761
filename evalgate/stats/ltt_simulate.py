"""Seeded simulation with a known truth, to check Learn-then-Test's guarantee.

A case has a router score s ~ Uniform(0, 1); sending it to the small tier loses quality
with mean ``c·(1 - s)`` (a high score means "the small tier will do"). Threshold t sends
the cases with s >= t to the small tier, so its true expected loss is

    R(t) = ∫_t^1 c·(1 - s) ds = c·(1 - t)² / 2.

Each trial draws n calibration cases, certifies thresholds with
:func:`evalgate.stats.ltt.learn_then_test` (grid from 1 down to 0, safest first) and
keeps the most aggressive certified one. The guarantee says R(chosen) > bound in at most
alpha of the trials. Used by tests/unit/test_stats_ltt.py and benchmarks/router.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evalgate.stats.ltt import learn_then_test

GRID = np.round(np.linspace(1.0, 0.0, 101), 10)


def true_risk(threshold: float | np.ndarray, c: float) -> float | np.ndarray:
    """R(t) = c (1 - t)^2 / 2 (clipped to t in [0, 1])."""
    t = np.clip(threshold, 0.0, 1.0)
    return c * (1.0 - t) ** 2 / 2.0


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    """Over the trials: how often the certified threshold broke the bound, and its reach.

    Attributes:
        trials: trials run.  violations: trials whose chosen threshold has R > bound.
        violation_rate: violations / trials.  none_certified: trials certifying nothing.
        mean_small_share: mean true share of traffic the chosen threshold sends to small.
        oracle_share: the share at the threshold whose true risk equals the bound.
    """

    trials: int
    violations: int
    violation_rate: float
    none_certified: int
    mean_small_share: float
    oracle_share: float


def simulate(
    *,
    n: int,
    bound: float,
    alpha: float,
    c: float = 0.3,
    binary: bool = True,
    trials: int = 1000,
    seed: int = 0,
) -> SimulationSummary:
    """Runs ``trials`` seeded calibrations of n cases (see the module docstring)."""
    rng = np.random.default_rng(seed)
    violations = none = 0
    shares = []
    for _ in range(trials):
        s = rng.random(n)
        mean_loss = c * (1.0 - s)
        if binary:
            loss = (rng.random(n) < mean_loss).astype(float)
        else:
            # Beta with the same mean and a spread: continuous losses in [0, 1].
            k = 4.0
            loss = rng.beta(mean_loss * k + 1e-9, (1 - mean_loss) * k + 1e-9)
        routed = s[None, :] >= GRID[:, None]
        result = learn_then_test(routed * loss[None, :], bound=bound, alpha=alpha)
        chosen = result.chosen
        if chosen is None:
            none += 1
            shares.append(0.0)
            continue
        t = float(GRID[chosen])
        shares.append(1.0 - t)
        if true_risk(t, c) > bound:
            violations += 1
    oracle_t = 1.0 - np.sqrt(min(1.0, 2.0 * bound / c))
    return SimulationSummary(
        trials=trials,
        violations=violations,
        violation_rate=violations / trials,
        none_certified=none,
        mean_small_share=float(np.mean(shares)),
        oracle_share=float(1.0 - oracle_t),
    )
