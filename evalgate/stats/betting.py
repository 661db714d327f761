"""Betting tests and confidence bounds for the mean of bounded values, valid at every n.

Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting" (JRSS-B
2024). Values x_1..x_n lie in [0, 1] (paired differences d in [-1, 1] map to (d + 1)/2).
To test H0: E[x] <= m, a gambler starts with capital 1 and bets a fraction λ_t >= 0 of it
on x_t exceeding m, each λ_t chosen from x_1..x_{t-1} only:

    K(m) = prod_t (1 + λ_t (x_t - m)).

Under H0 every factor has expectation <= 1, so K is a nonnegative supermartingale and
P(K >= 1/α) <= α for *every* distribution on [0, 1] (Ville's inequality): no normal
approximation, hence no size failure when a loss sits in a few cases. p = min(1, 1/K).

Choices (compared by simulation in ``benchmarks/gate_validity.py``):

- bets: WSR's predictable plug-in tuned for a fixed n, λ_t = sqrt(2 log(1/α) / (n σ̂²_{t-1}))
  truncated at c/m (c = :data:`BET_CAP`), which maximises the expected log capital at the
  edge of the interval when n is known in advance (as it is for a finished eval run);
- order: the capital depends on the order of the x's, so it is averaged over
  :data:`ORDERS` seeded random orders (a mean of e-values is an e-value), which makes
  the verdict independent of case ids and steadier from run to run;
- K(m) decreases in m, so the lower bound {m : K(m) < 1/α} is found by bisection and
  "lower bound > m0" is the same statement as "p(m0) < α": verdict and interval agree.
"""

from __future__ import annotations

import math

import numpy as np

BET_CAP = 0.9
"""c: never bet more than c/m of the capital, so one value at 0 keeps a tenth of it."""
ORDERS = 8
"""Random orders of the values whose capitals are averaged."""
POWER = 0.8


