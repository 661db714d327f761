"""Fit and certify a router from two configs' per-case outcomes (offline only).

The guarantee (Learn-then-Test; Angelopoulos et al. 2021) and what keeps it true:

* **I.i.d. cases.** The eval cases, and the requests the router later sees, are
  independent draws from one distribution. Nothing here can check that; a suite that is
  not representative of the traffic certifies a bound for the suite, not the traffic
  (the runtime's live small-route share, beside the evaluated one, is the warning sign).
* **Loss.** Routing case i to the small config instead of the large one loses
  ``clip(q_large_i - q_small_i, 0, 1)`` of quality (scores in [0, 1]); the routed config's
  expected loss against always-large at threshold t is R(t) = E[loss * 1{score >= t}].
* **Disjoint fit and calibration.** :func:`fit_router` splits the cases by a seeded
  permutation drawn before any outcome is read, fits the score model (and chooses its
  penalty) on one part only and tests thresholds on the other, so the calibration losses
  are i.i.d. given the model. Thresholds are tested from the strictest (highest score)
  down by fixed-sequence testing, so every certified threshold holds at once: with
  probability >= 1 - alpha over the calibration draw, the exported threshold's expected
  loss is at most ``max_loss``.
* **Candidates from the calibration scores.** R(t) and its empirical estimate both grow
  as t falls, and the p-values grow with the empirical risk, so certifying any t whose
  true risk exceeds the bound implies rejecting a fixed such t (the highest one) too:
  using the calibration scores themselves as the grid keeps the guarantee (checked by
  :mod:`evalgate.routing.simulate`).
* **Honest evaluation.** :func:`cross_fit` runs that whole fit-then-calibrate pipeline k
  times, each on k-1 folds, and decides each held-out fold's cases with it: every case's
  routing decision, and so the routed config's reported quality, cost and latency, comes
  from a pipeline that never saw the case. The exported model is a separate
  :func:`fit_router` on all cases; its guarantee is its own calibration's.
* With too few cases nothing can be certified (zero losses on n calibration cases certify
  ``max_loss`` only when (1 - max_loss)^n <= alpha): the router then sends everything to
  the large config, which is the honest outcome, and says so.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from evalgate.routing.features import FeatureRecipe
from evalgate.routing.model import RouterModel

MAX_CANDIDATES = 256
L2_GRID = (1.0, 10.0, 100.0)


def small_loss(q_small: Any, q_large: Any) -> np.ndarray:
    """Per case: quality lost by answering with the small config, in [0, 1]."""
    small = np.asarray(q_small, dtype=np.float64)
    large = np.asarray(q_large, dtype=np.float64)
    return np.clip(large - small, 0.0, 1.0)


@functools.cache
def _blas_setters() -> tuple[Any, ...]:
    from evalgate.embeddings import _openblas_thread_setters

    return tuple(_openblas_thread_setters())


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread for this thread's fits: the matrices are small (n x ~390), and
    OpenBLAS's own threads stall on shared cores (measured 10-17x slower at load 10)."""
    from evalgate.embeddings import _single_threaded_blas

    with _single_threaded_blas(list(_blas_setters())):
        yield


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[~(scale > 1e-9)] = 1.0  # a constant column carries no signal
    return mean, scale


