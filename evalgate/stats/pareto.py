"""Pareto frontier over several objectives, and each point's probability of being on it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _oriented(samples: np.ndarray, maximize: Sequence[bool] | None) -> np.ndarray:
    samples = np.asarray(samples, dtype=float)
    if maximize is None:  # evalgate's convention: quality first, then costs
        maximize = [True] + [False] * (samples.shape[-1] - 1)
    if samples.shape[-1] != len(maximize):
        raise ValueError(
            f"points have {samples.shape[-1]} objectives but maximize has {len(maximize)}"
        )
    sign = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    return samples * sign


def _on_front(oriented: np.ndarray) -> np.ndarray:
    """(B, C, K) larger-is-better -> (B, C) on-frontier mask; a point with NaN is off it."""
    valid = ~np.isnan(oriented).any(axis=-1)
    a = oriented[:, :, None, :]  # dominator i
    b = oriented[:, None, :, :]  # dominated j
    dominates = (a >= b).all(axis=-1) & (a > b).any(axis=-1) & valid[:, :, None]
    return valid & ~dominates.any(axis=1)


def pareto_front(points: np.ndarray, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """Which points no other point dominates.

    Args:
        points: (C, K) objective values, one row per config.
        maximize: per objective, True if larger is better (quality), False if smaller is
            (cost, latency). Default: the first objective is maximised, the others
            minimised, e.g. (quality, cost_per_case, latency_p95_ms).

    Returns:
        (C,) booleans. Identical points do not dominate each other (both stay on the
        frontier); a point with a NaN objective is off the frontier and dominates nothing.
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2:
        raise ValueError("points must be a (configs, objectives) array")
    return _on_front(_oriented(points[None], maximize))[0]


def frontier_probability(samples: np.ndarray, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """Share of resamples in which each config is on the Pareto frontier.

    Args:
        samples: (B, C, K) objective values of C configs in B joint resamples (the same
            resampled cases for every config, so their correlation is kept).
        maximize: as for :func:`pareto_front`.

    Returns:
        (C,) probabilities in [0, 1].
    """
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 3:
        raise ValueError("samples must be a (resamples, configs, objectives) array")
    return _on_front(_oriented(samples, maximize)).mean(axis=0)
