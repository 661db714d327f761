"""The HTML report in real headless Chromium: content, sorting, filters, drill-down, XSS."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.report.html import write_html
from evalgate.testing.report_data import (
    XSS_CASE_ID,
    XSS_TEXTS,
    SyntheticConfig,
    synthetic_document,
)
from tests.browser.demo import demo_suite
from tests.helpers import run_evalgate

pytestmark = pytest.mark.browser

CONFIGS = (
    SyntheticConfig("large", quality=0.92, latency_ms=900),
    SyntheticConfig("large-trim50", quality=0.91, latency_ms=700, context_trim=0.5),
    SyntheticConfig("small", tier="small", quality=0.80, latency_ms=250, error_rate=0.05),
    SyntheticConfig("small-r3", tier="small", quality=0.80, latency_ms=250, repeats=3),
)
HOSTILE_CONFIG = '"><svg onload=alert(3)>'


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return synthetic_document(300, CONFIGS, hostile=True)


@pytest.fixture(scope="module")
def page_path(tmp_path_factory, document) -> Path:
    return write_html(document, tmp_path_factory.mktemp("page") / "evalgate.html")


def statuses(document: dict[str, Any]) -> dict[str, dict[str, list[dict]]]:
    """case -> config -> rows, from the stored rows (independently of the page's code)."""
    cells: dict[str, dict[str, list[dict]]] = {}
    for row in document["suites"]["synthetic"]["cases"]:
        cells.setdefault(row["case_id"], {}).setdefault(row["config_id"], []).append(row)
    return cells


def status(rows: list[dict]) -> str:
    if any(r["error"] for r in rows):
        return "error"
    return "pass" if all(r["passed"] for r in rows) else "miss"


def expected_counts(document: dict[str, Any]) -> dict[str, int]:
    counts = {"all": 0, "miss": 0, "differs": 0, "error": 0, "flaky": 0}
    for by_config in statuses(document).values():
        st = {c: status(rows) for c, rows in by_config.items()}
        counts["all"] += 1
        counts["miss"] += "miss" in st.values()
        counts["error"] += "error" in st.values()
        counts["differs"] += any(s != st["large"] for s in st.values())
        counts["flaky"] += any(
            0 < sum(r["passed"] for r in ok) < len(ok)
            for rows in by_config.values()
            if len(ok := [r for r in rows if not r["error"]]) > 1
        )
    return counts


def shown_total(page) -> int:
    """The number of matching cases the drill-down's counter states."""
    text = page.one(".drill .count").text
    return 0 if text.startswith("no case") else int(text.split(" of ")[1].split(" ")[0])


def test_page_loads_with_headline_frontier_and_both_plots(open_page, page_path, document) -> None:
    page = open_page(page_path)
    assert page.console_errors() == []
    stats = document["suites"]["synthetic"]["stats"]
    headline = page.one("[data-testid=headline]").text
    recommendation = stats["recommendation"]
    if recommendation:
        assert page.one("[data-testid=recommended]").text == recommendation["config_id"]
    else:
        assert "no recommendation" in headline
    frontier = {row.get_attribute("data-config") for row in page.css("table.pareto tr.frontier")}
    assert frontier == set(stats["pareto"]["frontier"]) and frontier
    plots = page.css("svg[data-testid=plot]")
    assert len(plots) == 2
    for plot in plots:
        labels = {
            g.get_attribute("aria-label").split(":")[0]
            for g in plot.find_elements("css selector", "g.mark")
        }
        assert labels == {c.id for c in CONFIGS}
    assert "cost per case (USD)" in plots[0].text and "p95 latency (ms)" in plots[1].text


def test_sorting_orders_rows_by_the_clicked_column(open_page, page_path, document) -> None:
    page = open_page(page_path)
    stats = document["suites"]["synthetic"]["stats"]["configs"]
    by_cost = sorted(stats, key=lambda c: stats[c]["cost_per_case"]["estimate"])

    def order() -> list[str]:
        return [r.get_attribute("data-config") for r in page.css("table.pareto tbody tr")]

    header = page.one("table.pareto th[data-key=cost] button")
    header.click()
    assert order() == by_cost
    assert page.one("table.pareto th[data-key=cost]").get_attribute("aria-sort") == "ascending"
    header.click()
    assert order() == by_cost[::-1]
    page.one("table.pareto th[data-key=config] button").click()
    assert order() == sorted(stats)


def test_every_filter_shows_the_matching_cases(open_page, page_path, document) -> None:
    page = open_page(page_path)
    counts = expected_counts(document)
    assert counts["flaky"] and counts["error"] and counts["differs"] < counts["all"]
    for name in ("miss", "differs", "error", "flaky", "all"):
        page.one(f".drill button[data-filter={name}]").click()
        assert shown_total(page) == counts[name], name
        rows = page.css(".drill table.grid tbody tr")
        assert len(rows) == min(100, counts[name]), name
    # Errors filter: every shown case has an error cell, and only those.
    page.one(".drill button[data-filter=error]").click()
    for row in page.css(".drill table.grid tbody tr"):
        assert row.find_elements("css selector", "button.s-error")
    # Paging: the next page shows the following cases.
    page.one(".drill button[data-filter=all]").click()
    first = page.one(".drill table.grid tbody tr").get_attribute("data-case")
    page.one(".drill button.next").click()
    assert page.one(".drill table.grid tbody tr").get_attribute("data-case") != first
    assert page.one(".drill .count").text.startswith("cases 101–200 of 300")


def test_search_matches_case_ids_and_outputs(open_page, page_path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    page = open_page(page_path)
    search = page.one(".drill input.search")
    search.send_keys("case-00042")
    WebDriverWait(page.driver, 5).until(lambda d: shown_total(page) == 1)
    assert page.one(".drill table.grid tbody tr").get_attribute("data-case") == "case-00042"
    search.clear()
    search.send_keys("The total is 294.")  # case 42's answer, in its outputs only
    WebDriverWait(page.driver, 5).until(lambda d: "matching search" in page.one(".count").text)
    cases = {r.get_attribute("data-case") for r in page.css(".drill table.grid tbody tr")}
    assert cases == {"case-00042"}


def test_drilldown_shows_prompt_output_grades_and_the_baselines_answer(
    open_page, page_path, document
) -> None:
    page = open_page(page_path)
    cells = statuses(document)
    case = next(
        c
        for c, by in sorted(cells.items())
        if status(by["large-trim50"]) == "miss" and status(by["large"]) == "pass"
    )
    inputs = document["suites"]["synthetic"]["inputs"]
    page.js(
        "var s = document.querySelector('.drill input.search');"
        "s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
        case,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page.driver, 5).until(lambda d: shown_total(page) == 1)
    page.one(".drill button.cell[data-j='1']").click()
    detail = page.one(".drill .detail")
    assert detail.is_displayed()
    side = detail.find_element("css selector", ".side[data-config='large-trim50']")
    prompts = [p.text for p in side.find_elements("css selector", "pre.prompt-text")]
    stored = inputs["messages"][inputs["prompt"][case]["large-trim50"]]
    assert prompts == [m["content"] for m in stored]
    row = cells[case]["large-trim50"][0]
    assert side.find_element("css selector", "pre.output").text == row["output"]
    assert row["grades"][0]["reason"] in side.text and "finish reason" in side.text
    assert f"expected: {row['expected']}" in detail.text
    base = detail.find_element("css selector", ".side[data-config='large']")
    assert base.find_element("css selector", "pre.output").text == cells[case]["large"][0]["output"]


def test_drilldown_marks_flagged_grades(open_page, page_path, document) -> None:
    cells = statuses(document)
    case, config = next(
        (c, cfg)
        for c, by in sorted(cells.items())
        for cfg, rows in by.items()
        if cfg == "large" and any(g["flags"] for r in rows for g in r["grades"])
    )
    page = open_page(page_path)
    page.js(
        "var s = document.querySelector('.drill input.search');"
        "s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
        case,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page.driver, 5).until(lambda d: shown_total(page) == 1)
    page.one(".drill button.cell[data-j='0']").click()
    side = page.one(".drill .detail").find_element("css selector", f".side[data-config='{config}']")
    flags = side.find_elements("css selector", "table.grades .flag")
    assert [f.text for f in flags] == ["addresses-grader"]
    assert "check it by hand" in flags[0].get_attribute("title")


def test_hostile_text_renders_as_text_and_runs_nothing(open_page, tmp_path, document) -> None:
    text = json.dumps(document).replace('"small"', json.dumps(HOSTILE_CONFIG))
    page = open_page(write_html(json.loads(text), tmp_path / "evalgate.html"))
    assert page.xss_trace() == []
    assert page.css("img") == [] and len(page.css("script")) == 2
    assert page.css("svg [onload]") == []
    # The hostile config name is text in the table and in both plots' labels.
    names = [e.text for e in page.css("table.pareto td .cfg")]
    assert HOSTILE_CONFIG in names
    labels = [e.text for e in page.css("svg g.mark text.label")]
    assert labels.count(HOSTILE_CONFIG) == 2
    # The hostile case id and outputs are text in the grid and the drill-down.
    page.js(
        "var s = document.querySelector('.drill input.search');"
        "s.value = 'alert('; s.dispatchEvent(new Event('input'));"
    )
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page.driver, 5).until(lambda d: "matching" in page.one(".count").text)
    shown = [r.get_attribute("data-case") for r in page.css(".drill table.grid tbody tr")]
    assert {"case-00000", "case-00001", XSS_CASE_ID} <= set(shown)
    assert XSS_CASE_ID in page.one(".drill table.grid").text
    first = page.one(".drill table.grid tbody tr[data-case='case-00000']")
    for cell in first.find_elements("css selector", "button.cell"):
        cell.click()
        outputs = [e.text for e in page.css(".drill .detail pre.output")]
        prompts = " ".join(e.text for e in page.css(".drill .detail pre.prompt-text"))
        assert any(XSS_TEXTS[0] in o or o.startswith("error:") for o in outputs)
        assert XSS_TEXTS[0] in prompts or not prompts
    assert page.css("img") == [] and page.xss_trace() == []
    assert page.console_errors() == []


def test_screenshot_of_a_demo_like_report(open_page, tmp_path, fake_server, request) -> None:
    """A real run on the fault-injecting server, its page, and a screenshot for reviewers."""
    (tmp_path / "s.yaml").write_text(demo_suite(fake_server.base_url, uuid.uuid4().hex[:8]))
    proc = run_evalgate(tmp_path, "--evalgate-concurrency", "8")
    assert proc.returncode == 0, proc.stdout[-2000:]
    page = open_page(tmp_path / "reports" / "evalgate.html")
    assert page.console_errors() == [] and page.xss_trace() == []
    assert page.one("[data-testid=recommended]").text == "large-trim50"
    # Open a differing case so the drill-down is in the picture too.
    page.one(".drill button[data-filter=differs]").click()
    page.one(".drill table.grid tbody button.s-miss").click()
    target = request.config.rootpath / "reports" / "screenshots" / "evalgate-report.png"
    page.screenshot(target)
    assert target.stat().st_size > 50_000
