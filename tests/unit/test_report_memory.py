"""The end-of-run report keeps big runs' memory down without changing what it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evalgate.report.gate import _frame
from evalgate.report.summary import write_json
from evalgate.results import CallResult, CaseResult, GradeResult, to_rows
from evalgate.stats import analyze_suite
from evalgate.stats.analysis import INPUT_COLUMNS


def _result(case: int, config: str, rng: np.random.Generator) -> CaseResult:
    passed = bool(rng.random() < 0.8)
    errored = rng.random() < 0.05
    return CaseResult(
        item_key=f"s::c{case}[{config}]",
        run_id="20261203-230000-abcd",
        suite="support-answers",
        feature="support",
        suite_hash="5f1c0ffee0ddba11",
        case_id=f"c{case}",
        config_id=config,
        repeat=0,
        group=f"g{case % 7}",
        tier="small",
        model="openai/gpt-4o-mini",
        must_pass=False,
        call=CallResult(
            output="" if errored else f"answer {case} ✓",
            input_tokens=10,
            output_tokens=int(rng.integers(1, 9)),
            cost_usd=None if case % 11 == 0 else float(rng.random()) * 1e-4,
            saved_usd=0.0,
            latency_ms=float(rng.lognormal(5, 0.5)),
            ttft_ms=float(rng.lognormal(3, 0.5)),
            cached=case % 5 == 0,
            error="Timeout: slow" if errored else None,
        ),
        grades=()
        if errored
        else (GradeResult("contains", float(passed), passed, "found" if passed else "missed"),),
        score=float(passed) if not errored else 0.0,
        passed=passed and not errored,
        expected="contains(value='answer')",
        worker="main",
        finished_at=0.0,
    )


def _results(n_cases: int = 150) -> list[CaseResult]:
    rng = np.random.default_rng(7)
    return [_result(i, c, rng) for i in range(n_cases) for c in ("base", "cand")]


def test_the_statistics_frame_holds_only_the_columns_they_read() -> None:
    frame = _frame(_results())
    assert list(frame.columns) == list(INPUT_COLUMNS)
    assert "output" not in frame.columns and "grades" not in frame.columns


def test_statistics_of_the_slim_frame_equal_those_of_every_column() -> None:
    # If analysis started reading a column missing from INPUT_COLUMNS, the slim frame
    # would silently lose it: the two analyses would differ here.
    results = _results()
    kwargs = {"baseline": "base", "seed": 3, "n_boot": 300, "n_frontier_boot": 100}
    full = analyze_suite(pd.DataFrame(to_rows(results)), **kwargs).to_dict()
    slim = analyze_suite(_frame(results), **kwargs).to_dict()
    assert json.dumps(slim, sort_keys=True) == json.dumps(full, sort_keys=True)


def test_a_streamed_report_is_byte_identical_to_the_whole_document(tmp_path: Path) -> None:
    document = {
        "version": 1,
        "suites": {"s": {"cases": to_rows(_results(20)), "note": "naïve ✓ \u2028"}},
        "empty": {},
        "list": [],
    }
    path = tmp_path / "evalgate.json"
    write_json(document, path)
    expected = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    assert path.read_text(encoding="utf-8") == expected
    assert [p.name for p in tmp_path.iterdir()] == ["evalgate.json"]  # no temporary left


def test_results_read_back_share_their_repeated_fields(tmp_path: Path) -> None:
    from evalgate.results import ReadStats, ResultsWriter, read_results

    written = _results(3)
    writer = ResultsWriter(tmp_path / "results.jsonl")
    for result in written:
        writer.append(result)
    with (tmp_path / "results.jsonl").open("ab") as fh:
        fh.write(b'"a line of another shape"\n[1, 2]\n')
    writer.close()
    stats = ReadStats()
    read = list(read_results(tmp_path / "results.jsonl", stats))
    assert read == written  # the same values...
    first, *rest = read
    for field in ("run_id", "suite", "feature", "suite_hash", "tier", "model"):
        assert all(getattr(r, field) is getattr(first, field) for r in rest), field
    assert read[0].config_id is read[2].config_id  # ...one copy of each repeated text
    assert stats.unreadable == 2


def test_a_document_that_cannot_be_written_leaves_the_old_report_alone(tmp_path: Path) -> None:
    path = tmp_path / "evalgate.json"
    write_json({"version": 1}, path)
    with pytest.raises(TypeError):
        write_json({"version": 2, "cases": [{"bad": object()}]}, path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["evalgate.json"]


def _peak_mib(fn: Any) -> float:
    """Traced peak (MiB) of the memory ``fn`` allocates above what was held before it."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (peak - base) / 2**20


def _frame_of(n_cases: int) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 2 * n_cases
    return pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(n_cases)] * 2,
            "config_id": ["base"] * n_cases + ["cand"] * n_cases,
            "score": (rng.random(n) < 0.9).astype(float),
            "passed": rng.random(n) < 0.9,
            "error": np.zeros(n, dtype=bool),
            "cost_usd": rng.random(n) * 1e-4,
            "latency_ms": rng.lognormal(5, 0.5, n),
        }
    )


def test_the_statistics_peak_does_not_grow_with_the_bootstrap_blocks() -> None:
    # The frontier's joint bootstrap draws its resamples in blocks of bounded size; with
    # 1,000 cases they fit one block, with 4,000 they take four. Its peak must stay about
    # one block whatever the count: a block held while the next is drawn added a block's
    # worth (16 MiB), which a 2,000 -> 20,000-item run showed as ~0.9 KiB per item.
    kwargs = {"baseline": "base", "seed": 1, "n_boot": 200, "n_frontier_boot": 2000}
    small, large = _frame_of(1000), _frame_of(4000)
    analyze_suite(small, **kwargs)  # imports and caches outside the measurement
    peak_small = _peak_mib(lambda: analyze_suite(small, **kwargs))
    peak_large = _peak_mib(lambda: analyze_suite(large, **kwargs))
    per_row_kib = (peak_large - peak_small) * 1024 / (len(large) - len(small))
    assert per_row_kib < 1.0, (peak_small, peak_large)


class _Row(dict):  # type: ignore[type-arg]
    """A case row that counts how many rows are alive at once."""

    alive = 0
    most = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        _Row.alive += 1
        _Row.most = max(_Row.most, _Row.alive)

    def __del__(self) -> None:
        _Row.alive -= 1


class _StreamedRows(list):  # type: ignore[type-arg]
    """Rows made as iterated, as report.tables.CaseRows makes them for the writer."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self._rows = rows

    def __iter__(self) -> Any:
        for row in self._rows:
            yield _Row(row)

    def __len__(self) -> int:
        return len(self._rows)


def test_the_html_page_reads_the_case_rows_one_at_a_time() -> None:
    # evalgate.json's case rows are made as they are read (CaseRows): a page that listed
    # them all first (drill-down, case count, costs, features) held a dict per item.
    from evalgate.report.html_data import drilldown_data
    from evalgate.report.html_view import build_view
    from evalgate.report.summary import build_report

    results = _results(200)
    document = build_report(results, run_id="r", baselines={"support-answers": "base"})
    rows = document["suites"]["support-answers"]["cases"]
    expected = (drilldown_data(document), build_view(document))
    document["suites"]["support-answers"]["cases"] = _StreamedRows(rows)
    _Row.alive = _Row.most = 0
    assert (drilldown_data(document), build_view(document)) == expected
    assert _Row.most <= 2