def _newton(z: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """L2-penalised logistic regression (intercept unpenalised) by Newton's method.

    With fewer cases than features (a demo fold: ~88 cases, 390 features) the weights are
    solved in an orthonormal basis of the cases' span and mapped back: at the optimum
    ``l2 * w = -z.T @ (p - y)`` lies in that span, so this is the same model (to the
    solver's tolerance) at a fraction of the cost (390 x 390 Hessians become ~88 x 88).
    """
    n, d = z.shape
    if 0 < n < d and l2 > 0:
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        basis = vt[singular > 1e-10 * max(float(singular.max(initial=0.0)), 1e-300)].T
        reduced = _newton_dense(z @ basis, y, l2, iterations)
        return np.concatenate([basis @ reduced[:-1], reduced[-1:]])
    return _newton_dense(z, y, l2, iterations)


def _newton_dense(z: np.ndarray, y: np.ndarray, l2: float, iterations: int) -> np.ndarray:
    n, d = z.shape
    a = np.hstack([z, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    beta = np.zeros(d + 1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ beta, -50.0, 50.0)))
        gradient = a.T @ (p - y) + penalty * beta
        weights = p * (1.0 - p) + 1e-9
        hessian = (a * weights[:, None]).T @ a + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.max(np.abs(step)) < 1e-7:
            break
    return beta


def _log_loss(beta: np.ndarray, z: np.ndarray, y: np.ndarray) -> float:
    p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta[:-1] + beta[-1], -50.0, 50.0)))
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_logistic(
    x: Any, y: Any, *, l2: float | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, weights, bias) of a logistic model of P(y = 1 | x).

    ``l2=None`` picks the penalty from :data:`L2_GRID` by 3-fold log loss on these cases
    only. One-class ``y`` gives a constant score (the class share).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match")
    if not np.isfinite(x).all():
        raise ValueError("features must be finite")
    with _one_blas_thread():
        return _fit_logistic(x, y, l2, seed)


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mean, scale = _standardise(x)
    z = (x - mean) / scale
    share = float(y.mean()) if len(y) else 0.5
    if len(y) == 0 or share in (0.0, 1.0):
        bias = math.log(max(share, 1e-3) / max(1 - share, 1e-3))
        return mean, scale, np.zeros(x.shape[1]), bias
    if l2 is None:
        l2 = _choose_l2(z, y, seed)
    beta = _newton(z, y, l2)
    return mean, scale, beta[:-1], float(beta[-1])


def _choose_l2(z: np.ndarray, y: np.ndarray, seed: int) -> float:
    if len(y) < 9:
        return L2_GRID[-1]
    folds = np.random.default_rng(seed).permutation(len(y)) % 3
    best, best_loss = L2_GRID[-1], math.inf
    for l2 in L2_GRID:
        losses = []
        for f in range(3):
            train, test = folds != f, folds == f
            if len(set(y[train])) < 2:
                continue
            losses.append(_log_loss(_newton(z[train], y[train], l2), z[test], y[test]))
        loss = float(np.mean(losses)) if losses else math.inf
        if loss < best_loss:
            best, best_loss = l2, loss
    return best


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Thresholds to test, strictest (highest) first: the calibration scores, thinned."""
    unique = np.unique(scores)[::-1]
    if len(unique) > MAX_CANDIDATES:
        unique = unique[np.linspace(0, len(unique) - 1, MAX_CANDIDATES).astype(int)]
    return unique


def calibrate(
    scores: Any, losses: Any, *, max_loss: float, alpha: float, method: str = "auto"
) -> tuple[float | None, Any]:
    """The most aggressive threshold Learn-then-Test certifies (None: none), and the test."""
    from evalgate.stats.ltt import learn_then_test

    scores = np.asarray(scores, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if scores.ndim != 1 or losses.shape != scores.shape:
        raise ValueError(f"scores: {scores.shape} do not match losses {losses.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores: every value must be finite")
    thresholds = candidate_thresholds(scores)
    matrix = losses[None, :] * (scores[None, :] >= thresholds[:, None])
    result = learn_then_test(matrix, bound=max_loss, alpha=alpha, method=method)
    chosen = result.chosen
    return (float(thresholds[chosen]) if chosen is not None else None), result


def _checked_inputs(
    x: Any, q_small: Any, q_large: Any, recipe: FeatureRecipe, max_loss: float, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and qualities as arrays, or a one-line ValueError naming what is wrong."""
    x = np.asarray(x, dtype=np.float64)
    small = np.asarray(q_small, dtype=np.float64)
    large = np.asarray(q_large, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != recipe.width:
        raise ValueError(f"features: expected (n, {recipe.width}) for the recipe, got {x.shape}")
    if small.shape != (len(x),) or large.shape != (len(x),):
        raise ValueError(
            f"qualities: expected {len(x)} per config, got {small.shape} and {large.shape}"
        )
    for name, values in (("features", x), ("q_small", small), ("q_large", large)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name}: every value must be finite")
    if not (0.0 < max_loss < 1.0 and math.isfinite(max_loss)):
        raise ValueError(f"max_loss: {max_loss!r} is not in (0, 1)")
    if not (0.0 < alpha < 1.0 and math.isfinite(alpha)):
        raise ValueError(f"alpha: {alpha!r} is not in (0, 1)")
    return x, small, large


def fit_router(
    x: Any,
    q_small: Any,
    q_large: Any,
    *,
    max_loss: float,
    alpha: float,
    recipe: FeatureRecipe,
    seed: int = 0,
    fit_share: float = 0.5,
) -> RouterModel:
    """Fit on one part of the cases, certify the threshold on the other (disjoint).

    The split is a seeded permutation drawn before any outcome is looked at, so which
    cases calibrate does not depend on the labels.
    """
    x, q_small, q_large = _checked_inputs(x, q_small, q_large, recipe, max_loss, alpha)
    if not 0.0 < fit_share < 1.0:
        raise ValueError(f"fit_share: {fit_share!r} is not in (0, 1)")
    losses = small_loss(q_small, q_large)
    labels = (losses <= 0.0).astype(np.float64)  # the small answer is as good
    n = len(losses)
    order = np.random.default_rng(seed).permutation(n)
    n_fit = int(n * fit_share)
    fit, cal = order[:n_fit], order[n_fit:]
    mean, scale, weights, bias = fit_logistic(x[fit], labels[fit], seed=seed)
    model = RouterModel(recipe, tuple(mean), tuple(scale), tuple(weights), bias, None)
    scores = model.score(x[cal]) if len(cal) else np.zeros(0)
    threshold, test = (None, None)
    if len(cal):
        threshold, test = calibrate(scores, losses[cal], max_loss=max_loss, alpha=alpha)
    chosen = test.chosen if test is not None else None
    evidence = {
        "n_fit": len(fit),
        "n_calibration": len(cal),
        "max_loss": float(max_loss),
        "alpha": float(alpha),
        "method": test.method if test is not None else None,
        "certified": threshold is not None,
        "calibration_risk": test.risks[chosen] if chosen is not None else None,
        "p_value": test.p_values[chosen] if chosen is not None else None,
        "calibration_small_share": float(np.mean(scores >= threshold))
        if threshold is not None
        else 0.0,
    }
    return RouterModel(
        recipe,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in weights),
        float(bias),
        threshold,
        evidence,
    )


