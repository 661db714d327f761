"""Paired intervals and difference tests against independent references (scipy, statsmodels)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from evalgate.stats import (
    bootstrap_mean_ci,
    difference_test,
    mcnemar_exact,
    mean_ci,
    paired_delta_ci,
    ratio_ci,
    wilcoxon_p,
)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 5), (3, 9), (12, 4), (25, 25), (40, 61), (1, 0)])
def test_mcnemar_exact_matches_statsmodels(b, c):
    table = [[50, b], [c, 30]]  # rows: candidate 1/0, columns: baseline 0/1 off-diagonal
    expected = mcnemar(table, exact=True).pvalue if b + c else 1.0
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_from_paired_differences_counts_discordant_pairs():
    d = np.array([1, 1, 1, -1, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p, test = difference_test(d, binary=True)
    assert test == "mcnemar-exact"
    assert p == pytest.approx(mcnemar([[5, 9], [1, 5]], exact=True).pvalue)


def test_wilcoxon_matches_scipy_zsplit_and_all_zero_is_one():
    rng = np.random.default_rng(3)
    d = np.round(rng.normal(0.02, 0.1, 80), 2)  # rounding makes zeros and ties
    assert np.any(d == 0)
    expected = stats.wilcoxon(d, zero_method="zsplit").pvalue
    assert wilcoxon_p(d) == pytest.approx(expected, rel=1e-12)
    assert difference_test(d, binary=False) == (pytest.approx(expected), "wilcoxon-zsplit")
    assert wilcoxon_p(np.zeros(30)) == 1.0
    assert wilcoxon_p(np.array([])) == 1.0


def test_t_interval_from_300_cases_matches_scipy():
    d = np.random.default_rng(4).normal(-0.01, 0.3, 400)
    ci = paired_delta_ci(d, alpha=0.05)
    ref = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert ci.method == "t"
    assert (ci.low, ci.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert ci.estimate == pytest.approx(d.mean())


def test_percentile_bootstrap_under_300_cases_agrees_with_scipy_bootstrap():
    d = np.random.default_rng(5).choice([-1.0, 0.0, 0.0, 0.0, 1.0], size=120)
    ci = paired_delta_ci(d, n_boot=10_000, seed=1)
    ref = stats.bootstrap(
        (d,), np.mean, n_resamples=10_000, method="percentile", rng=np.random.default_rng(2)
    ).confidence_interval
    assert ci.method == "bootstrap"
    # Two independent Monte Carlo runs of the same interval: within Monte Carlo error.
    assert ci.low == pytest.approx(ref.low, abs=0.01)
    assert ci.high == pytest.approx(ref.high, abs=0.01)


def test_bootstrap_is_seeded():
    d = np.random.default_rng(6).normal(0, 1, 50)
    first = paired_delta_ci(d, seed=7, n_boot=2000)
    assert paired_delta_ci(d, seed=7, n_boot=2000) == first
    assert paired_delta_ci(d, seed=8, n_boot=2000) != first


def test_clustered_bootstrap_resamples_groups_whole():
    # Each group repeats one value 5 times: resampling groups of equal size is exactly the
    # bootstrap of the group values, so the two intervals coincide draw for draw.
    values = np.random.default_rng(8).normal(0, 1, 40)
    d = np.repeat(values, 5)
    groups = np.repeat([f"g{i}" for i in range(40)], 5)
    clustered = paired_delta_ci(d, groups, n_boot=4000, seed=3)
    by_group = paired_delta_ci(values, n_boot=4000, seed=3)
    assert clustered.method == "cluster-bootstrap"
    assert (clustered.n, clustered.n_units) == (200, 40)
    assert (clustered.low, clustered.high) == pytest.approx((by_group.low, by_group.high))
    # Treating the 200 copies as independent cases would be about sqrt(5) too narrow.
    naive = paired_delta_ci(d, n_boot=4000, seed=3)
    assert clustered.width / naive.width == pytest.approx(np.sqrt(5), rel=0.1)


def test_cluster_t_interval_with_many_groups_is_cluster_robust():
    values = np.random.default_rng(9).normal(0, 1, 400)
    d = np.repeat(values, 3)
    groups = np.repeat(np.arange(400), 3)
    ci = mean_ci(d, groups)
    ref = stats.ttest_1samp(values, 0).confidence_interval(0.95)
    assert ci.method == "cluster-t"
    assert (ci.low, ci.high) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_missing_group_labels_are_units_of_their_own():
    d = np.arange(6, dtype=float)
    ci = mean_ci(d, ["a", "a", None, np.nan, "b", "b"], n_boot=100)
    assert (ci.n, ci.n_units, ci.method) == (6, 4, "cluster-bootstrap")


def test_batched_bootstrap_rows_equal_single_calls():
    x = np.random.default_rng(10).normal(0, 1, (3, 60))
    low, high = bootstrap_mean_ci(x, n_boot=500, seed=11)
    assert low.shape == (3,)
    assert np.all(low < x.mean(axis=1)) and np.all(x.mean(axis=1) < high)
    one = bootstrap_mean_ci(x[0], n_boot=500, seed=11)
    assert one == (pytest.approx(low[0]), pytest.approx(high[0]))


def test_ratio_interval_delta_method_and_bootstrap_agree_at_large_n():
    rng = np.random.default_rng(12)
    base = rng.gamma(4, 0.0025, 600)
    cand = 0.4 * base * rng.lognormal(0, 0.2, 600)
    analytic = ratio_ci(cand, base)
    boot = ratio_ci(cand, base, method="bootstrap", n_boot=4000, seed=1)
    assert analytic.method == "t" and boot.method == "bootstrap"
    assert analytic.estimate == pytest.approx(cand.sum() / base.sum())
    assert analytic.low == pytest.approx(boot.low, abs=0.005)
    assert analytic.high == pytest.approx(boot.high, abs=0.005)


def test_empty_input_gives_nan_interval():
    ci = paired_delta_ci(np.array([]))
    assert ci.method == "none" and np.isnan(ci.estimate) and ci.n == 0
    assert ratio_ci(np.zeros(3), np.zeros(3)).method == "none"
