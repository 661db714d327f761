"""Non-inferiority tests, Holm and planning numbers against references and known identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

from evalgate.stats import (
    NonInferiorityVerdict as Verdict,
)
from evalgate.stats import (
    holm,
    identical_noninferiority,
    min_detectable_margin,
    n_needed,
    noninferiority_test,
    paired_t_noninferiority,
    tango_interval,
    tango_noninferiority,
    tango_statistic,
)

TABLES = [(5, 12, 100), (0, 3, 50), (20, 8, 200), (7, 7, 60), (30, 41, 500), (1, 0, 20)]


@pytest.mark.parametrize("b, c, n", TABLES)
def test_tango_with_zero_margin_is_mcnemar_score_statistic(b, c, n):
    assert tango_statistic(b, c, n, 0.0) == pytest.approx((b - c) / math.sqrt(b + c))


@pytest.mark.parametrize("b, c, n", TABLES)
@pytest.mark.parametrize("margin", [0.02, 0.05, 0.1])
def test_tango_variance_uses_the_restricted_mle(b, c, n, margin):
    # Independent check of Tango's closed form: maximise the multinomial likelihood under
    # p10 - p01 = -margin numerically and rebuild the score statistic from it.
    d0 = -margin
    m = n - b - c

    def neg_loglik(q):  # q = p01; p10 = q + d0; the concordant cells share the rest
        return -(b * np.log(q + d0) + c * np.log(q) + m * np.log(1 - 2 * q - d0))

    fit = optimize.minimize_scalar(
        neg_loglik,
        bounds=(margin + 1e-12, (1 - d0) / 2 - 1e-12),
        method="bounded",
        options={"xatol": 1e-13},
    )
    z_ref = (b - c - n * d0) / math.sqrt(n * (2 * fit.x + d0 - d0**2))
    assert tango_statistic(b, c, n, margin) == pytest.approx(z_ref, rel=1e-6)


def test_tango_is_vectorised_and_p_is_upper_normal_tail():
    b, c, n = np.array([5, 20]), np.array([12, 8]), np.array([100, 200])
    z = tango_statistic(b, c, n, 0.05)
    assert z.shape == (2,)
    cand = np.r_[np.ones(5), np.zeros(12), np.ones(60), np.zeros(23)]
    base = np.r_[np.zeros(5), np.ones(12), np.ones(60), np.zeros(23)]
    z1, p1 = tango_noninferiority(cand, base, 0.05)
    assert z1 == pytest.approx(z[0])
    assert p1 == pytest.approx(stats.norm.sf(z[0]))


def test_tango_interval_inverts_the_test():
    b, c, n = 12, 20, 300
    lower, upper = tango_interval(b, c, n, level=0.90)
    z_crit = stats.norm.ppf(0.95)
    assert tango_statistic(b, c, n, -lower) == pytest.approx(z_crit, abs=1e-6)
    assert tango_statistic(b, c, n, -upper) == pytest.approx(-z_crit, abs=1e-6)
    assert lower < (b - c) / n < upper


def test_tango_rejects_non_binary_input():
    with pytest.raises(ValueError, match="binary"):
        tango_noninferiority([0.5, 1.0], [1.0, 1.0], 0.05)


def test_paired_t_matches_scipy_one_sample_t_on_shifted_differences():
    d = np.random.default_rng(1).normal(-0.01, 0.2, 150)
    t, p = paired_t_noninferiority(d, 0.05)
    ref = stats.ttest_1samp(d + 0.05, 0.0, alternative="greater")
    assert (t, p) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))


@pytest.mark.parametrize("m", [1, 3, 7])
def test_holm_matches_statsmodels(m):
    p = np.random.default_rng(m).uniform(0, 0.2, m)
    expected = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(holm(p), expected)


def test_holm_counts_untestable_hypotheses_in_the_family():
    adjusted = holm([0.01, np.nan, 0.04])
    as_one = multipletests([0.01, 1.0, 0.04], method="holm")[1]
    np.testing.assert_allclose(adjusted[[0, 2]], as_one[[0, 2]])
    assert np.isnan(adjusted[1])


def test_planning_numbers_reproduce_the_design_figures():
    # Paired binary, baseline 0.85, ρ=0.5, true Δ=0: Var(d) = 2·p10 = 0.1275.
    sd = math.sqrt(2 * (0.85 * 0.15 * 0.5))
    assert n_needed(sd, 0.05) == 316  # design: "~315 cases for 80% power"
    assert 1900 < n_needed(sd, 0.02) < 2000  # design: "δ=.02 needs ~2000"
    mdm = min_detectable_margin(sd, 316)
    assert mdm == pytest.approx(0.05, abs=2e-4)
    assert n_needed(float("nan"), 0.05) is None


def test_identical_differences_use_the_exact_bound_not_a_zero_width_interval():
    # 58 identical pairs: 0.95**58 = 0.051 -> not enough; 59: 0.0485 -> PASS.
    for n, verdict in [
        (30, Verdict.INCONCLUSIVE),
        (58, Verdict.INCONCLUSIVE),
        (59, Verdict.PASS),
    ]:
        ni = noninferiority_test(np.zeros(n), margin=0.05, binary=True)
        assert ni.test == "exact-identical" and ni.identical
        assert ni.p_value == pytest.approx(0.95**n)
        assert ni.verdict() is verdict
        assert ni.lower < 0 < ni.upper  # never a zero-width interval
    ni = noninferiority_test(np.zeros(100), margin=0.05)
    assert ni.n_needed == 59
    assert ni.min_detectable_margin == pytest.approx(1 - 0.05 ** (1 / 100))
    # The same rule guards the building blocks.
    assert paired_t_noninferiority(np.zeros(30), 0.05)[1] == pytest.approx(0.95**30)
    assert tango_noninferiority(np.ones(30), np.ones(30), 0.05)[1] == pytest.approx(0.95**30)


def test_identical_bound_is_sharp_for_the_worst_null_law():
    # The law that hides a loss of δ best: d = -1 with probability δ, else 0.
    n, margin = 40, 0.05
    p, _, _, _ = identical_noninferiority(0.0, n, margin)
    assert p == pytest.approx((1 - margin) ** n)
    # Identical losses larger than the margin are a FAIL by the mirrored bound.
    ni = noninferiority_test(np.full(200, -0.2), margin=margin)
    assert ni.verdict() is Verdict.FAIL and ni.upper < -margin


def test_continuous_verdicts_pass_fail_inconclusive():
    rng = np.random.default_rng(2)
    good = noninferiority_test(rng.normal(0.0, 0.1, 400), margin=0.05)
    bad = noninferiority_test(rng.normal(-0.15, 0.1, 400), margin=0.05)
    unsure = noninferiority_test(rng.normal(-0.04, 0.3, 60), margin=0.05)
    assert (good.test, good.verdict()) == ("betting", Verdict.PASS)
    assert good.lower > -0.05
    assert bad.verdict() is Verdict.FAIL and bad.upper < -0.05
    assert unsure.verdict() is Verdict.INCONCLUSIVE
    assert unsure.n_needed > 60


def test_verdict_fail_is_the_upper_bound_below_minus_margin_for_tango():
    # FAIL uses the unadjusted upper bound; p_worse < α is the same statement.
    for b, c, n in [(2, 40, 300), (10, 30, 300), (20, 30, 300)]:
        d = np.r_[np.ones(b), -np.ones(c), np.zeros(n - b - c)]
        ni = noninferiority_test(d, margin=0.05, binary=True)
        assert ni.test == "tango"
        assert (ni.upper < -0.05) == (ni.p_worse < 0.05)
        assert (ni.lower > -0.05) == (ni.p_value < 0.05)


def test_binary_scores_with_groups_bet_on_group_means():
    d = np.r_[np.zeros(150), np.ones(10), -np.ones(20)]
    groups = np.arange(180) // 3
    ni = noninferiority_test(d, margin=0.05, binary=True, groups=groups)
    assert ni.test == "cluster-betting" and ni.n_units == 60
    # The same as betting on the 60 group means: the group is the independent unit.
    means = d.reshape(60, 3).mean(axis=1)
    alone = noninferiority_test(means, margin=0.05)
    assert (ni.p_value, ni.lower, ni.upper) == (alone.p_value, alone.lower, alone.upper)


@pytest.mark.parametrize("seed", range(5))
def test_verdict_interval_and_p_agree_for_the_betting_test(seed):
    rng = np.random.default_rng(seed)
    d = np.where(rng.random(200) < 0.06, -rng.uniform(0.3, 1.0, 200), rng.normal(0.01, 0.05, 200))
    ni = noninferiority_test(np.clip(d, -1, 1), margin=0.05, seed=seed)
    assert ni.test == "betting"
    assert (ni.p_value < 0.05) == (ni.lower > -0.05)
    assert (ni.p_worse < 0.05) == (ni.upper < -0.05)
    assert ni.lower < float(np.clip(d, -1, 1).mean()) < ni.upper
    # The bound is the test inverted: at the bound the capital is exactly 1/α.
    from evalgate.stats.noninferiority import betting_noninferiority

    p_at_bound = betting_noninferiority(np.clip(d, -1, 1), -ni.lower, seed=seed)[1]
    assert p_at_bound == pytest.approx(0.05, rel=1e-6)


def test_few_discordant_pairs_leave_tango_where_its_size_fails():
    from evalgate.stats.noninferiority import tango_exact_size

    # n = 300, δ = 0.02: Tango's exact size is 0.058 (rare one-directional discordance).
    assert tango_exact_size(300, 0.02, 0.05) == pytest.approx(0.0579, abs=5e-4)
    d = np.r_[-np.ones(3), np.zeros(297)]
    ni = noninferiority_test(d, margin=0.02, binary=True)
    assert ni.test == "exact-binomial"
    assert ni.p_value == pytest.approx(stats.binom.cdf(3, 300, 0.02))
    assert (ni.p_value < 0.05) == (ni.lower > -0.02)
    # Enough discordant pairs, or a margin where Tango's size holds: Tango.
    d = np.r_[-np.ones(3), np.ones(2), np.zeros(295)]
    assert noninferiority_test(d, margin=0.02, binary=True).test == "tango"
    d = np.r_[-np.ones(3), np.zeros(297)]
    assert noninferiority_test(d, margin=0.05, binary=True).test == "tango"


def test_false_pass_rate_holds_when_a_few_cases_carry_the_loss():
    # 10% of 30 cases lose 1 each (Δ = -δ = -0.1): the paired t passed 0.15-0.18 of such
    # suites. The gate's test must stay within α + its Monte Carlo error.
    rng = np.random.default_rng(11)
    trials = 400
    d = -1.0 * (rng.random((trials, 30)) < 0.1)
    passes = sum(
        noninferiority_test(row, margin=0.1, seed=i).verdict() is Verdict.PASS
        for i, row in enumerate(d)
    )
    assert passes / trials <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / trials)


def test_holm_adjusted_p_can_turn_a_pass_inconclusive():
    ni = noninferiority_test(np.random.default_rng(3).normal(-0.02, 0.2, 200), margin=0.05)
    assert ni.p_value < 0.05
    assert ni.verdict(p_adjusted=min(1.0, ni.p_value * 20)) is Verdict.INCONCLUSIVE


@pytest.mark.parametrize("bad", [{"margin": 0.0}, {"margin": 1.5}, {"alpha": 0.6}])
def test_parameters_out_of_range_are_rejected(bad):
    with pytest.raises(ValueError):
        noninferiority_test(np.zeros(5), **{"margin": 0.05, "alpha": 0.05, **bad})


def test_planning_survives_every_pair_disagreeing():
    # ψ = 1: the restricted MLE sits on the boundary; planning must not crash the report.
    for d in ([1, -1], [1, -1, 1], [-1, 1] * 20):
        test = noninferiority_test(d, margin=0.05, binary=True)
        assert test.n_needed is not None and test.n_needed > len(d)


def test_min_detectable_margin_keeps_its_promise():
    from evalgate.stats.noninferiority import tango_min_detectable_margin, tango_n_needed

    for psi, n in ((0.02, 102), (0.2, 200), (0.5, 1000)):
        margin = tango_min_detectable_margin(psi, n)
        assert tango_n_needed(psi, margin) <= n < tango_n_needed(psi, margin * 0.99)
