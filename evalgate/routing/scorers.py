"""Small-n score models for the router, chosen by cross-validation on the fit cases only.

A fold of a demo suite fits its score model on ~90 cases. A logistic regression on all
390 features (384 embedding dimensions, each standardised, plus 6 length/structure ones)
ranks such cases poorly: standardising gives every one of the 384 dimensions equal
weight, most of them noise at this n. The candidates here differ in how many directions of
the embedding they let the model use:

* ``pca<m>``: the embedding's top ``m`` principal directions, computed on the fit cases,
  plus the standardised length/structure features; a logistic regression on those.
* ``full``: the previous model (every feature standardised), kept as a candidate so a
  large suite that can afford it still gets it.

Each candidate, with each L2 penalty of :data:`L2_GRID`, is scored by the pooled
out-of-fold log loss of a ``folds``-fold cross-validation *on the fit cases only* (the
cases :func:`evalgate.routing.fit.fit_router` later calibrates on, and those cross-fitting
holds out, are never seen), and the best is refit on all the fit cases. Every candidate is
linear in the features, so the chosen one is written as one weight per feature (the
projection folded into the weights): the exported :class:`~evalgate.routing.model.RouterModel`
keeps its numpy-only, one-dot-product form at runtime.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

L2_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
PCA_COMPONENTS = (2, 4, 8, 16, 32)
INNER_FOLDS = 5
MIN_INNER = 20  # fewer fit cases than this: no selection, the most penalised small model


@dataclass(frozen=True, slots=True)
class LinearScore:
    """``logit = ((x - mean) / scale) @ weights + bias``, and how it was chosen."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    name: str
    l2: float
    inner_log_loss: float | None


@functools.cache
def _blas_setters() -> tuple[Any, ...]:
    from evalgate.embeddings import _openblas_thread_setters

    return tuple(_openblas_thread_setters())


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread for this thread's fits: the matrices are small (n x ~390), and
    OpenBLAS's own threads stall on shared cores (measured 10-17x slower at load 10; a
    selection of ~150 small fits took 34 s instead of 0.34 s at load 7)."""
    from evalgate.embeddings import _single_threaded_blas

    with _single_threaded_blas(list(_blas_setters())):
        yield


def _newton(z: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """L2-penalised logistic regression (intercept unpenalised) by Newton's method."""
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


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[~(scale > 1e-9)] = 1.0  # a constant column carries no signal
    return mean, scale


@dataclass(frozen=True, slots=True)
class _Basis:
    """A candidate's feature map, fit on some cases: z = ((x - mean) @ proj) / scale."""

    mean: np.ndarray
    proj: np.ndarray  # (width, d)
    scale: np.ndarray  # (d,)

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.proj) / self.scale


def _basis(x: np.ndarray, name: str, embedded: int, vt: np.ndarray | None = None) -> _Basis:
    """The candidate's map, from these cases only. ``embedded``: leading embedding columns;
    ``vt``: their principal directions, when already computed on these same cases."""
    width = x.shape[1]
    if name == "full" or embedded == 0:
        mean, scale = _standardise(x)
        z = (x - mean) / scale
        if len(x) >= width:
            return _Basis(mean, np.eye(width), scale)
        # Fewer cases than features: the penalised fit's weights lie in the span of the
        # (centred) cases, so solving in an orthonormal basis of that span gives the same
        # model as solving in all ``width`` dimensions, at a fraction of the cost.
        _, singular, vt = np.linalg.svd(z, full_matrices=False)
        keep = vt[singular > 1e-9 * max(float(singular.max(initial=0.0)), 1e-300)]
        return _Basis(mean, keep.T / scale[:, None], np.ones(len(keep)))
    m = int(name.removeprefix("pca"))
    mean = x.mean(axis=0)
    if vt is None:
        vt = _directions(x, embedded)
    m = min(m, vt.shape[0])
    proj = np.zeros((width, m + width - embedded))
    proj[:embedded, :m] = vt[:m].T
    proj[embedded:, m:] = np.eye(width - embedded)
    projected = (x - mean) @ proj
    scale = projected.std(axis=0)
    scale[~(scale > 1e-9)] = 1.0
    return _Basis(mean, proj, scale)


