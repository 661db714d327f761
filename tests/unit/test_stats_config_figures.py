"""One source of per-config figures: evalgate.json's configs agree with the statistics."""

from __future__ import annotations

import json

import pytest

from evalgate.report.markdown import render_summary
from evalgate.report.summary import build_report
from evalgate.results import CallResult, CaseResult
from evalgate.stats import analyze_suite


def result(case: str, config: str, *, score: float, error: str | None = None, **call) -> CaseResult:
    defaults = {"cost_usd": 0.002, "latency_ms": 1000.0, "ttft_ms": 200.0, "output": "x"}
    return CaseResult(
        item_key=f"s::{case}[{config}]",
        run_id="r",
        suite="s",
        feature="f",
        suite_hash="h",
        case_id=case,
        config_id=config,
        repeat=0,
        group=None,
        tier="t",
        model="m",
        must_pass=False,
        call=CallResult(**{**defaults, **call, "error": error}),
        score=score,
        passed=score >= 1.0,
    )


def rows() -> list[CaseResult]:
    out = []
    for i in range(40):
        out.append(result(f"c{i}", "base", score=1.0, latency_ms=1000.0 + i))
        if i < 2:  # two failed calls: no cost, latency 0.0 as the engine records them
            out.append(
                result(
                    f"c{i}",
                    "cand",
                    score=0.0,
                    error="Timeout: x",
                    cost_usd=None,
                    latency_ms=0.0,
                    ttft_ms=None,
                )
            )
        else:
            out.append(result(f"c{i}", "cand", score=1.0, cost_usd=0.001, latency_ms=500.0 + i))
    return out


def document(with_stats: bool) -> dict:
    import pandas as pd

    from evalgate.results import to_rows
    from evalgate.stats._common import json_safe

    results = rows()
    extra = {}
    if with_stats:
        analysis = analyze_suite(pd.DataFrame(to_rows(results)), baseline="base", n_boot=200)
        extra = {"s": {"stats": json_safe(analysis.to_dict())}}
    return build_report(results, run_id="r", baselines={"s": "base"}, extra=extra)


@pytest.mark.parametrize("with_stats", [True, False])
def test_an_errored_call_does_not_hide_cost_nor_enter_latency(with_stats):
    cand = document(with_stats)["suites"]["s"]["configs"]["cand"]
    assert cand["errors"] == 2 and cand["error_rate"] == pytest.approx(2 / 40)
    assert cand["cost_total_usd"] == pytest.approx(38 * 0.001)
    assert cand["cost_per_case_usd"] == pytest.approx(0.001)
    assert cand["latency_p50_ms"] == pytest.approx(500.0 + 20.5)  # median of 502..539
    assert cand["measured_latency_p50_ms"] == pytest.approx(520.5)
    assert cand["quality_mean"] == 1.0 and cand["pass_rate"] == 1.0


def test_report_and_statistics_give_the_same_per_config_figures():
    doc = document(True)
    suite = doc["suites"]["s"]
    for cid, figures in suite["stats"]["configs"].items():
        entry = suite["configs"][cid]
        assert entry["quality_mean"] == figures["quality"]["estimate"]
        assert entry["cost_per_case_usd"] == figures["cost_per_case"]["estimate"]
        assert entry["latency_p95_ms"] == figures["latency_p95"]["estimate"]
        assert entry["errors"] == figures["n_errors"]
    # Without statistics (e.g. the baseline was not run) the same function fills them in.
    assert document(False)["suites"]["s"]["configs"] == suite["configs"]
    json.dumps(doc, allow_nan=False)


def test_summary_names_the_test_of_each_comparison_and_its_errors():
    doc = document(True)
    doc["gate"] = {"blocked": False, "reasons": [], "notes": []}
    text = render_summary(doc)
    row = next(line for line in text.splitlines() if line.startswith("| cand |"))
    test = doc["suites"]["s"]["stats"]["comparisons"]["cand"]["noninferiority"]["test"]
    assert f"| {test} | 2 |" in row
    assert "errored calls count as losses" in text


def test_a_defect_in_the_figures_leaves_the_report_written(monkeypatch):
    import evalgate.stats

    def broken(*args, **kwargs):
        raise ZeroDivisionError("injected")

    monkeypatch.setattr(evalgate.stats, "config_stats", broken)
    cand = document(False)["suites"]["s"]["configs"]["cand"]
    assert cand["errors"] == 2 and cand["quality_mean"] is None and cand["n_items"] == 40
