"""The seeded simulation where the truth is known: the guarantee holds, routing pays."""

from __future__ import annotations

import numpy as np
import pytest

from evalgate.routing.simulate import oracle_share, simulate


def test_simulation_holds_the_guarantee_and_beats_a_random_router() -> None:
    result = simulate(n=400, trials=30, max_loss=0.05, alpha=0.1, seed=11)
    # 30 trials at a true failure rate <= 0.1: 9 or more failures has probability < 0.2%.
    assert result.violation_rate <= 8 / 30
    assert result.mean_true_loss <= 0.05
    # A clearly learnable task: the learned router loses far less than a random one
    # sending the same share small, in every trial, and reaches a good part of the oracle.
    assert result.wins_over_random == 1.0
    assert result.mean_crossfit_loss < 0.5 * result.mean_random_loss
    assert result.mean_small_share > 0.5 * result.oracle_share > 0.2


def test_simulation_with_a_fallible_large_tier() -> None:
    result = simulate(n=400, trials=10, large_accuracy=0.85, seed=12, fresh=20_000)
    assert result.violation_rate <= 4 / 10  # P(>= 5 of 10 at 0.1) < 0.2%
    assert result.wins_over_random == 1.0


def test_simulation_is_deterministic_in_its_seed() -> None:
    options = dict(n=200, trials=3, seed=5, fresh=5_000)
    assert simulate(**options) == simulate(**options)


def test_unlearnable_features_route_little_and_still_hold_the_bound() -> None:
    # Success does not depend on the features: no router beats random, and the bound holds.
    result = simulate(n=400, trials=10, coef=(1.0, 0.0, 0.0), seed=13, fresh=20_000)
    assert result.violation_rate <= 4 / 10
    assert result.mean_true_loss <= 0.05


def test_oracle_share_takes_the_safest_cases_first() -> None:
    assert oracle_share(np.array([0.0, 0.0, 0.2, 0.5]), 0.05) == 0.75
    assert oracle_share(np.array([0.5, 0.5]), 0.05) == 0.0


def test_simulation_refuses_impossible_settings() -> None:
    with pytest.raises(ValueError, match=r"^large_accuracy: "):
        simulate(large_accuracy=0.0, trials=1)
    with pytest.raises(ValueError, match=r"^dim: "):
        simulate(dim=40, trials=1)


def test_the_simulation_catches_a_threshold_without_the_guarantee(monkeypatch) -> None:
    # The measuring instrument has power: cut where the calibration risk merely reaches
    # max_loss (no Learn-then-Test) and the true loss exceeds the bound in about half
    # the trials, far above alpha.
    import evalgate.routing.fit as fit

    def naive(scores, losses, *, max_loss, alpha, method="auto"):
        thresholds = fit.candidate_thresholds(np.asarray(scores))
        risks = [np.mean(losses * (scores >= t)) for t in thresholds]
        ok = [t for t, r in zip(thresholds, risks, strict=True) if r <= max_loss]
        return (float(min(ok)) if ok else None), None

    monkeypatch.setattr(fit, "calibrate", naive)
    result = simulate(n=400, trials=20, seed=14, fresh=20_000)
    assert result.violation_rate >= 0.3
