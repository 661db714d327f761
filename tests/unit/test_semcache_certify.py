"""The certified threshold's guarantee under stream dependence (issue 16, items 2 and 5).

Wrong hits in a replayed stream come in bursts (every request served by one bad stored
answer is wrong together), so calibration counts the hits one entry serves as one unit:
the "clustered" p-value of evalgate.stats.ltt. These tests pin that p-value down exactly
and check, on a seeded simulation with known truth, that the certified threshold breaks
its bound in at most alpha of trials (up to Monte Carlo error) while the per-request
binomial test it replaced does not.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binom

from evalgate.semcache.certify import calibrate
from evalgate.semcache.replay import EXACT, Replay
from evalgate.semcache.simulate import compare
from evalgate.stats.ltt import binomial_p_value, clustered_p_value, learn_then_test


def _brute_force(n_losses: int, sizes: list[int], q: float) -> float:
    """P(sum of the sizes of the units lost <= n_losses), units lost i.i.d. with prob q."""
    total = 0.0
    for lost in itertools.product((0, 1), repeat=len(sizes)):
        if sum(w * b for w, b in zip(sizes, lost, strict=True)) <= n_losses:
            total += math.prod(q if b else 1 - q for b in lost)
    return total


def test_clustered_p_value_is_the_exact_tail_of_whole_units_lost():
    sizes, n, bound = [1, 2, 3, 5, 5], 60, 0.1  # q = 6 / 16
    for losses in range(0, 8):
        expected = max(
            _brute_force(losses, sizes, bound * n / sum(sizes)), binom.cdf(losses, n, bound)
        )
        assert clustered_p_value(losses, sizes, n, bound) == pytest.approx(expected)


def test_clustered_p_value_with_singleton_units_is_the_binomial_one():
    assert clustered_p_value(3, [1] * 200, 200, 0.05) == pytest.approx(
        binomial_p_value(3, 200, 0.05)
    )


def test_one_big_unit_is_weak_evidence_however_many_requests():
    # 100 requests, 10 of them served by one entry, none wrong: the entry may still be a
    # bad answer with probability 1/2 under the null, so nothing is certified.
    assert clustered_p_value(0, [10], 100, 0.05) == pytest.approx(0.5)
    assert binomial_p_value(0, 100, 0.05) < 0.01  # what the per-request test claimed


def test_clustered_p_value_is_never_below_the_per_request_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(1, 6, size=rng.integers(1, 30)).tolist()
        n = int(sum(sizes) + rng.integers(0, 100))
        losses = int(rng.integers(0, sum(sizes) + 1))
        assert clustered_p_value(losses, sizes, n, 0.05) >= binomial_p_value(losses, n, 0.05)


def test_learn_then_test_with_units_uses_the_clustered_p_value():
    losses = np.array([[0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=float)
    units = np.array([[-1, 0, 0, -1, 1, -1], [-1, 0, 0, -1, 1, -1]])
    result = learn_then_test(losses, bound=0.2, alpha=0.1, units=units)
    assert result.method == "clustered"
    assert result.p_values[0] == pytest.approx(clustered_p_value(0, [2, 1], 6, 0.2))
    assert result.p_values[1] == pytest.approx(clustered_p_value(2, [2, 1], 6, 0.2))


@pytest.mark.parametrize(
    ("units", "match"),
    [
        (np.array([[-1, 0, 0]]), "labelled -1"),  # a loss where no loss can happen
        (np.array([[0, 0]]), "shaped like the losses"),
        (np.array([[0.0, 0.0, 1.0]]), "integer labels"),
        (np.array([[-2, 0, 0]]), ">= 0, or -1"),
    ],
)
def test_bad_units_are_rejected(units, match):
    with pytest.raises(ValueError, match=match):
        learn_then_test(np.array([[1.0, 0.0, 0.0]]), bound=0.2, alpha=0.1, units=units)


def test_units_go_with_the_clustered_method_only():
    with pytest.raises(ValueError, match="exactly when"):
        learn_then_test(np.zeros((1, 3)), bound=0.2, alpha=0.1, method="clustered")
    with pytest.raises(ValueError, match="exactly when"):
        learn_then_test(
            np.zeros((1, 3)),
            bound=0.2,
            alpha=0.1,
            method="binomial",
            units=np.zeros((1, 3), dtype=int),
        )
    with pytest.raises(ValueError, match="0 or 1"):
        learn_then_test(
            np.full((1, 3), 0.5), bound=0.2, alpha=0.1, units=np.zeros((1, 3), dtype=int)
        )
    with pytest.raises(ValueError, match="inconsistent"):
        clustered_p_value(5, [2, 2], 10, 0.1)


def test_calibration_counts_the_hits_of_one_entry_as_one_draw():
    # 60 paraphrases of one intent, all within 0.9 of the first: at 0.9 the first call's
    # answer is served to the 59 others. It happened to be good, so no wrong hit; but that
    # is one draw of "is the stored answer good", not 59. The per-request test (before the
    # fix) certified 0.9 on it; the entry test keeps exact caching (no hits there).
    rng = np.random.default_rng(1)
    centre = np.ones(8) / math.sqrt(8)
    vectors = centre + 0.05 * rng.standard_normal((60, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    replay = Replay(
        ["k"] * 60, [str(i) for i in range(60)], vectors, [True] * 60, lambda i, j: True
    )
    grid = (EXACT, 0.9)
    run = replay.run(0.9)
    assert run.hit.sum() == 59 and set(run.served_from[1:].tolist()) == {0}
    assert replay.run(EXACT).hit.sum() == 0
    before = calibrate(replay, max_wrong_hit=0.05, alpha=0.1, grid=grid, units="requests")
    after = calibrate(replay, max_wrong_hit=0.05, alpha=0.1, grid=grid)
    assert before[0] == 0.9
    assert after[0] == EXACT
    assert after[1].p_values[1] == pytest.approx(1 - 0.05 * 60 / 59)


def test_unknown_calibration_units_are_rejected():
    replay = Replay(["k"], ["a"], np.ones((1, 2)) / math.sqrt(2), [True], lambda i, j: True)
    with pytest.raises(ValueError, match="units must be one of"):
        calibrate(replay, max_wrong_hit=0.05, alpha=0.1, units="tenants")


# The guarantee on a small grid of settings (seeded, so deterministic): the default
# population, and near-misses as popular as the intents they mimic (a near-miss stored
# first then serves a popular intent's paraphrases, all wrong). Each setting's violation
# rate must stay within alpha plus one Monte Carlo standard error of a rate alpha over
# this many trials. The cause is checked too, on the same streams: at a clearly unsafe
# threshold (true risk more than 2 standard errors above the bound) the per-request
# binomial p-value (what certify used before) rejects in more than alpha of the trials;
# the per-entry one does not.
GRID_SETTINGS = [{"seed": 0}, {"seed": 2, "popular_siblings": True}]


@pytest.mark.parametrize("setting", GRID_SETTINGS, ids=lambda s: f"seed{s['seed']}")
def test_certified_threshold_breaks_its_bound_in_at_most_alpha_of_trials(setting):
    trials, alpha = 100, 0.1
    requests, entries = compare(
        units=("requests", "entries"),
        n=300,
        trials=trials,
        fresh=400,
        max_wrong_hit=0.05,
        alpha=alpha,
        **setting,
    )
    mc_error = math.sqrt(alpha * (1 - alpha) / trials)
    assert entries.violation_rate <= alpha + mc_error, entries
    assert entries.probe_rejection <= alpha + mc_error, entries
    assert entries.none_certified < trials // 2  # still a usable cache
    assert entries.mean_true_risk < entries.fixed_080_risk
    assert requests.probe_rejection > alpha + mc_error, requests
    assert requests.dispersion > 1.5  # wrong hits are far from independent


def test_folds_that_hold_no_request_are_not_reported_as_uncertified():
    # 6 requests, 10 folds: 4 folds hold nothing. They certified nothing because they
    # scored nothing; the note must count only folds that held requests (before the fix
    # it said "10 of 10 folds certified nothing", as if every request were exact-cached
    # for lack of a threshold).
    from evalgate.semcache.certify import certify

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6, 8))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    replay = Replay(["k"] * 6, [str(i) for i in range(6)], vectors, [True] * 6, lambda i, j: True)
    cert = certify(replay, max_wrong_hit=0.1, alpha=0.1, k=10)
    assert len(cert.fold_thresholds) == 10
    counted = [n for n in cert.notes if "certified nothing (exact caching" in n]
    assert counted == ["6 of 6 folds holding requests certified nothing (exact caching there)"]
