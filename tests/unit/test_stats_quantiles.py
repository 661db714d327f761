"""Order-statistic quantile intervals against scipy.stats.quantile_test."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evalgate.stats import min_n_for_quantile_ci, quantile_ci
from evalgate.stats.paired import resample_counts
from evalgate.stats.quantiles import resampled_quantiles


@pytest.mark.parametrize("n", [1, 5, 6, 20, 71, 72, 100, 1000])
@pytest.mark.parametrize("q", [0.5, 0.95])
def test_interval_matches_scipy_quantile_test(n, q):
    x = np.random.default_rng(n).lognormal(6, 0.5, n)
    ci = quantile_ci(x, q)
    ref = stats.quantile_test(x, q=float(np.median(x)), p=q).confidence_interval(0.95)
    for ours, theirs in [(ci.low, ref.low), (ci.high, ref.high)]:
        if np.isnan(theirs):
            assert ours is None
        else:
            assert ours == pytest.approx(theirs)
    assert ci.bounds_defined == (not np.isnan(ref.low) and not np.isnan(ref.high))
    assert ci.estimate == pytest.approx(np.quantile(x, q))


def test_p95_interval_needs_72_calls():
    assert min_n_for_quantile_ci(0.95) == 72
    assert min_n_for_quantile_ci(0.5) == 6
    x = np.random.default_rng(0).exponential(100, 72)
    small = quantile_ci(x[:71], 0.95)
    assert small.high is None and small.low is not None and not small.bounds_defined
    assert small.estimate is not None and small.min_n == 72
    assert quantile_ci(x, 0.95).bounds_defined


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_min_n_is_where_both_bounds_first_exist(q):
    n_min = min_n_for_quantile_ci(q)
    x = np.arange(n_min + 1, dtype=float)
    assert not quantile_ci(x[: n_min - 1], q).bounds_defined
    assert quantile_ci(x[:n_min], q).bounds_defined


def test_empty_and_nan_input():
    assert quantile_ci([], 0.5).estimate is None
    ci = quantile_ci([np.nan, 1.0, 2.0], 0.5)
    assert ci.n == 2 and ci.estimate == 1.5


def test_interval_covers_the_true_quantile_at_the_nominal_rate():
    # Exponential(1): true p95 = ln(20). 2000 samples of 200 calls, vectorised by sorting.
    rng = np.random.default_rng(1)
    samples = np.sort(rng.exponential(1.0, (2000, 200)), axis=1)
    one = quantile_ci(samples[0], 0.95)
    low_i = int(np.searchsorted(samples[0], one.low))
    high_i = int(np.searchsorted(samples[0], one.high))
    truth = np.log(20)
    covered = (samples[:, low_i] <= truth) & (truth <= samples[:, high_i])
    assert covered.mean() >= 0.95 - 0.015  # the construction is conservative (>= 95%)


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_resampled_quantiles_match_numpy_on_the_expanded_sample(q):
    rng = np.random.default_rng(2)
    values = rng.lognormal(6, 0.5, 300)
    units = rng.integers(0, 100, 300)  # 100 cases with a varying number of calls
    units[np.argmin(values)] = 100  # a case with one call, the fastest
    counts = resample_counts(101, 50, rng)
    # A resample drawing only that case: the top values weigh nothing, so the fast path
    # (summing weights from the top) reads too few of them and the fallback answers.
    counts[0] = 0.0
    counts[0, 100] = 40.0
    got = resampled_quantiles(values, units, counts, q)
    for row, weights in enumerate(counts):
        expanded = np.repeat(values, weights[units].astype(int))
        assert got[row] == np.quantile(expanded, q, method="inverted_cdf")


def test_resampled_quantiles_of_a_resample_without_values_is_nan():
    counts = np.array([[2.0, 0.0], [0.0, 1.0]])
    got = resampled_quantiles(np.array([5.0, 7.0]), np.array([1, 1]), counts, 0.95)
    assert np.isnan(got[0]) and got[1] == 7.0
