"""Synthetic results with known truth, for benchmarks, simulation tests and demos.

The quality model is the one the design's power figures use: a binary outcome per case,
the candidate's outcome correlated with the baseline's (correlation ρ of the two
indicators), true difference Δ = p_cand - p_base.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def paired_binary_cells(p_base: float, p_cand: float, rho: float) -> np.ndarray:
    """Joint cell probabilities [p11, p10, p01, p00] of (cand, base) 0/1 outcomes.

    p10 = P(cand=1, base=0), p01 = P(cand=0, base=1); ``rho`` is the correlation of the
    two indicators. Raises ValueError when no joint distribution has these margins and ρ.
    """
    p11 = p_base * p_cand + rho * math.sqrt(p_base * (1 - p_base) * p_cand * (1 - p_cand))
    cells = np.array([p11, p_cand - p11, p_base - p11, 1 - p_base - p_cand + p11])
    if np.any(cells < -1e-12):
        raise ValueError(f"no paired binary law with p_base={p_base}, p_cand={p_cand}, ρ={rho}")
    return np.clip(cells, 0.0, 1.0)


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """One config of a synthetic suite.

    Attributes:
        config_id: its id.  delta: true quality difference to the baseline (0 for it).
        cost_usd: mean cost of a call (None: unknown price).  latency_ms: median latency.
        error_rate: chance a call errors.  cached: chance a call is a cache hit.
    """

    config_id: str
    delta: float = 0.0
    cost_usd: float | None = 0.01
    latency_ms: float = 800.0
    error_rate: float = 0.0
    cached: float = 0.0


def synthetic_results(
    n_cases: int,
    configs: Sequence[SyntheticConfig],
    *,
    p_base: float = 0.85,
    rho: float = 0.5,
    repeats: int = 1,
    n_groups: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-item rows (the analysis input) for ``configs``; the first one is the baseline.

    A case's outcome is the same in every repeat (a deterministic model); latency,
    errors and cache hits vary per call. Cases are assigned to ``n_groups`` groups
    round-robin when given (labels only: outcomes are independent across cases).
    """
    rng = np.random.default_rng(seed)
    base = rng.random(n_cases) < p_base
    case_ids = np.array([f"case-{i:05d}" for i in range(n_cases)], dtype=object)
    groups = (
        np.array([f"g{i % n_groups}" for i in range(n_cases)], dtype=object)
        if n_groups
        else np.full(n_cases, None, dtype=object)
    )
    frames = []
    for k, spec in enumerate(configs):
        if k == 0:
            outcome = base
        else:
            p11, p10, _, _ = paired_binary_cells(p_base, p_base + spec.delta, rho)
            p_if_base = np.where(base, p11 / p_base, p10 / (1 - p_base))
            outcome = rng.random(n_cases) < p_if_base
        n = n_cases * repeats
        error = rng.random(n) < spec.error_rate
        cached = (rng.random(n) < spec.cached) & ~error
        cost = spec.cost_usd * rng.gamma(4.0, 0.25, n) if spec.cost_usd is not None else None
        latency = spec.latency_ms * rng.lognormal(0.0, 0.4, n)
        score = np.where(error, 0.0, np.repeat(outcome, repeats).astype(float))
        frames.append(
            pd.DataFrame(
                {
                    "case_id": np.repeat(case_ids, repeats),
                    "config_id": spec.config_id,
                    "repeat": np.tile(np.arange(repeats), n_cases),
                    "group": np.repeat(groups, repeats),
                    "score": score,
                    "passed": score >= 1.0,
                    "error": error,
                    "cost_usd": np.where(cached, 0.0, cost) if cost is not None else None,
                    "saved_usd": np.where(cached, cost, 0.0) if cost is not None else 0.0,
                    "latency_ms": latency,
                    "ttft_ms": latency * rng.uniform(0.1, 0.3, n),
                    "cached": cached,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# --- the gate's error rates: paired differences with known truth ---------------------------

SHAPES = (
    "normal",
    "zero-inflated-1%",
    "zero-inflated-5%",
    "zero-inflated-10%",
    "zero-inflated-30%",
    "mixture",
    "binary",
    "binary-rare",
    "binary-repeats-3",
    "binary-repeats-5",
    "continuous-repeats-3",
    "continuous-repeats-5",
)
"""Shapes of the paired case differences in :func:`case_differences` (see there)."""


def case_differences(
    shape: str, n: int, delta: float, margin: float, trials: int, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """(trials, n) case differences cand - base with true mean ``delta``, and "binary".

    ``margin`` sets the size of the concentrated losses at the boundary (Δ = -δ); at
    ``delta`` = 0 the losses are gone. Shapes:

    - ``normal``: N(Δ, 0.2²), clipped to [-1, 1] (the clip moves the mean < 1e-6);
    - ``zero-inflated-F%``: a fraction F of cases carries the whole loss, each losing
      -Δ/F, the rest unchanged; when -Δ/F would exceed 1 (a loss cannot), the fraction
      becomes -Δ, each losing 1;
    - ``mixture``: 8% of cases lose U(0.4, 0.9), the rest move by N(μ, 0.05²), μ set so
      the mean is Δ (most cases improve slightly, a few break badly);
    - ``binary``: one 0/1 score per case, baseline 0.85, correlation 0.5;
    - ``binary-rare``: rare one-directional discordance: only the baseline ever wins
      alone (P = -Δ) at the boundary; 1% each way at Δ = 0;
    - ``binary-repeats-R``: R repeats, case means; 10% of cases are broken, their pass
      chance per repeat falls by -Δ/0.1 (base chance U(0.6, 1) per case, broken ones
      at least the loss);
    - ``continuous-repeats-R``: R repeats of case quality q ~ U(0.6, 0.9) plus U(±0.1)
      noise, case means; 20% of cases broken by -Δ/0.2 per repeat.
    """
    if shape == "normal":
        return np.clip(rng.normal(delta, 0.2, (trials, n)), -1, 1), False
    if shape.startswith("zero-inflated-"):
        share = float(shape.removeprefix("zero-inflated-").rstrip("%")) / 100
        loss = -delta / share if delta < 0 else 0.0
        if loss > 1:
            share, loss = -delta, 1.0
        return -loss * (rng.random((trials, n)) < share), False
    if shape == "mixture":
        broken = rng.random((trials, n)) < 0.08
        mu = (delta + 0.08 * 0.65) / 0.92
        d = np.where(broken, -rng.uniform(0.4, 0.9, (trials, n)), rng.normal(mu, 0.05, (trials, n)))
        return np.clip(d, -1, 1), False
    if shape in ("binary", "binary-rare"):
        if shape == "binary":
            _, p10, p01, _ = paired_binary_cells(0.85, 0.85 + delta, 0.5)
        else:
            p10, p01 = (0.0, -delta) if delta < 0 else (0.01, 0.01 + delta)
        u = rng.random((trials, n))
        return np.select([u < p10, u < p10 + p01], [1.0, -1.0], 0.0), True
    if shape.startswith(("binary-repeats-", "continuous-repeats-")):
        repeats = int(shape.rsplit("-", 1)[1])
        share = 0.1 if shape.startswith("binary") else 0.2
        loss = -delta / share
        broken = rng.random((trials, n, 1)) < share
        if shape.startswith("binary"):
            chance = rng.uniform(0.6, 1.0, (trials, n, 1))
            chance = np.where(broken, np.maximum(chance, loss), chance)
            base = (rng.random((trials, n, repeats)) < chance).astype(float)
            cand = (rng.random((trials, n, repeats)) < chance - loss * broken).astype(float)
        else:
            q = rng.uniform(0.6, 0.9, (trials, n, 1))
            base = q + rng.uniform(-0.1, 0.1, (trials, n, repeats))
            cand = q - loss * broken + rng.uniform(-0.1, 0.1, (trials, n, repeats))
        # The true mean difference: exactly Δ (losses are in expectation per case).
        return cand.mean(-1) - base.mean(-1), False
    raise ValueError(f"shape must be one of {list(SHAPES)} (got {shape!r})")


def gate_passes(
    d: np.ndarray,
    *,
    margin: float,
    alpha: float = 0.05,
    binary: bool = False,
    seeds: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Whether :func:`~evalgate.stats.noninferiority.noninferiority_test` passes each row
    of ``d`` (trials, n), vectorised: the same choice of test and the same decisions.

    The betting test's random orders come from ``seeds`` (one per row, as
    ``noninferiority_test(..., seed=s)`` draws them) or, faster, from ``rng``.
    """
    from scipy import stats

    from evalgate.stats import betting
    from evalgate.stats.noninferiority import (
        TANGO_MIN_DISCORDANT,
        identical_noninferiority,
        tango_size_holds,
        tango_statistic,
    )

    d = np.asarray(d, dtype=float)
    trials, n = d.shape
    out = np.zeros(trials, dtype=bool)
    identical = np.ptp(d, axis=1) <= 1e-12
    for i in np.flatnonzero(identical):
        out[i] = identical_noninferiority(float(d[i, 0]), n, margin, alpha=alpha)[0] < alpha
    b, c = np.sum(d > 0, axis=1), np.sum(d < 0, axis=1)
    exact = ~identical & binary & ((b + c < TANGO_MIN_DISCORDANT) | (b == 0))
    if not exact.any() or tango_size_holds(n, margin, alpha):
        exact[:] = False
    out[exact] = stats.binom.cdf(c[exact], n, margin) < alpha
    tango = ~identical & binary & ~exact
    out[tango] = stats.norm.sf(tango_statistic(b[tango], c[tango], n, margin)) < alpha
    rest = np.flatnonzero(~identical & ~tango & ~exact)
    m = (1 - margin) / 2
    rng = rng or np.random.default_rng(0)
    chunk = max(1, 2_000_000 // (n * betting.ORDERS))
    for start in range(0, len(rest), chunk):
        rows = rest[start : start + chunk]
        x = (d[rows] + 1) / 2
        if seeds is not None:
            perm = np.stack([betting.orders(n, int(seeds[i])) for i in rows])
        else:
            perm = np.argsort(rng.random((len(rows), betting.ORDERS, n)), axis=-1)
        xs = np.take_along_axis(np.broadcast_to(x[:, None, :], perm.shape), perm, -1)
        log_k = betting.mean_capital(xs, betting.bets(xs, alpha), m)
        out[rows] = log_k > math.log(1 / alpha)
    return out


def t_passes(d: np.ndarray, *, margin: float, alpha: float = 0.05) -> np.ndarray:
    """Whether the paired t-test on d + δ (the gate before the betting test) passes each row."""
    from scipy import stats

    n = d.shape[1]
    se = d.std(axis=1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (d.mean(axis=1) + margin) / se
    return np.where(se > 0, stats.t.sf(t, n - 1) < alpha, False)
