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
