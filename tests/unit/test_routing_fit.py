"""Fitting and certifying a router: logistic model, LTT calibration, cross-fitting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evalgate.routing.fit import calibrate, cross_fit, fit_logistic, fit_router, small_loss
from evalgate.routing.model import RouterModel
from evalgate.routing.simulate import SIM_RECIPE


def test_logistic_regression_recovers_a_separating_direction() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 5))
    y = (x[:, 2] - 0.5 * x[:, 0] + 0.3 * rng.standard_normal(400) > 0).astype(float)
    _, _, weights, _ = fit_logistic(x, y)
    direction = weights / np.linalg.norm(weights)
    assert direction[2] > 0.8 and direction[0] < -0.3
    assert abs(direction[1]) < 0.2


def test_one_class_labels_give_a_constant_score() -> None:
    x = np.random.default_rng(2).standard_normal((30, 4))
    _, _, weights, bias = fit_logistic(x, np.ones(30))
    assert not weights.any() and bias > 0


def test_small_loss_is_the_quality_lost_and_never_a_gain() -> None:
    assert small_loss([1, 0, 0.5, 1], [1, 1, 1, 0]).tolist() == [0.0, 1.0, 0.5, 0.0]


def test_nothing_certified_with_too_few_calibration_cases() -> None:
    # Zero losses on 20 cases cannot certify 0.02 at alpha 0.05: (0.98)^20 = 0.67.
    threshold, test = calibrate(np.linspace(0, 1, 20), np.zeros(20), max_loss=0.02, alpha=0.05)
    assert threshold is None and test.n_certified == 0
    # With 300 loss-free cases, everything can go small.
    threshold, _ = calibrate(np.linspace(0, 1, 300), np.zeros(300), max_loss=0.02, alpha=0.05)
    assert threshold == 0.0


def test_calibration_stops_where_the_losses_begin() -> None:
    scores = np.linspace(1, 0, 1000)  # high scores are safe, low ones lose
    losses = (scores < 0.5).astype(float)
    threshold, test = calibrate(scores, losses, max_loss=0.05, alpha=0.05)
    assert threshold is not None and 0.4 < threshold < 0.5
    assert test.method == "binomial"


def test_cross_fit_never_decides_a_case_with_its_own_outcome() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 4))
    q_small = (rng.random(300) < 1 / (1 + np.exp(-2 * x[:, 0] - 1.5))).astype(float)
    q_large = np.ones(300)
    kwargs = dict(max_loss=0.1, alpha=0.1, recipe=SIM_RECIPE, k=5, seed=4)
    first = cross_fit(x, q_small, q_large, **kwargs)
    for case in (0, 17, 123):
        flipped = q_small.copy()
        flipped[case] = 1 - flipped[case]
        second = cross_fit(x, flipped, q_large, **kwargs)
        assert second.route_small[case] == first.route_small[case]
        assert second.scores[case] == first.scores[case]
        # ...while the other folds' models did see it.
        others = first.fold != first.fold[case]
        assert np.array_equal(first.fold, second.fold) and others.any()


def test_fit_router_keeps_fit_and_calibration_disjoint_and_records_evidence() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((401, 4))
    q_small = (x[:, 0] > -0.5).astype(float)
    model = fit_router(
        x, q_small, np.ones(401), max_loss=0.05, alpha=0.1, recipe=SIM_RECIPE, seed=1
    )
    e = model.evidence
    assert e["n_fit"] + e["n_calibration"] == 401 and e["n_fit"] == 200
    assert e["certified"] and model.threshold is not None
    assert e["calibration_risk"] <= 0.05 + 1e-12 and e["p_value"] <= 0.1
    assert 0.4 < e["calibration_small_share"] <= 1.0


def test_a_fitted_router_round_trips_through_json_with_its_evidence() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((300, 4))
    q_small = (x[:, 0] > -0.5).astype(float)
    model = fit_router(
        x, q_small, np.ones(300), max_loss=0.05, alpha=0.1, recipe=SIM_RECIPE, seed=2
    )
    again = RouterModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    assert np.array_equal(again.route_small(x), model.route_small(x))


def test_calibrate_returns_none_when_every_threshold_loses_too_much() -> None:
    # Even the strictest threshold (only the top case small) loses 1/500 > 0.001.
    scores = np.linspace(1, 0, 500)
    threshold, test = calibrate(scores, np.ones(500), max_loss=0.001, alpha=0.05)
    assert threshold is None and test.chosen is None


def test_fit_inputs_are_checked_with_one_line_errors() -> None:
    x = np.zeros((10, 4))
    ok = dict(max_loss=0.05, alpha=0.1, recipe=SIM_RECIPE)
    cases = [
        ((np.zeros((10, 3)), np.ones(10), np.ones(10)), ok, "features"),
        ((x, np.full(10, np.nan), np.ones(10)), ok, "q_small"),
        ((x, np.ones(9), np.ones(10)), ok, "qualities"),
        ((x, np.ones(10), np.ones(10)), {**ok, "max_loss": float("nan")}, "max_loss"),
        ((x, np.ones(10), np.ones(10)), {**ok, "alpha": 0.0}, "alpha"),
        ((x, np.ones(10), np.ones(10)), {**ok, "fit_share": 1.0}, "fit_share"),
    ]
    for args, kwargs, key in cases:
        with pytest.raises(ValueError, match=rf"^{key}: [^\n]*$"):
            fit_router(*args, **kwargs)
    with pytest.raises(ValueError, match=r"^k: "):
        cross_fit(x, np.ones(10), np.ones(10), k=1, **ok)


def test_too_few_cases_route_everything_large_in_every_fold() -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 4))
    q_small = (x[:, 0] > 0).astype(float)
    cf = cross_fit(x, q_small, np.ones(40), max_loss=0.02, alpha=0.05, recipe=SIM_RECIPE)
    assert cf.certified_folds == 0 and not cf.route_small.any()


def test_calibrate_refuses_mismatched_or_non_finite_inputs() -> None:
    with pytest.raises(ValueError, match=r"^scores: \(1,\) do not match losses \(2,\)$"):
        calibrate(np.array([0.5]), np.zeros(2), max_loss=0.05, alpha=0.1)
    with pytest.raises(ValueError, match=r"^scores: every value must be finite$"):
        calibrate(np.array([0.5, np.nan]), np.zeros(2), max_loss=0.05, alpha=0.1)
    with pytest.raises(ValueError, match="losses must be finite"):
        calibrate(np.array([0.5, 0.6]), np.array([0.0, 2.0]), max_loss=0.05, alpha=0.1)


def test_fewer_cases_than_features_solve_the_same_model_in_their_span() -> None:
    # A demo fold: ~88 cases, 390 features. Solving in the cases' span is the same model
    # as the dense 390-dimensional Newton fit.
    from evalgate.routing.fit import _newton, _newton_dense

    rng = np.random.default_rng(9)
    z = rng.standard_normal((60, 150))
    y = (z[:, 0] + 0.5 * rng.standard_normal(60) > 0).astype(float)
    for l2 in (1.0, 10.0, 100.0):
        assert np.allclose(_newton(z, y, l2), _newton_dense(z, y, l2, 50), atol=1e-6)


def test_the_score_model_never_sees_the_calibration_cases() -> None:
    # fit_router's weights come from the fit half alone: flipping a calibration case's
    # outcome changes none of them (only, possibly, the certified threshold)...
    rng = np.random.default_rng(10)
    x = rng.standard_normal((120, 4))
    y = (x[:, 0] + rng.standard_normal(120) > 0).astype(float)
    kwargs = dict(max_loss=0.1, alpha=0.1, recipe=SIM_RECIPE, seed=3)
    first = fit_router(x, y, np.ones(120), **kwargs)
    order = np.random.default_rng(3).permutation(120)
    n_fit = first.evidence["n_fit"]
    flipped = y.copy()
    flipped[order[n_fit : n_fit + 5]] = 1 - flipped[order[n_fit : n_fit + 5]]
    second = fit_router(x, flipped, np.ones(120), **kwargs)
    assert second.weights == first.weights and second.bias == first.bias
    # ...while a fit case's outcome does reach them.
    refit = y.copy()
    refit[order[:5]] = 1 - refit[order[:5]]
    assert fit_router(x, refit, np.ones(120), **kwargs).weights != first.weights
