"""The exported router: standardise the features, score with a logistic model, cut.

``score`` is the model's probability that the small config's answer is as good as the
large one's; a request goes to the small config when its score reaches ``threshold``.
The threshold is the one Learn-then-Test certified on calibration cases the model was not
fit on (:mod:`evalgate.routing.fit`); ``None`` means nothing could be certified, and the
router then sends everything to the large config. Numpy only: applications import this.

The threshold's guarantee (expected loss against always-large at most ``max_loss`` with
probability >= 1 - alpha, recorded in ``evidence``) holds for requests distributed like
the calibration cases, scored with the same features: hence the recipe, with the
embedding model's identity, travels with the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalgate.routing.features import FeatureRecipe

MODEL_VERSION = 1


def _floats(data: Mapping[str, Any], key: str, width: int | None) -> tuple[float, ...]:
    values = data.get(key)
    if not isinstance(values, list | tuple):
        raise ValueError(f"router.{key}: expected a list of numbers")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise ValueError(f"router.{key}: expected a list of numbers")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"router.{key}: expected a list of numbers") from None
    if width is not None and len(out) != width:
        raise ValueError(
            f"router.{key}: expected {width} numbers (the recipe's width), got {len(out)}"
        )
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"router.{key}: every number must be finite")
    return out


@dataclass(frozen=True, slots=True)
class RouterModel:
    """A fitted, calibrated router (see the module docstring)."""

    recipe: FeatureRecipe
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float | None
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def score(self, features: np.ndarray) -> np.ndarray:
        """P(small is as good as large) per row of ``features`` (n, recipe.width)."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != len(self.weights):
            raise ValueError(
                f"router: features have {x.shape[-1]} columns, the recipe has {len(self.weights)}"
            )
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        logits = z @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))

    def route_small(self, features: np.ndarray) -> np.ndarray:
        """Per row: True when the request goes to the small config."""
        scores = self.score(features)
        if self.threshold is None:
            return np.zeros(len(scores), dtype=bool)
        return scores >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MODEL_VERSION,
            "recipe": self.recipe.to_dict(),
            # Plain floats: the dict is written into a policy module as literal data.
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "weights": [float(v) for v in self.weights],
            "bias": float(self.bias),
            "threshold": None if self.threshold is None else float(self.threshold),
            "evidence": dict(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: Any) -> RouterModel:
        """A model from :meth:`to_dict`'s output; anything else is a one-line ValueError."""
        if not isinstance(data, Mapping):
            raise ValueError(f"router: expected a mapping, got {type(data).__name__}")
        version = data.get("version")
        if type(version) is not int or version != MODEL_VERSION:
            raise ValueError(
                f"router.version: {data.get('version')!r} is not a router version this "
                f"evalgate reads ({MODEL_VERSION})"
            )
        recipe = FeatureRecipe.from_dict(data.get("recipe"), "router.recipe")
        width = recipe.width
        mean = _floats(data, "mean", width)
        scale = _floats(data, "scale", width)
        if any(s <= 0 for s in scale):
            raise ValueError("router.scale: every number must be positive")
        weights = _floats(data, "weights", width)
        bias = _floats({"bias": [data.get("bias")]}, "bias", 1)[0]
        threshold = data.get("threshold")
        if threshold is not None:
            threshold = _floats({"threshold": [threshold]}, "threshold", 1)[0]
            if not 0 <= threshold <= 1:
                raise ValueError("router.threshold: must be in [0, 1] or null")
        evidence = data.get("evidence") or {}
        if not isinstance(evidence, Mapping):
            raise ValueError("router.evidence: expected a mapping")
        return cls(recipe, mean, scale, weights, bias, threshold, dict(evidence))
