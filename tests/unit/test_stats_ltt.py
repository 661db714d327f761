"""Learn-then-Test (evalgate.stats.ltt): p-values, fixed-sequence testing, validity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from evalgate.stats.ltt import (
    binomial_p_value,
    certified_thresholds,
    fixed_sequence,
    hoeffding_bentkus_p_value,
    learn_then_test,
)
from evalgate.stats.ltt_simulate import simulate


def test_binomial_p_value_is_the_lower_binomial_tail():
    assert binomial_p_value(3, 200, 0.05) == pytest.approx(binom.cdf(3, 200, 0.05))
    # No loss in n cases: (1 - bound)^n, the smallest p-value n cases can give.
    assert binomial_p_value(0, 100, 0.02) == pytest.approx(0.98**100)


def test_hoeffding_bentkus_is_the_smaller_of_its_two_bounds():
    n, mean, bound = 400, 0.01, 0.03
    kl = mean * math.log(mean / bound) + (1 - mean) * math.log((1 - mean) / (1 - bound))
    hoeffding = math.exp(-n * kl)
    bentkus = math.e * binom.cdf(math.ceil(n * mean), n, bound)
    assert hoeffding_bentkus_p_value(mean, n, bound) == pytest.approx(min(hoeffding, bentkus))
    # An empirical risk above the bound is no evidence at all.
    assert hoeffding_bentkus_p_value(0.2, n, bound) == pytest.approx(1.0)


def test_fixed_sequence_stops_at_the_first_hypothesis_it_keeps():
    assert fixed_sequence([0.001, 0.01, 0.2, 0.001], 0.05) == 2
    assert fixed_sequence([0.3, 0.001], 0.05) == 0
    assert fixed_sequence([float("nan"), 0.001], 0.05) == 0


def test_learn_then_test_certifies_the_safe_prefix_only():
    rng = np.random.default_rng(0)
    n = 500
    # Candidate j loses on a share 0.005 * j of cases: 0%, 0.5%, ..., 4.5%.
    losses = np.array([(rng.random(n) < 0.005 * j).astype(float) for j in range(10)])
    result = learn_then_test(losses, bound=0.03, alpha=0.05)
    assert result.method == "binomial"
    assert 1 <= result.n_certified < 7  # never one whose true risk (>= 3%) breaks the bound
    assert result.chosen == result.n_certified - 1
    assert all(p <= 0.05 for p in result.p_values[: result.n_certified])
    assert result.p_values[result.n_certified] > 0.05


def test_continuous_losses_use_hoeffding_bentkus():
    losses = np.full((2, 300), 0.001)
    result = learn_then_test(losses, bound=0.05, alpha=0.05)
    assert result.method == "hoeffding-bentkus"
    assert result.n_certified == 2


def test_too_few_cases_certify_nothing():
    # 40 loss-free cases cannot show a 2% bound at alpha 5%: 0.98^40 = 0.45.
    result = learn_then_test(np.zeros((3, 40)), bound=0.02, alpha=0.05)
    assert result.n_certified == 0 and result.chosen is None


def test_certified_thresholds_returns_the_prefix_of_thresholds():
    thresholds = [0.9, 0.5, 0.1]
    losses = np.zeros((3, 1000))
    losses[2, :200] = 1.0
    certified, result = certified_thresholds(thresholds, losses, bound=0.05, alpha=0.05)
    assert certified == (0.9, 0.5)
    assert result.n_certified == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bound": 0.0, "alpha": 0.05}, "bound must be a number in (0, 1)"),
        ({"bound": float("nan"), "alpha": 0.05}, "bound must be a number in (0, 1)"),
        ({"bound": 0.05, "alpha": 1.0}, "alpha must be a number in (0, 1)"),
        ({"bound": 0.05, "alpha": 0.05, "method": "t"}, "method must be one of"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        learn_then_test(np.zeros((1, 10)), **kwargs)


@pytest.mark.parametrize("bad", [np.nan, -0.1, 1.5])
def test_losses_outside_the_unit_interval_are_refused(bad):
    losses = np.zeros((1, 10))
    losses[0, 3] = bad
    with pytest.raises(ValueError, match=r"losses must be finite numbers in \[0, 1\]"):
        learn_then_test(losses, bound=0.05, alpha=0.05)


def test_binomial_method_refuses_fractional_losses():
    with pytest.raises(ValueError, match="all 0 or 1"):
        learn_then_test(np.full((1, 10), 0.5), bound=0.05, alpha=0.05, method="binomial")


@pytest.mark.parametrize(
    ("n", "bound", "alpha", "binary"),
    [(300, 0.05, 0.1, True), (800, 0.02, 0.1, True), (300, 0.05, 0.1, False)],
)
def test_seeded_simulation_keeps_violations_within_alpha(n, bound, alpha, binary):
    trials = 600
    summary = simulate(n=n, bound=bound, alpha=alpha, binary=binary, trials=trials, seed=7)
    mc = math.sqrt(alpha * (1 - alpha) / trials)
    assert summary.violation_rate <= alpha + 2 * mc, summary
    # And it is not vacuous: the certified threshold sends real traffic to the small tier.
    assert summary.mean_small_share > 0.5 * summary.oracle_share, summary
