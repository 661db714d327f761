"""Small-n score models: projection folded into the weights, selection on fit cases only."""

from __future__ import annotations

import numpy as np

from evalgate.routing import scorers
from evalgate.routing.features import EMBEDDING_DIM, FeatureRecipe
from evalgate.routing.fit import fit_logistic, fit_router


def _clustered(n: int, seed: int, width: int = 64, extra: int = 3) -> tuple[np.ndarray, ...]:
    """Embedding-like rows: one of 6 topic centres plus isotropic noise, unit length, then
    a few unrelated extra columns; the small tier's success depends on the topic (as
    capitals vs arithmetic do) and on one direction within it."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((6, width))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    topic = rng.integers(0, 6, n)
    emb = centres[topic] * 1.0 + rng.standard_normal((n, width)) * 0.12
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rate = np.array([0.95, 0.9, 0.7, 0.4, 0.1, 0.02])[topic]
    y = (rng.random(n) < rate).astype(float)
    x = np.hstack([emb, rng.standard_normal((n, extra))])
    return x, y


def _recipe(width: int) -> FeatureRecipe:
    """A recipe whose matrix is the 384-wide embedding then ``width - 384`` extras."""
    from evalgate.routing.features import EXTRA_FEATURES

    return FeatureRecipe("m", extra=tuple(EXTRA_FEATURES)[: width - EMBEDDING_DIM])


def _logits(fitted: scorers.LinearScore, x: np.ndarray) -> np.ndarray:
    return ((x - fitted.mean) / fitted.scale) @ fitted.weights + fitted.bias


def test_a_projected_candidate_is_exported_as_one_weight_per_feature() -> None:
    x, y = _clustered(90, seed=1)
    basis = scorers._basis(x, "pca4", embedded=64)
    beta = scorers._newton(basis.apply(x), y, 10.0)
    direct = basis.apply(x) @ beta[:-1] + beta[-1]
    saved = scorers.candidates
    try:
        scorers.candidates = lambda embedded: ("pca4",)
        fitted = scorers.fit_score(x, y, embedded=64, seed=0)
    finally:
        scorers.candidates = saved
    assert fitted.weights.shape == (x.shape[1],) and fitted.name == "pca4"
    if fitted.l2 == 10.0:
        assert np.allclose(_logits(fitted, x), direct, atol=1e-8)
    # Whatever the penalty, the exported form scores like the candidate it came from.
    basis_beta = scorers._newton(basis.apply(x), y, fitted.l2)
    assert np.allclose(_logits(fitted, x), basis.apply(x) @ basis_beta[:-1] + basis_beta[-1])


def test_the_full_model_in_the_cases_span_is_the_full_model() -> None:
    # Fewer cases than features: solving in the span of the cases gives the same weights
    # as the 67-dimensional Newton fit, far cheaper at 390 features.
    x, y = _clustered(40, seed=2)
    _, scale, weights, bias = fit_logistic(x, y, l2=10.0)
    basis = scorers._basis(x, "full", embedded=64)
    assert basis.proj.shape[1] < x.shape[1]
    beta = scorers._newton(basis.apply(x), y, 10.0)
    folded = basis.proj @ (beta[:-1] / basis.scale)
    assert np.allclose(folded, weights / scale, atol=1e-6)
    assert abs(beta[-1] - bias) < 1e-6


def test_the_score_model_and_its_selection_never_see_the_calibration_cases() -> None:
    # fit_router's model (which candidate, which penalty, which weights) comes from the
    # fit half alone: flipping a calibration case's outcome changes none of it.
    x, y = _clustered(120, seed=7, width=EMBEDDING_DIM, extra=6)
    kwargs = dict(max_loss=0.1, alpha=0.1, recipe=_recipe(x.shape[1]), seed=3)
    first = fit_router(x, y, np.ones(len(y)), **kwargs)
    order = np.random.default_rng(3).permutation(len(y))
    calibration = order[first.evidence["n_fit"] :]
    flipped = y.copy()
    flipped[calibration[:5]] = 1 - flipped[calibration[:5]]
    second = fit_router(x, flipped, np.ones(len(y)), **kwargs)
    assert second.weights == first.weights and second.bias == first.bias
    assert second.evidence["scorer"] == first.evidence["scorer"]
    assert second.evidence["l2"] == first.evidence["l2"]
    # ...while a fit case's outcome does reach it.
    refit = y.copy()
    refit[order[:5]] = 1 - refit[order[:5]]
    assert fit_router(x, refit, np.ones(len(y)), **kwargs).weights != first.weights


def test_selection_is_deterministic_and_records_what_it_chose() -> None:
    x, y = _clustered(90, seed=3)
    first = scorers.fit_score(x, y, embedded=64, seed=4)
    again = scorers.fit_score(x, y, embedded=64, seed=4)
    assert first.name == again.name and np.array_equal(first.weights, again.weights)
    assert first.name in scorers.candidates(64) and first.l2 in scorers.L2_GRID
    assert first.inner_log_loss is not None and 0 < first.inner_log_loss < np.log(2)


def test_without_an_embedding_only_the_full_model_is_a_candidate() -> None:
    assert scorers.candidates(0) == ("full",)
    x = np.random.default_rng(5).standard_normal((60, 4))
    y = (x[:, 0] > 0).astype(float)
    fitted = scorers.fit_score(x, y, embedded=0)
    assert fitted.name == "full" and fitted.weights[0] > 0


def test_one_class_and_tiny_fits_do_not_select() -> None:
    x = np.random.default_rng(6).standard_normal((30, 5))
    constant = scorers.fit_score(x, np.ones(30), embedded=0)
    assert constant.name == "constant" and not constant.weights.any() and constant.bias > 0
    tiny = scorers.fit_score(x[:10], (x[:10, 0] > 0).astype(float), embedded=0)
    assert tiny.inner_log_loss is None and tiny.l2 == scorers.L2_GRID[-1]
