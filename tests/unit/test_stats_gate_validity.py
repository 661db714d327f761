"""The gate keeps its error rate at finite n: a quick version of benchmarks/gate_validity.py.

Every shape of paired differences the benchmark simulates (a few broken cases, mixtures,
rare one-directional discordance, repeats) at the null boundary Δ = -δ: the share of
suites that PASS must not exceed α + 0.01 by more than its Monte Carlo error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalgate.stats import NonInferiorityVerdict as Verdict
from evalgate.stats import betting, noninferiority_test
from evalgate.stats.simulate import SHAPES, case_differences, gate_passes, t_passes

ALPHA = 0.05
TRIALS = 1500


@pytest.mark.parametrize("shape", SHAPES)
def test_false_pass_rate_at_the_margin_stays_within_its_bound(shape):
    rng = np.random.default_rng(SHAPES.index(shape))
    for n, margin in ((30, 0.10), (100, 0.05), (100, 0.10)):
        d, binary = case_differences(shape, n, -margin, margin, TRIALS, rng)
        rate = gate_passes(d, margin=margin, alpha=ALPHA, binary=binary, rng=rng).mean()
        mc = math.sqrt((ALPHA + 0.01) * (1 - ALPHA - 0.01) / TRIALS)
        assert rate <= ALPHA + 0.01 + 2 * mc, (shape, n, margin, rate)


def test_the_paired_t_it_replaces_fails_that_bound():
    # Why the gate changed: a loss carried by 10% of 100 cases.
    rng = np.random.default_rng(1)
    d, _ = case_differences("zero-inflated-10%", 100, -0.05, 0.05, TRIALS, rng)
    assert t_passes(d, margin=0.05, alpha=ALPHA).mean() > 0.1
    assert gate_passes(d, margin=0.05, alpha=ALPHA, rng=rng).mean() <= ALPHA


def test_the_vectorised_gate_makes_the_analysis_decisions():
    rng = np.random.default_rng(2)
    for shape in ("mixture", "binary", "binary-rare", "binary-repeats-3"):
        d, binary = case_differences(shape, 100, -0.02, 0.05, 40, rng)
        seeds = rng.integers(0, 2**31, len(d))
        fast = gate_passes(d, margin=0.05, binary=binary, seeds=seeds)
        for row, seed, passed in zip(d, seeds, fast, strict=True):
            ni = noninferiority_test(row, margin=0.05, binary=binary, seed=int(seed))
            assert (ni.verdict() is Verdict.PASS) == passed


def test_power_target_with_normal_differences():
    # Issue 15's target: sd 0.2, 300 cases, δ = 0.05, true Δ = 0 -> power >= 0.95.
    rng = np.random.default_rng(3)
    d, _ = case_differences("normal", 300, 0.0, 0.05, 1000, rng)
    assert gate_passes(d, margin=0.05, rng=rng).mean() >= 0.95


@pytest.mark.parametrize("sd, margin", [(0.1, 0.05), (0.2, 0.05), (0.3, 0.1), (0.2, 0.1)])
def test_cases_needed_give_the_promised_power(sd, margin):
    # The report's "about N cases give 80% power" comes from the betting test's own power.
    n = betting.n_needed(sd, margin, alpha=ALPHA)
    rng = np.random.default_rng(4)
    d = np.clip(rng.normal(0.0, sd, (1000, n)), -1, 1)
    power = gate_passes(d, margin=margin, rng=rng).mean()
    assert abs(power - 0.8) <= 0.05 + 2 * math.sqrt(0.16 / 1000), (n, power)
    mdm = betting.min_detectable_margin(sd, n, alpha=ALPHA)
    assert mdm == pytest.approx(margin, abs=2e-3)


@pytest.mark.parametrize("n, margin", [(50, 0.02), (100, 0.1), (200, 0.1)])
def test_exact_size_of_the_binary_rule_where_tangos_fails(n, margin):
    # Every table (b, c) of n pairs through the gate's own decision, summed under the
    # trinomial law at the boundary, worst case over the nuisance: Tango alone exceeds
    # α + 0.005 at these (n, δ); the rule with its exact fallback must not.
    from scipy.special import gammaln

    from evalgate.stats.noninferiority import tango_exact_size

    assert tango_exact_size(n, margin, ALPHA) > ALPHA + 0.005
    counts = np.arange(n + 1)
    b = np.repeat(counts, n + 1 - counts)
    c = np.concatenate([counts[: n + 1 - k] for k in counts])
    position = np.arange(n)[None, :]
    d = np.where(position < b[:, None], 1.0, np.where(position < (b + c)[:, None], -1.0, 0.0))
    passes = gate_passes(d, margin=margin, alpha=ALPHA, binary=True)
    b, c = b[passes], c[passes]
    rest = n - b - c
    log_choose = gammaln(n + 1) - gammaln(b + 1) - gammaln(c + 1) - gammaln(rest + 1)
    worst = 0.0
    for p10 in np.r_[0.0, np.geomspace(1e-5, (1 - margin) / 2 - 1e-9, 40)]:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_p = (
                log_choose
                + np.where(b > 0, b * np.log(p10), 0.0)
                + c * np.log(p10 + margin)
                + np.where(rest > 0, rest * np.log(1 - 2 * p10 - margin), 0.0)
            )
        worst = max(worst, float(np.exp(log_p).sum()))
    assert worst <= ALPHA + 0.005, worst