def _directions(x: np.ndarray, embedded: int) -> np.ndarray:
    """Right singular vectors of the centred embedding: its principal directions, rows."""
    centred = x[:, :embedded] - x[:, :embedded].mean(axis=0)
    return np.linalg.svd(centred, full_matrices=False)[2]


def _logit(beta: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.clip(z @ beta[:-1] + beta[-1], -50.0, 50.0)


def _log_loss(logits: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(1.0 / (1.0 + np.exp(-logits)), 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def candidates(embedded: int) -> tuple[str, ...]:
    """Candidate names for features whose first ``embedded`` columns are an embedding."""
    if embedded == 0:
        return ("full",)
    return (*(f"pca{m}" for m in PCA_COMPONENTS), "full")


def _inner_losses(
    x: np.ndarray, y: np.ndarray, names: Sequence[str], embedded: int, seed: int
) -> dict[tuple[str, float], float]:
    """Pooled out-of-fold log loss of every (candidate, penalty), on these cases only."""
    folds = np.random.default_rng(seed).permutation(len(y)) % INNER_FOLDS
    logits = {(name, l2): np.zeros(len(y)) for name in names for l2 in L2_GRID}
    for f in range(INNER_FOLDS):
        train, test = folds != f, folds == f
        if not test.any():
            continue
        share = float(y[train].mean())
        vt = _directions(x[train], embedded) if embedded else None
        for name in names:
            basis = _basis(x[train], name, embedded, vt)
            z_train, z_test = basis.apply(x[train]), basis.apply(x[test])
            for l2 in L2_GRID:
                if share in (0.0, 1.0):  # one class: the constant model, as the refit gives
                    logits[(name, l2)][test] = _constant_logit(share)
                else:
                    logits[(name, l2)][test] = _logit(_newton(z_train, y[train], l2), z_test)
    return {key: _log_loss(values, y) for key, values in logits.items()}


def _constant_logit(share: float) -> float:
    return math.log(max(share, 1e-3) / max(1 - share, 1e-3))


def fit_score(x: np.ndarray, y: np.ndarray, *, embedded: int, seed: int = 0) -> LinearScore:
    """The chosen candidate, refit on all of ``x``; its weights per column of ``x``.

    ``embedded``: how many leading columns are the embedding (0: none, e.g. synthetic
    features); one-class ``y`` gives a constant score (the class share).
    """
    with _one_blas_thread():
        return _fit_score(x, y, embedded, seed)


def _fit_score(x: np.ndarray, y: np.ndarray, embedded: int, seed: int) -> LinearScore:
    width = x.shape[1]
    share = float(y.mean()) if len(y) else 0.5
    if len(y) == 0 or share in (0.0, 1.0):
        mean, scale = _standardise(x) if len(x) else (np.zeros(width), np.ones(width))
        bias = _constant_logit(share)
        return LinearScore(mean, scale, np.zeros(width), bias, "constant", 0.0, None)
    names = candidates(embedded)
    inner: float | None = None
    if len(y) < MIN_INNER or min(y.sum(), len(y) - y.sum()) < 2:
        name, l2 = names[0], L2_GRID[-1]
    else:
        losses = _inner_losses(x, y, names, embedded, seed)
        # Ties go to the earlier, smaller candidate and the larger penalty.
        order = [(n, l2) for n in names for l2 in reversed(L2_GRID)]
        name, l2 = min(order, key=lambda key: losses[key])
        inner = losses[(name, l2)]
    basis = _basis(x, name, embedded)
    beta = _newton(basis.apply(x), y, l2)
    # Fold the projection into one weight per feature: logit = (x - mean) @ w + b.
    weights = basis.proj @ (beta[:-1] / basis.scale)
    return LinearScore(basis.mean, np.ones(width), weights, float(beta[-1]), name, l2, inner)