def orders(n: int, seed: int, count: int = ORDERS) -> np.ndarray:
    """``count`` seeded permutations of range(n), shape (count, n)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)]) if n else np.zeros((count, 0), int)


def bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable plug-in bets λ_t (before truncation) for values ``x`` of shape (..., n).

    σ̂²_{t-1} is WSR's running variance with a prior of 1/4 (the largest variance on
    [0, 1]) counted as one observation, so early bets are cautious.
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[-1]
    t = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    var = (0.25 + np.cumsum((x - mu) ** 2, axis=-1)) / (t + 1)
    prev = np.concatenate([np.full((*x.shape[:-1], 1), 0.25), var[..., :-1]], axis=-1)
    return np.sqrt(2 * math.log(1 / alpha) / (n * np.maximum(prev, 1e-12)))


def log_capital(x: np.ndarray, lam: np.ndarray, m: float | np.ndarray) -> np.ndarray:
    """log K(m) for each leading index of ``x``/``lam`` (shape (..., n)) -> (...)."""
    m = np.asarray(m, dtype=float)[..., None]
    cap = BET_CAP / np.maximum(m, 1e-12)
    step = np.minimum(lam, cap) * (x - m)
    with np.errstate(divide="ignore"):
        return np.sum(np.log1p(step), axis=-1)


def mean_capital(x: np.ndarray, lam: np.ndarray, m: float | np.ndarray) -> np.ndarray:
    """K(m) averaged over the orders (the second-to-last axis of ``x``)."""
    logs = log_capital(x, lam, m[..., None] if isinstance(m, np.ndarray) else m)
    top = np.max(logs, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.squeeze(top, -1) + np.log(np.mean(np.exp(logs - top), axis=-1))


def _prepare(values: np.ndarray, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(values, dtype=float)[orders(len(values), seed)]
    return x, bets(x, alpha)


def p_value(values: np.ndarray, m: float, *, alpha: float, seed: int = 0) -> float:
    """p of H0: E[x] <= m for values in [0, 1]: min(1, 1/K(m)), bets tuned for level α."""
    if len(values) == 0:
        return math.nan
    x, lam = _prepare(values, alpha, seed)
    return float(min(1.0, math.exp(-float(mean_capital(x, lam, m)))))


def lower_bound(values: np.ndarray, *, alpha: float, seed: int = 0) -> float:
    """The (1-α) lower confidence bound of E[x]: the smallest m with K(m) < 1/α.

    K(m) decreases in m, so the bound is bracketed on a grid of m and the bracket is
    narrowed (33 points a round, 7 rounds: a width below 1e-10).
    """
    if len(values) == 0:
        return math.nan
    x, lam = _prepare(values, alpha, seed)
    target = math.log(1 / alpha)
    lo, hi = 0.0, float(np.max(values))
    for _ in range(7):
        grid = np.linspace(lo, hi, 33)
        above = mean_capital(x, lam, np.maximum(grid, 1e-12)) >= target
        if not above[0]:
            return lo
        last = int(np.flatnonzero(above)[-1])
        if last == len(grid) - 1:
            return float(grid[-1])
        lo, hi = float(grid[last]), float(grid[last + 1])
    return lo


def difference_bounds(d: np.ndarray, *, alpha: float, seed: int = 0) -> tuple[float, float]:
    """(lower, upper): one-sided (1-α) bounds of E[d] for differences d in [-1, 1]."""
    d = np.asarray(d, dtype=float)
    lower = 2 * lower_bound((d + 1) / 2, alpha=alpha, seed=seed) - 1
    upper = 1 - 2 * lower_bound((1 - d) / 2, alpha=alpha, seed=seed)
    return lower, upper


def difference_p_values(
    d: np.ndarray, margin: float, *, alpha: float, seed: int = 0
) -> tuple[float, float]:
    """(p of H0: E[d] <= -δ, p of H0': E[d] >= -δ) for differences d in [-1, 1]."""
    d = np.asarray(d, dtype=float)
    m = (1 - margin) / 2
    return (
        p_value((d + 1) / 2, m, alpha=alpha, seed=seed),
        p_value((1 - d) / 2, 1 - m, alpha=alpha, seed=seed),
    )


# --- planning ------------------------------------------------------------------------------


def power(sd: float, n: int, margin: float, *, alpha: float, delta: float = 0.0) -> float:
    """Approximate power of the betting test at true mean difference ``delta``.

    Second-order expansion of log(1 + λ(x - m)) with the bet the test settles on for sd
    ``sd`` (of d): it rejects when x̄ - m >= log(1/α)/(λn) + λ(σ² + g²)/2, on the [0, 1]
    scale. Checked against simulation (``tests/unit/test_stats_betting.py``): within 5
    points for normal differences; distributions with the same sd but most mass at 0 (a
    few broken cases) reach more power than it says.
    """
    if n <= 0 or not math.isfinite(sd):
        return math.nan
    sigma = max(sd / 2, 1e-6)
    gap = (delta + margin) / 2
    m = (1 - margin) / 2
    if gap <= 0:
        return 0.0
    log_inv = math.log(1 / alpha)
    lam = min(math.sqrt(2 * log_inv / (n * sigma**2)), BET_CAP / m)
    threshold = log_inv / (lam * n) + lam * (sigma**2 + gap**2) / 2
    z = (gap - threshold) * math.sqrt(n) / sigma
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))  # Φ(z); scipy's is 50x slower per call


def n_needed(sd: float, margin: float, *, alpha: float, power_: float = POWER) -> int | None:
    """Smallest n with :func:`power` >= ``power_`` at true Δ = 0 (None: beyond 10^7)."""
    if not math.isfinite(sd) or not 0 < margin < 1:
        return None
    hi = 2
    while power(sd, hi, margin, alpha=alpha) < power_:
        hi *= 2
        if hi > 10**7:
            return None
    lo = hi // 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if power(sd, mid, margin, alpha=alpha) >= power_:
            hi = mid
        else:
            lo = mid
    return hi


def min_detectable_margin(
    sd: float, n: int, *, alpha: float, power_: float = POWER
) -> float | None:
    """Smallest δ that ``n`` cases show with ``power_`` at true Δ = 0 (None: none below 1)."""
    if n <= 0 or not math.isfinite(sd):
        return None
    # The expansion is not monotone in δ for very large margins: scan up, then bisect.
    grid = [k / 200 for k in range(1, 200)]
    hi = next((g for g in grid if power(sd, n, g, alpha=alpha) >= power_), None)
    if hi is None:
        return None
    lo = hi - 1 / 200
    for _ in range(40):
        mid = (lo + hi) / 2
        if power(sd, n, mid, alpha=alpha) >= power_:
            hi = mid
        else:
            lo = mid
    return hi
