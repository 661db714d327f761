"""Seeded simulation of the whole router pipeline where the truth is known (offline only).

Cases have ``dim`` standard Gaussian features. The small config answers case x correctly
with probability ``p_small(x) = sigmoid(a + b * x[0] + c * x[1])`` (the other features are
noise the model must learn to ignore); the large config answers correctly with
probability ``large_accuracy``, independently. A case's loss from routing it small is
``clip(q_large - q_small, 0, 1)`` (:func:`evalgate.routing.fit.small_loss`), so its
expected loss given x is ``large_accuracy * (1 - p_small(x))``, and the true expected loss
of any router is computable on a large fresh sample.

Each trial draws ``n`` i.i.d. cases (the guarantee's assumption holds by construction) and:

* fits and certifies the router that would be exported
  (:func:`evalgate.routing.fit.fit_router`) and measures its TRUE expected loss on the
  fresh sample: the share of trials where it exceeds ``max_loss`` estimates the
  guarantee's failure rate (target: at most ``alpha``);
* cross-fits the routed config on its own cases (:func:`evalgate.routing.fit.cross_fit`),
  as the report does, and compares its realised loss with a random router that sends the
  same share of these cases to the small config (the routing literature's baseline).

The oracle routes by the true ``p_small`` and sends as much as it can while its true loss
stays at ``max_loss``: the share no router can beat at that bound.
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
    """Averages over the trials (shares are of requests; losses are per request)."""

    trials: int
    violation_rate: float  # share of trials whose exported router's true loss > max_loss
    none_certified: int  # trials whose exported router certified nothing (all large)
    mean_true_loss: float  # exported router's true expected loss
    mean_small_share: float  # exported router's small share, on fresh cases
    oracle_share: float  # routing by the true p_small, at true loss = max_loss
    mean_crossfit_share: float  # cross-fitted routed config, on the trial's cases
    mean_crossfit_loss: float  # its realised loss against always-large
    mean_random_loss: float  # a random router at the same small share, same cases
    wins_over_random: float  # share of trials (with something routed) where it is lower


def _p_small(x: np.ndarray, coef: tuple[float, float, float]) -> np.ndarray:
    a, b, c = coef
    return 1.0 / (1.0 + np.exp(-(a + b * x[:, 0] + c * x[:, 1])))


def oracle_share(expected_loss: np.ndarray, max_loss: float) -> float:
    """Largest share routed small, safest cases first, with mean loss <= max_loss."""
    ordered = np.sort(expected_loss)
    cumulative = np.cumsum(ordered) / len(ordered)
    return float(np.searchsorted(cumulative, max_loss, side="right")) / len(ordered)


def simulate(
    *,
    n: int = 400,
    dim: int = 6,
    max_loss: float = 0.05,
    alpha: float = 0.1,
    trials: int = 100,
    seed: int = 0,
    coef: tuple[float, float, float] = (1.5, 2.5, 1.0),
    large_accuracy: float = 1.0,
    k: int = 5,
    fresh: int = 100_000,
) -> RouterSimulation:
    """Run ``trials`` seeded trials (see the module docstring); deterministic in ``seed``."""
    if not 0.0 < large_accuracy <= 1.0:
        raise ValueError(f"large_accuracy: {large_accuracy!r} is not in (0, 1]")
    recipe = synthetic_recipe(dim)
    rng = np.random.default_rng(seed)
    x_fresh = rng.standard_normal((fresh, dim))
    loss_fresh = large_accuracy * (1.0 - _p_small(x_fresh, coef))  # E[loss | x]
    violations = none = wins = contests = 0
    true_losses, shares, cf_shares, cf_losses, random_losses = [], [], [], [], []
    for t in range(trials):
        x = rng.standard_normal((n, dim))
        q_small = (rng.random(n) < _p_small(x, coef)).astype(float)
        q_large = (rng.random(n) < large_accuracy).astype(float)
        options = dict(max_loss=max_loss, alpha=alpha, recipe=recipe, seed=t)
        model = fit_router(x, q_small, q_large, **options)
        routed = model.route_small(x_fresh)
        true_loss = float(np.mean(loss_fresh * routed))
        violations += true_loss > max_loss
        none += model.threshold is None
        true_losses.append(true_loss)
        shares.append(float(routed.mean()))
        cf = cross_fit(x, q_small, q_large, k=k, **options)
        losses = np.clip(q_large - q_small, 0.0, 1.0)
        cf_loss = float(np.mean(losses * cf.route_small))
        random_loss = cf.small_share * float(np.mean(losses))  # its expectation
        if cf.small_share > 0:
            contests += 1
            wins += cf_loss < random_loss
        cf_shares.append(cf.small_share)
        cf_losses.append(cf_loss)
        random_losses.append(random_loss)
    return RouterSimulation(
        trials=trials,
        violation_rate=violations / trials,
        none_certified=none,
        mean_true_loss=float(np.mean(true_losses)),
        mean_small_share=float(np.mean(shares)),
        oracle_share=oracle_share(loss_fresh, max_loss),
        mean_crossfit_share=float(np.mean(cf_shares)),
        mean_crossfit_loss=float(np.mean(cf_losses)),
        mean_random_loss=float(np.mean(random_losses)),
        wins_over_random=wins / contests if contests else 0.0,
    )
