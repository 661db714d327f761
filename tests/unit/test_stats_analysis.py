"""analyze_suite: the per-suite orchestration, its edge cases and its JSON output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evalgate.stats import NonInferiorityVerdict as Verdict
from evalgate.stats import SuiteAnalysis, analyze_suite, holm
from evalgate.stats.simulate import SyntheticConfig, synthetic_results

FAST = {"n_boot": 500, "n_frontier_boot": 200}


def rows(
    scores: dict[str, np.ndarray],
    *,
    cost: dict[str, float | None] | None = None,
    latency: dict[str, float] | None = None,
    errors: dict[str, np.ndarray] | None = None,
    groups: np.ndarray | None = None,
    repeats: int = 1,
) -> pd.DataFrame:
    """Rows with the given per-case scores for each config (same score in every repeat)."""
    frames = []
    for k, (cid, s) in enumerate(scores.items()):
        n = len(s)
        rng = np.random.default_rng(k)
        err = np.repeat((errors or {}).get(cid, np.zeros(n, bool)), repeats)
        c = (cost or {}).get(cid, 0.01)
        lat = (latency or {}).get(cid, 500.0) * rng.lognormal(0, 0.3, n * repeats)
        frames.append(
            pd.DataFrame(
                {
                    "case_id": np.repeat([f"c{i}" for i in range(n)], repeats),
                    "config_id": cid,
                    "repeat": np.tile(np.arange(repeats), n),
                    "group": np.repeat(groups, repeats) if groups is not None else None,
                    "score": np.where(err, 0.0, np.repeat(s, repeats)),
                    "passed": np.repeat(s, repeats) >= 1,
                    "error": err,
                    "cost_usd": c,
                    "saved_usd": 0.0,
                    "latency_ms": lat,
                    "ttft_ms": None,
                    "cached": False,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def binary(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


@pytest.fixture(scope="module")
def suite() -> SuiteAnalysis:
    df = synthetic_results(
        400,
        [
            SyntheticConfig("base", cost_usd=0.010, latency_ms=900),
            SyntheticConfig("same", delta=0.0, cost_usd=0.004, latency_ms=500),
            SyntheticConfig("worse", delta=-0.15, cost_usd=0.001, latency_ms=300),
        ],
        repeats=2,
        seed=1,
    )
    return analyze_suite(df, baseline="base", seed=3, **FAST)


def test_output_is_json_safe_with_the_documented_keys(suite):
    doc = suite.to_dict()
    json.dumps(doc, allow_nan=False)
    assert set(doc) == {
        "baseline", "margin", "alpha", "seed", "n_boot", "score_kind", "clustered",
        "n_cases", "configs", "comparisons", "pareto", "recommendation", "gate", "notes",
    }  # fmt: skip
    assert list(doc["configs"]) == ["base", "same", "worse"]
    assert list(doc["comparisons"]) == ["same", "worse"]
    assert set(doc["comparisons"]["same"]["noninferiority"]) >= {
        "p_value", "lower", "upper", "n_needed", "min_detectable_margin",
    }  # fmt: skip
    assert doc["comparisons"]["worse"]["verdict"] == "FAIL"


def test_repeats_are_averaged_not_counted_as_cases(suite):
    base = suite.configs["base"]
    assert (base.n_cases, base.n_calls) == (400, 800)
    assert suite.comparisons["same"].n_paired == 400
    assert suite.score_kind == "binary"
    assert suite.comparisons["same"].test == "mcnemar-exact"
    assert suite.comparisons["same"].noninferiority.test == "tango"


def test_verdicts_holm_gate_and_recommendation(suite):
    same, worse = suite.comparisons["same"], suite.comparisons["worse"]
    assert worse.verdict is Verdict.FAIL
    raw = [same.noninferiority.p_value, worse.noninferiority.p_value]
    assert [same.p_adjusted, worse.p_adjusted] == pytest.approx(list(holm(raw)))
    assert suite.gate.gating
    assert [r.config_id for r in suite.gate.fail] == ["worse"]
    assert same.verdict is not Verdict.FAIL  # true Δ = 0
    assert (suite.recommendation is not None) == (same.verdict is Verdict.PASS)
    assert same.savings_pct.estimate == pytest.approx(60, abs=5)
    assert same.latency_p95_ratio == pytest.approx(500 / 900, rel=0.15)


def test_same_seed_same_numbers_and_row_order_does_not_matter():
    df = synthetic_results(150, [SyntheticConfig("b"), SyntheticConfig("c", delta=-0.02)])
    first = analyze_suite(df, baseline="b", seed=5, **FAST).to_dict()
    shuffled = df.sample(frac=1.0, random_state=0)
    assert analyze_suite(shuffled, baseline="b", seed=5, **FAST).to_dict() == first
    other = analyze_suite(df, baseline="b", seed=6, **FAST).to_dict()
    assert other["configs"]["c"]["cost_per_case"] != first["configs"]["c"]["cost_per_case"]


def test_adding_a_config_leaves_the_others_numbers_alone():
    specs = [SyntheticConfig("b"), SyntheticConfig("c", delta=-0.02)]
    df = synthetic_results(150, [*specs, SyntheticConfig("d")])
    two = analyze_suite(df[df.config_id != "d"], baseline="b", **FAST)
    three = analyze_suite(df, baseline="b", **FAST)
    assert three.comparisons["c"].delta == two.comparisons["c"].delta
    assert three.configs["c"].quality == two.configs["c"].quality


def test_continuous_scores_use_wilcoxon_and_paired_t():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.5, 1.0, 200)
    df = rows({"b": base, "c": np.clip(base + rng.normal(0, 0.05, 200), 0, 1)})
    a = analyze_suite(df, baseline="b", **FAST)
    assert a.score_kind == "continuous"
    assert a.comparisons["c"].test == "wilcoxon-zsplit"
    assert a.comparisons["c"].noninferiority.test == "betting"
    assert a.comparisons["c"].verdict is Verdict.PASS


def test_repeats_that_disagree_make_scores_continuous():
    df = rows({"b": binary(120, 0.8, 1), "c": binary(120, 0.8, 2)}, repeats=2)
    df.loc[(df.config_id == "c") & (df.repeat == 1), "score"] = 1.0
    assert analyze_suite(df, baseline="b", **FAST).score_kind == "continuous"


def test_config_with_all_errors():
    n = 150
    df = rows(
        {"b": binary(n, 0.85, 1), "broken": binary(n, 0.85, 2)},
        errors={"broken": np.ones(n, bool)},
    )
    a = analyze_suite(df, baseline="b", **FAST)
    broken = a.comparisons["broken"]
    stats_ = a.configs["broken"]
    assert (stats_.n_calls, stats_.n_errors, stats_.n_completed) == (n, n, 0)
    assert stats_.error_rate == 1.0 and stats_.latency_p95 is None and stats_.cost_per_case is None
    assert broken.n_paired == n and broken.n_imputed == n and broken.error_flag
    assert broken.quality_verdict is Verdict.FAIL  # every errored case is a loss
    assert broken.verdict is Verdict.FAIL and "error rate" in broken.reason
    assert [r.config_id for r in a.gate.fail] == ["broken"]
    assert a.recommendation is None
    assert a.pareto.probability["broken"] is None
    json.dumps(a.to_dict(), allow_nan=False)


def test_baseline_with_all_errors_compares_nothing_and_does_not_gate():
    n = 150
    df = rows({"b": binary(n, 0.85, 1), "c": binary(n, 0.85, 2)}, errors={"b": np.ones(n, bool)})
    a = analyze_suite(df, baseline="b", **FAST)
    c = a.comparisons["c"]
    assert c.n_paired == 0 and c.verdict is Verdict.INCONCLUSIVE and not c.error_flag
    assert not a.gate.gating
    assert any("completed no case" in note for note in a.notes)
    json.dumps(a.to_dict(), allow_nan=False)


def test_binary_quality_interval_is_wilsons():
    from statsmodels.stats.proportion import proportion_confint

    scores = binary(400, 0.85, 4)
    a = analyze_suite(rows({"b": scores}), baseline="b", **FAST)
    quality = a.configs["b"].quality
    low, high = proportion_confint(int(scores.sum()), 400, alpha=0.05, method="wilson")
    assert quality.method == "wilson"
    assert (quality.low, quality.high) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.parametrize("repeats", [1, 3])
def test_all_pass_and_all_fail_never_get_a_zero_width_interval(repeats):
    df = rows({"b": np.ones(102), "c": np.zeros(102)}, repeats=repeats)
    a = analyze_suite(df, baseline="b", **FAST)
    best, worst = a.configs["b"].quality, a.configs["c"].quality
    assert (round(best.low, 3), best.high) == (0.964, 1.0)  # Wilson, 102 of 102
    assert (worst.low, round(worst.high, 3)) == (0.0, 0.036)
    groups = np.repeat([f"g{i}" for i in range(34)], 3)
    clustered = analyze_suite(rows({"b": np.ones(102)}, groups=groups), baseline="b", **FAST)
    quality = clustered.configs["b"].quality
    assert quality.method == "clopper-pearson" and quality.n_units == 34
    assert quality.low == pytest.approx(0.025 ** (1 / 34)) and quality.high == 1.0


def test_candidate_errors_count_as_losses_and_flag_error_heavy_candidates():
    n = 200
    errors = np.zeros(n, bool)
    errors[:30] = True  # 15% errors
    base = np.ones(n)
    a = analyze_suite(
        rows({"b": base, "c": base.copy()}, errors={"c": errors}), baseline="b", **FAST
    )
    c = a.comparisons["c"]
    # Identical on the 170 it answered; dropping the 30 errors would make that a PASS.
    assert c.n_paired == n and c.n_imputed == 30
    assert c.delta.estimate == pytest.approx(-30 / n)
    assert c.quality_verdict is Verdict.FAIL and "30 case(s) with a candidate error" in c.reason
    assert c.error_flag and c.verdict is Verdict.FAIL
    assert a.configs["c"].quality.estimate == 1.0 and a.configs["c"].n_errors == 30


def test_an_errored_repeat_is_a_partial_loss_of_its_case():
    n = 150
    df = rows({"b": np.ones(n), "c": np.ones(n)}, repeats=2)
    first = (df.config_id == "c") & (df.case_id == df.case_id.iloc[0]) & (df.repeat == 0)
    df.loc[first, "error"] = True  # one repeat of one case
    c = analyze_suite(df, baseline="b", **FAST).comparisons["c"]
    assert c.n_imputed == 1 and c.delta.estimate == pytest.approx(-0.5 / n)
    assert c.noninferiority.test == "betting" and c.discordant is None  # d = -0.5 is not 0/1


def test_a_few_candidate_errors_cost_a_pass_and_baseline_errors_leave_the_case_out():
    n = 300
    base = np.ones(n)
    few = np.zeros(n, bool)
    few[:6] = True  # 2%: below the error flag, but each one is a loss
    a = analyze_suite(rows({"b": base, "c": base.copy()}, errors={"c": few}), **FAST, baseline="b")
    c = a.comparisons["c"]
    assert not c.error_flag and c.n_imputed == 6 and c.delta.estimate == pytest.approx(-0.02)
    assert c.delta.low < -0.02 < c.delta.high
    a = analyze_suite(rows({"b": base, "c": base.copy()}, errors={"b": few}), **FAST, baseline="b")
    c = a.comparisons["c"]
    assert (c.n_paired, c.n_baseline_missing, c.n_imputed) == (n - 6, 6, 0)
    assert any("6 case(s) left out" in note for note in a.notes)


def test_identical_outputs_do_not_pass_on_a_zero_width_interval():
    base = binary(40, 0.85, 1)
    small = analyze_suite(rows({"b": base, "cache": base.copy()}), baseline="b", **FAST)
    c = small.comparisons["cache"]
    assert c.zero_variance and c.delta.width > 0 and c.delta.method == "exact-identical"
    assert c.noninferiority.test == "exact-identical"
    assert c.verdict is Verdict.INCONCLUSIVE  # 0.95**40 = 0.13: 40 replays prove little
    assert c.noninferiority.n_needed == 59
    assert any("identical" in note for note in small.notes)
    base = binary(200, 0.85, 1)
    large = analyze_suite(rows({"b": base, "cache": base.copy()}), baseline="b", **FAST)
    assert large.comparisons["cache"].verdict is Verdict.PASS  # exact bound: 0.95**200


def test_under_100_cases_reports_but_does_not_gate():
    df = rows({"b": binary(60, 0.9, 1), "bad": binary(60, 0.3, 2)})
    a = analyze_suite(df, baseline="b", **FAST)
    assert a.comparisons["bad"].verdict is Verdict.FAIL  # still computed
    assert not a.gate.gating and a.gate.fail == () and not a.gate.blocking()
    assert "does not gate" in a.gate.note
    forced = analyze_suite(df, baseline="b", force_gate=True, **FAST)
    assert forced.gate.gating and forced.gate.blocking()


def test_gated_subset_and_unknown_ids():
    df = rows({"b": binary(120, 0.9, 1), "bad": binary(120, 0.3, 2), "bad2": binary(120, 0.3, 3)})
    a = analyze_suite(df, baseline="b", gated=["bad", "b", "ghost"], **FAST)
    assert [r.config_id for r in a.gate.fail] == ["bad"]
    assert [r.config_id for r in a.gate.inconclusive] == ["ghost"]
    assert [r.config_id for r in a.gate.blocking(inconclusive_blocks=False)] == ["bad"]


def test_quantile_bounds_undefined_at_small_n():
    a = analyze_suite(
        rows({"b": binary(50, 0.9, 1), "c": binary(50, 0.9, 2)}), baseline="b", **FAST
    )
    p95 = a.configs["b"].latency_p95
    assert p95.n == 50 and not p95.bounds_defined and p95.high is None
    assert a.configs["b"].latency_p50.bounds_defined
    assert a.to_dict()["configs"]["b"]["latency_p95"]["high"] is None


def test_groups_are_resampled_together():
    n, size = 240, 4
    rng = np.random.default_rng(3)
    # A group shares its difficulty, so its cases move together under both configs.
    hard = np.repeat(rng.random(n // size) < 0.3, size)
    base = (rng.random(n) < np.where(hard, 0.3, 0.95)).astype(float)
    cand = np.where(rng.random(n) < 0.5, base, (rng.random(n) < np.where(hard, 0.25, 0.95)))
    groups = np.repeat([f"g{i}" for i in range(n // size)], size)
    df = rows({"b": base, "c": cand.astype(float)}, groups=groups)
    clustered = analyze_suite(df, baseline="b", **FAST)
    plain = analyze_suite(df.assign(group=None), baseline="b", **FAST)
    assert clustered.clustered and not plain.clustered
    cc, pc = clustered.comparisons["c"], plain.comparisons["c"]
    assert cc.delta.method == "cluster-betting" and cc.delta.n_units == n // size
    assert pc.delta.method == "tango"
    assert cc.noninferiority.test == "cluster-betting"
    assert cc.delta.estimate == pc.delta.estimate
    assert clustered.configs["b"].quality.width > plain.configs["b"].quality.width


def test_recommendation_is_the_cheapest_pass_within_the_slos():
    base = binary(200, 0.85, 1)
    scores = {k: base.copy() for k in ("b", "cheap-slow", "mid", "mid-fast", "dear")}
    cost = {"b": 0.01, "cheap-slow": 0.001, "mid": 0.004, "mid-fast": 0.004, "dear": 0.02}
    latency = {"b": 800, "cheap-slow": 3000, "mid": 700, "mid-fast": 400, "dear": 100}
    df = rows(scores, cost=cost, latency=latency)
    plain = analyze_suite(df, baseline="b", **FAST)
    assert plain.recommendation.config_id == "cheap-slow"
    assert plain.recommendation.savings_pct.estimate == pytest.approx(90)
    with_slo = analyze_suite(df, baseline="b", slo={"p95_latency_ms": 2000}, **FAST)
    rec = with_slo.recommendation
    assert rec.config_id == "mid-fast"  # tie on cost -> lower p95
    assert rec.verdict is Verdict.PASS and rec.n_paired == 200
    assert "mid-fast" in rec.reason and "SLO" in rec.reason
    none = analyze_suite(df, baseline="b", slo={"cost_per_case": 0.0001}, **FAST)
    assert none.recommendation is None
    assert any("SLO" in note for note in none.notes)


def test_unknown_cost_is_none_not_zero():
    base = binary(120, 0.85, 1)
    df = rows({"b": base, "c": base.copy()}, cost={"b": 0.01, "c": None})
    a = analyze_suite(df, baseline="b", **FAST)
    assert a.configs["c"].cost_per_case is None and a.configs["c"].total_cost_usd is None
    assert a.comparisons["c"].savings_pct is None
    assert a.pareto.objectives == ("quality", "cost_per_case", "latency_p95_ms")
    assert a.pareto.probability["c"] is None
    all_unknown = analyze_suite(
        rows({"b": base, "c": base}, cost={"b": None, "c": None}), baseline="b", **FAST
    )
    assert all_unknown.pareto.objectives == ("quality", "latency_p95_ms")


def test_pareto_frontier_and_probability():
    df = synthetic_results(
        300,
        [
            SyntheticConfig("base", cost_usd=0.010, latency_ms=900),
            SyntheticConfig("better", delta=0.0, cost_usd=0.005, latency_ms=400),
            SyntheticConfig("dominated", delta=-0.1, cost_usd=0.02, latency_ms=2000),
        ],
        seed=2,
    )
    a = analyze_suite(df, baseline="base", **FAST)
    assert "better" in a.pareto.frontier and "dominated" not in a.pareto.frontier
    assert a.pareto.probability["better"] > 0.9
    assert a.pareto.probability["dominated"] < 0.05


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"baseline": "nope"}, "baseline 'nope' has no results"),
        ({"baseline": "b", "margin": 0}, "margin"),
        ({"baseline": "b", "alpha": 0.7}, "alpha"),
        ({"baseline": "b", "slo": {"p99": 1}}, "slo keys"),
        ({"baseline": "b", "seed": -1}, "seed"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    df = rows({"b": binary(10, 0.5, 1)})
    with pytest.raises(ValueError, match=match):
        analyze_suite(df, **kwargs)


def test_scores_outside_0_1_and_missing_columns_are_rejected():
    df = rows({"b": binary(10, 0.5, 1)})
    df.loc[3, "score"] = 1.5
    with pytest.raises(ValueError, match=r"score must be a number in \[0, 1\].*c3"):
        analyze_suite(df, baseline="b")
    with pytest.raises(ValueError, match="lacks column"):
        analyze_suite(df.drop(columns=["score"]), baseline="b")


def test_planning_figures_account_for_holm_over_the_candidates():
    # The demo's situation: the candidate matches the baseline and would pass on its own,
    # but two clearly worse candidates make it a family of three; the cases it is told it
    # needs must be enough at Holm's first step (α/3), not at α.
    base = binary(102, 0.95, 1)
    same = base.copy()
    flip = np.flatnonzero(base == 1)[:2]
    same[flip] = 0
    same[np.flatnonzero(base == 0)[:3]] = 1  # 5 discordant pairs: Tango's test
    alone = analyze_suite(rows({"b": base, "c": same}), baseline="b", **FAST)
    family = analyze_suite(
        rows({"b": base, "c": same, "w1": binary(102, 0.3, 2), "w2": binary(102, 0.4, 3)}),
        baseline="b",
        **FAST,
    )
    single, triple = alone.comparisons["c"], family.comparisons["c"]
    assert single.verdict is Verdict.PASS
    assert triple.verdict is Verdict.INCONCLUSIVE and "not after Holm" in triple.reason
    assert triple.noninferiority.n_needed > max(
        triple.noninferiority.n, single.noninferiority.n_needed
    )
    assert f"about {triple.noninferiority.n_needed} cases" in triple.reason
    assert "after Holm over 3 comparisons" in triple.reason
    assert triple.noninferiority.min_detectable_margin > single.noninferiority.min_detectable_margin
