"""The exported router model: scoring, routing, a strict JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evalgate.routing.features import EXTRA_FEATURES, FeatureRecipe
from evalgate.routing.model import RouterModel


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
        (lambda d: d.__setitem__("version", True), "router.version"),
        (lambda d: d["mean"].__setitem__(0, float("inf")), "router.mean"),
        (lambda d: d.__setitem__("threshold", float("nan")), "router.threshold"),
        (lambda d: d.__setitem__("bias", True), "router.bias"),
        (lambda d: d.__setitem__("evidence", [1]), "router.evidence"),
        (lambda d: d.__setitem__("recipe", None), "router.recipe"),
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


def test_scoring_features_of_the_wrong_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^router: features have 4 columns, the recipe has 3$"):
        _model().score(np.zeros((2, 4)))


def test_a_router_exported_before_the_word_piece_cap_still_loads_and_routes_alike() -> None:
    # Policies written with recipe version 1 (the embedding read up to MiniLM's own 256
    # pieces) keep working: the model reads them as they were fit and writes them back.
    data = _model().to_dict()
    data["recipe"] = {
        "version": 1,
        "embedding_model": "m",
        "embedding": False,
        "extra": list(EXTRA_FEATURES)[:3],
    }
    model = RouterModel.from_dict(json.loads(json.dumps(data)))
    assert model.recipe.version == 1 and model.recipe.max_word_pieces is None
    assert model.to_dict() == data
    x = np.array([[1.0, 0.0, 0.0], [-3.0, 2.0, 0.0]])
    assert model.route_small(x).tolist() == [True, False]