@dataclass(frozen=True, slots=True)
class CrossFit:
    """Per case: the routing decision and score of a pipeline that never saw the case."""

    route_small: np.ndarray
    scores: np.ndarray
    fold: np.ndarray
    thresholds: tuple[float | None, ...]
    k: int

    @property
    def certified_folds(self) -> int:
        return sum(t is not None for t in self.thresholds)

    @property
    def small_share(self) -> float:
        return float(self.route_small.mean()) if len(self.route_small) else 0.0


def cross_fit(
    x: Any,
    q_small: Any,
    q_large: Any,
    *,
    max_loss: float,
    alpha: float,
    recipe: FeatureRecipe,
    k: int = 5,
    seed: int = 0,
) -> CrossFit:
    """k-fold cross-fitting of :func:`fit_router` (see the module docstring)."""
    x, q_small, q_large = _checked_inputs(x, q_small, q_large, recipe, max_loss, alpha)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k: {k!r} folds; cross-fitting needs at least 2")
    n = len(x)
    route = np.zeros(n, dtype=bool)
    scores = np.zeros(n)
    fold = np.random.default_rng(seed).permutation(n) % k if n else np.zeros(0, dtype=int)
    thresholds: list[float | None] = []
    for f in range(k):
        held, train = fold == f, fold != f
        if not held.any() or train.sum() < 2:
            thresholds.append(None)
            continue
        model = fit_router(
            x[train],
            q_small[train],
            q_large[train],
            max_loss=max_loss,
            alpha=alpha,
            recipe=recipe,
            seed=seed + 1 + f,
        )
        thresholds.append(model.threshold)
        scores[held] = model.score(x[held])
        route[held] = model.route_small(x[held])
    return CrossFit(route, scores, fold, tuple(thresholds), k)
