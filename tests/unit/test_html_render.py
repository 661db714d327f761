"""The HTML report rendered from stored documents: escaping, embedded data, bad input."""

from __future__ import annotations

import copy
import json
import math
import random
import re

import pytest

from evalgate.report.html import embed_json, render_html
from evalgate.report.html_data import ROW_FIELDS, drilldown_data
from evalgate.testing.report_data import XSS_CASE_ID, XSS_TEXTS, synthetic_document


@pytest.fixture(scope="module")
def document() -> dict:
    return synthetic_document(150, hostile=True)


def embedded(page: str) -> dict:
    match = re.search(
        r'<script type="application/json" id="evalgate-data">(.*?)</script>', page, re.S
    )
    assert match, "no embedded data"
    return json.loads(match.group(1))


def test_embedded_json_cannot_close_its_script_element() -> None:
    value = {"o": "</script><script>alert(1)</script><!-- & \u2028\u2029 >"}
    text = embed_json(value)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == value  # the same value once parsed


def test_hostile_strings_never_appear_as_markup(document) -> None:
    page = render_html(document)
    # The page has exactly its two script elements (the data and its own script).
    assert page.count("<script") == 2
    assert "<img" not in page and "alert(1)</script>" not in page.split("<script>", 1)[0]
    for text in (*XSS_TEXTS, XSS_CASE_ID):
        assert text not in page
    data = embedded(page)
    cases = data["suites"][0]["cases"]
    assert XSS_CASE_ID in cases  # the case is there, as data
    outputs = [
        row[ROW_FIELDS.index("output")]
        for per_case in data["suites"][0]["grid"]
        for cell in per_case
        for row in cell or ()
    ]
    assert any(XSS_TEXTS[0] in o for o in outputs)


def test_hostile_config_names_are_escaped_in_table_and_plot() -> None:
    document = synthetic_document(30)
    suite = document["suites"]["synthetic"]
    hostile = '<svg onload=alert(3)>"'
    for section in (suite["configs"], suite["stats"]["configs"], suite["stats"]["comparisons"]):
        section[hostile] = section.pop("small")
    suite["stats"]["pareto"]["frontier"].append(hostile)
    page = render_html(document)
    assert "<svg onload" not in page
    assert "&lt;svg onload=alert(3)&gt;&#34;" in page  # in the table and the SVG labels


def test_page_makes_no_request_to_another_host(document) -> None:
    page = render_html(document)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # and the page's CSP forbids any fetch


def test_headline_table_and_plots_are_rendered(document) -> None:
    page = render_html(document)
    assert 'data-testid="headline"' in page and 'data-testid="pareto"' in page
    assert page.count('data-testid="plot"') == 2
    assert "cost per case (USD)" in page and "p95 latency (ms)" in page
    assert "Where the money goes" in page
    assert "needs N≈" in page  # an INCONCLUSIVE candidate says what N would settle it


def test_prompts_are_embedded_once_per_distinct_prompt(document) -> None:
    data = embedded(render_html(document))["suites"][0]
    assert len(data["messages"]) == 2 * 150  # full context + trimmed context
    first = data["prompts"][0]
    assert first[0] == first[3] != first[1]  # large and small share; trim differs


def test_grade_flags_reach_the_drilldown(document) -> None:
    data = embedded(render_html(document))
    flags = data["grade_fields"].index("flags")
    grades = data["fields"].index("grades")
    marked = {
        case
        for case, cells in zip(data["suites"][0]["cases"], data["suites"][0]["grid"], strict=True)
        for repeats in cells
        for row in repeats or []
        for grade in row[grades]
        if grade[flags] == ["addresses-grader"]
    }
    # synthetic_results marks the passes of every 11th case (by position in the suite).
    assert marked and marked <= {f"case-{i:05d}" for i in range(0, 150, 11)}


def test_drilldown_data_tolerates_missing_sections() -> None:
    data = drilldown_data({"suites": {"s": {"cases": [{"case_id": "a", "config_id": "x"}]}}})
    suite = data["suites"][0]
    assert suite["configs"] == ["x"] and suite["prompts"] == [[None]]


@pytest.mark.parametrize(
    "document",
    [
        {"suites": {}},
        {"suites": {"s": {}}},
        {"suites": {"s": None}, "gate": "yes"},
        {"suites": {"s": {"configs": {"a": {}}, "stats": {"configs": "x", "pareto": None}}}},
        {"suites": {"s": {"configs": {"a": {"quality_mean": math.nan}}, "cases": [1, None]}}},
    ],
)
def test_malformed_documents_render_with_dashes(document) -> None:
    page = render_html(document)
    assert page.startswith("<!doctype html>")


def _mangle(value, rng: random.Random):
    """Deletes keys, or swaps values for None/strings/NaN, at random depth."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            roll = rng.random()
            if roll < 0.08:
                continue
            if roll < 0.16:
                out[key] = rng.choice([None, "x", float("nan"), -1, [], {}, True, 1e308])
            else:
                out[key] = _mangle(item, rng)
        return out
    if isinstance(value, list):
        return [_mangle(v, rng) for v in value[:20]]
    return value


def test_randomly_damaged_documents_never_crash_the_page() -> None:
    base = synthetic_document(20)
    for seed in range(60):
        render_html(_mangle(copy.deepcopy(base), random.Random(seed)))


def test_importing_the_report_module_does_not_import_jinja2() -> None:
    import subprocess
    import sys

    code = "import sys, evalgate.plugin, evalgate.report.html; print('jinja2' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_weak_baseline_and_underpowered_suite_are_called_out() -> None:
    from evalgate.report.html_view import build_view
    from evalgate.testing.report_data import SyntheticConfig

    configs = (
        SyntheticConfig("base", quality=0.05),
        SyntheticConfig("cheap", tier="small", quality=0.05),
    )
    view = build_view(synthetic_document(40, configs))
    headline = view.suites[0].headline
    assert headline.gate == "not gated"
    warnings = " ".join(headline.warnings)
    assert "The baseline scores only" in warnings and "Underpowered" in warnings
    # Absolute quality stands beside every candidate's delta.
    (candidate,) = headline.candidates
    assert candidate.config == "cheap" and candidate.quality.startswith("0.0")


def test_recommendation_headline_states_savings_latency_and_quality() -> None:
    from evalgate.report.html_view import build_view
    from evalgate.testing.report_data import SyntheticConfig

    configs = (
        SyntheticConfig("base", quality=0.9, latency_ms=900),
        SyntheticConfig("cheap", tier="small", quality=0.95, latency_ms=300),
    )
    view = build_view(synthetic_document(400, configs))
    headline = view.suites[0].headline
    assert headline.recommended == "cheap" and headline.gate == "passes"
    facts = dict(headline.facts)
    assert facts["cost"].startswith("saves 9") and "[95% CI" in facts["cost"]
    assert facts["latency p95"].startswith("−")  # faster: a negative change
    assert "(baseline 0.8" in facts["quality"] and facts["verdict"] == "PASS"
    assert facts["N"] == "400"
