"""Seeded simulation of the whole router pipeline where the truth is known.

Cases have ``dim`` Gaussian features; the small config answers case x correctly with
probability ``sigmoid(a + b * x[0] + c * x[1])`` and the large config always does, so
the true expected loss of any router is computable on a large fresh sample. Each trial
draws ``n`` cases, fits and certifies a router (:func:`evalgate.routing.fit.fit_router`)
and measures its true loss: the share of trials where it exceeds ``max_loss`` estimates
the guarantee's failure rate (target <= alpha). Each trial also cross-fits the routed
config on its cases and compares it with a random router sending the same share to the
small config (the routing literature's baseline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evalgate.routing.features import EXTRA_FEATURES, FeatureRecipe
from evalgate.routing.fit import cross_fit, fit_router


def synthetic_recipe(dim: int) -> FeatureRecipe:
    """A recipe of width ``dim`` for synthetic features (the names only fix the width)."""
    if not 1 <= dim <= len(EXTRA_FEATURES):
        raise ValueError(f"dim: {dim} synthetic features; 1 to {len(EXTRA_FEATURES)} supported")
    return FeatureRecipe("simulation", embedding=False, extra=tuple(EXTRA_FEATURES)[:dim])


SIM_RECIPE = synthetic_recipe(4)


@dataclass(frozen=True, slots=True)
class RouterSimulation:
    trials: int
    violation_rate: float  # share of trials whose exported router's true loss > max_loss
    none_certified: int
    mean_small_share: float  # exported router, on fresh cases
    oracle_share: float  # routing by the true probability, at true loss = max_loss
    mean_crossfit_loss: float  # realised loss of the cross-fitted routed config
    mean_random_loss: float  # a random router at the same small-tier share
    mean_crossfit_share: float


def _truth(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(a + b * x[:, 0] + c * x[:, 1])))


def simulate(
    *,
    n: int = 400,
    dim: int = 6,
    max_loss: float = 0.05,
    alpha: float = 0.1,
    trials: int = 100,
    seed: int = 0,
    coef: tuple[float, float, float] = (1.5, 2.5, 1.0),
    fresh: int = 20000,
) -> RouterSimulation:
    recipe = synthetic_recipe(dim)
    rng = np.random.default_rng(seed)
    xf = rng.standard_normal((fresh, dim))
    pf = _truth(xf, *coef)
    order = np.argsort(-pf)
    cumulative = np.cumsum(1.0 - pf[order]) / fresh
    oracle_share = float(np.searchsorted(cumulative, max_loss, side="right")) / fresh
    violations = none = 0
    shares, cf_losses, random_losses, cf_shares = [], [], [], []
    for t in range(trials):
        x = rng.standard_normal((n, dim))
        q_small = (rng.random(n) < _truth(x, *coef)).astype(float)
        q_large = np.ones(n)
        model = fit_router(
            x, q_small, q_large, max_loss=max_loss, alpha=alpha, recipe=recipe, seed=t
        )
        routed = model.route_small(xf)
        true_loss = float(np.mean((1.0 - pf) * routed))
        violations += true_loss > max_loss
        none += model.threshold is None
        shares.append(float(routed.mean()))
        cf = cross_fit(x, q_small, q_large, max_loss=max_loss, alpha=alpha, recipe=recipe, seed=t)
        losses = 1.0 - q_small
        cf_losses.append(float(np.mean(losses * cf.route_small)))
        random_losses.append(cf.small_share * float(np.mean(losses)))
        cf_shares.append(cf.small_share)
    return RouterSimulation(
        trials=trials,
        violation_rate=violations / trials,
        none_certified=none,
        mean_small_share=float(np.mean(shares)),
        oracle_share=oracle_share,
        mean_crossfit_loss=float(np.mean(cf_losses)),
        mean_random_loss=float(np.mean(random_losses)),
        mean_crossfit_share=float(np.mean(cf_shares)),
    )
