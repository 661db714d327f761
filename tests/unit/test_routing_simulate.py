"""The seeded simulation where the truth is known: the guarantee holds, routing pays."""

from __future__ import annotations

from evalgate.routing.simulate import simulate


def test_simulation_holds_the_guarantee_and_beats_a_random_router() -> None:
    result = simulate(n=400, trials=30, max_loss=0.05, alpha=0.1, seed=11)
    # 30 trials at a true failure rate <= 0.1: more than 8 failures has probability < 1%.
    assert result.violation_rate <= 8 / 30
    assert result.mean_crossfit_loss < 0.5 * result.mean_random_loss
    assert result.mean_small_share > 0.3
