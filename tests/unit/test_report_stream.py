"""evalgate.json made suite by suite, its case rows made as written, says what the
document built whole in memory (every row as a dict, then a JSON-safe copy) said."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from evalgate.report.summary import _figures, build_report, config_summary, write_json
from evalgate.report.tables import CaseRows
from evalgate.results import CallResult, CaseResult, GradeResult, to_rows
from evalgate.stats._common import json_safe


def _result(suite: str, case: int, config: str, repeat: int) -> CaseResult:
    errored = (case + repeat) % 7 == 3
    passed = not errored and case % 3 != 0
    return CaseResult(
        item_key=f"{suite}::c{case}[{config}-r{repeat + 1}]",
        run_id="20261204-000000-abcd",
        suite=suite,
        feature=f"f-{suite}",
        suite_hash=f"hash-{suite}",
        case_id=f"c{case}",
        config_id=config,
        repeat=repeat,
        group=None if case % 2 else f"g{case % 3}",
        tier="small" if config == "base" else "big",
        model=f"openai/{config}",
        must_pass=case == 1,
        call=CallResult(
            output="" if errored else f"answer {case} ✓ <b>",
            # Suite "b" reports no tokens for some calls: its numbers read as floats.
            input_tokens=None if suite == "b" and case % 4 == 0 else 10 + case,
            output_tokens=3,
            cost_usd=None if case % 5 == 0 else 1e-5 * (case + 1),
            latency_ms=100.0 + case,
            ttft_ms=None if suite == "a" else 20.0 + case,
            cached=case % 6 == 0,
            attempts=2 if errored else 1,
            error="Timeout: slow" if errored else None,
            finish_reason=None if errored else "stop",
        ),
        grades=()
        if errored
        else (
            GradeResult("contains", float(passed), passed, "found" if passed else "missed"),
            GradeResult("judge", 0.5, False, "meh", cost_usd=2e-4, calls=1, flags=("x",)),
        ),
        score=float("nan") if case == 5 else (1.0 if passed else 0.0),
        passed=passed,
        expected=f"contains(value='{case}')",
    )


def _results() -> list[CaseResult]:
    out = []
    for suite in ("b", "a"):  # written out of name order: the report sorts suites
        for repeat in (0, 1):
            for case in range(12):
                for config in ("base", "cand", "zeta"):
                    out.append(_result(suite, case, config, repeat))
    return out


def _in_memory_report(results: list[CaseResult], orders: dict[str, list[str]]) -> dict[str, Any]:
    """The report as built before: one frame of every column, rows from ``to_dict``."""
    frame = pd.DataFrame(to_rows(results))
    suites: dict[str, Any] = {}
    for name, suite_rows in frame.groupby("suite", sort=True):
        by_config = dict(iter(suite_rows.groupby("config_id", sort=False)))
        ids = [c for c in orders[str(name)] if c in by_config] + sorted(
            str(c) for c in by_config if c not in orders[str(name)]
        )
        suites[str(name)] = {
            "feature": f"f-{name}",
            "suite_hash": f"hash-{name}",
            "baseline": "base",
            "configs": {
                c: config_summary(by_config[c], _figures(by_config[c], c, None)) for c in ids
            },
            "cases": suite_rows.drop(columns=["suite", "feature"]).to_dict(orient="records"),
        }
    return json_safe({"suites": suites})


def test_streamed_report_equals_the_in_memory_one(tmp_path: Path) -> None:
    results = _results()
    orders = {"a": ["cand", "base"], "b": ["base"]}  # "zeta" is not in b's order
    document = build_report(
        results,
        run_id="r",
        baselines={"a": "base", "b": "base"},
        config_orders=orders,
        stream_cases=True,
    )
    expected = _in_memory_report(results, orders)
    assert list(document["suites"]) == ["a", "b"]
    for name in ("a", "b"):
        section = document["suites"][name]
        assert isinstance(section["cases"], CaseRows)
        assert list(section) == list(expected["suites"][name])  # same keys, same order
    # The files say the same, number for number (ints read as floats where they did).
    write_json(document, tmp_path / "streamed.json")
    write_json({**document, "suites": expected["suites"]}, tmp_path / "whole.json")
    streamed = (tmp_path / "streamed.json").read_text(encoding="utf-8")
    whole = (tmp_path / "whole.json").read_text(encoding="utf-8")
    assert streamed == whole
    loaded = json.loads(streamed)
    assert len(loaded["suites"]["b"]["cases"]) == 72
    assert loaded["suites"]["b"]["cases"][0]["input_tokens"] is None
    # One frame held every suite: suite b's missing counts made a's read as floats too.
    assert '"input_tokens": 11.0' in streamed and '"input_tokens": 11,' not in streamed


def test_case_rows_read_like_a_list() -> None:
    results = _results()[:6]
    rows = build_report(results, run_id="r", baselines={}, stream_cases=True)["suites"]["b"][
        "cases"
    ]
    plain = rows.materialize()
    assert len(rows) == 6 and bool(rows) and rows[0] == plain[0] and rows[1:3] == plain[1:3]
    assert rows == plain and list(rows) == plain
    assert "suite" not in plain[0] and plain[0]["case_id"] == "c0"
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(rows)) == plain
    assert copy.deepcopy(rows) == plain


def test_suite_table_is_the_frame_of_its_rows() -> None:
    """Built column by column, the table has the values and types of the rows' frame."""
    from evalgate.report.summary import _summary_columns
    from evalgate.report.tables import suite_table
    from evalgate.stats.analysis import INPUT_COLUMNS

    results = _results()
    for columns in (INPUT_COLUMNS, _summary_columns()):
        pd.testing.assert_frame_equal(
            suite_table(results, columns), pd.DataFrame(to_rows(results, columns))
        )


def test_a_document_built_for_other_uses_holds_plain_lists() -> None:
    """Outside the run's writer the rows are a list (json.dumps' C encoder reads a
    list's storage, which a CaseRows does not fill)."""
    document = build_report(_results()[:6], run_id="r", baselines={})
    rows = document["suites"]["b"]["cases"]
    assert type(rows) is list and len(json.loads(json.dumps(document))["suites"]["b"]["cases"]) == 6
