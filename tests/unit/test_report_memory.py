"""The end-of-run report keeps big runs' memory down without changing what it writes."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
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


DERIVED_SUITE = """\
suite: derived
tiers:
  t: {model: "openai/fake", price: {input_per_mtok: 1, output_per_mtok: 20}}
prompt:
  - {role: user, content: "{{ question }}"}
assert:
  - {type: contains, value: "{{ answer }}"}
configs:
  - {id: large, tier: t, max_tokens: 50}
  - {id: small, tier: t, max_tokens: 3}
  - {id: routed, router: {small: small, large: large, max_loss: 0.1, alpha: 0.1}}
  - id: cascade
    cascade: {first: small, then: large, accept: [{type: regex, pattern: "^echo: v[0-9]+$"}]}
baseline: large
cases:
"""


def _derived_results(suite: Any, n: int) -> list[CaseResult]:
    out = []
    for i in range(n):
        for config, ok in (("large", True), ("small", i % 2 == 0)):
            answer = f"v{i * 7}"
            text = f"echo: {answer}" if ok else "echo: please tell"
            out.append(
                CaseResult(
                    item_key=f"derived::q{i}[{config}]",
                    run_id="r1",
                    suite="derived",
                    feature="derived",
                    suite_hash=suite.suite_hash,
                    case_id=f"q{i}",
                    config_id=config,
                    repeat=0,
                    group=None,
                    tier="t",
                    model="openai/fake",
                    must_pass=False,
                    call=CallResult(
                        output=text,
                        input_tokens=5 + i % 2 * 10,
                        output_tokens=3,
                        cost_usd=1e-6 * (2 if config == "large" else 1),
                        latency_ms=10.0 + i,
                    ),
                    grades=(GradeResult("contains", float(ok), ok, "found" if ok else "missed"),),
                    score=float(ok),
                    passed=ok,
                    expected=f"contains(value={answer!r})",
                )
            )
    return out


def _reference_report(paths: Any, suites: dict[str, Any]) -> tuple[str, str, str]:
    """evalgate.json, summary.md and the HTML page as the writer made them while it held
    every result in memory (from the same building blocks): the streamed writer must
    produce the same bytes."""
    from evalgate.derived import derive_results
    from evalgate.report.gate import GateSettings, analyze_run
    from evalgate.report.html import render_html
    from evalgate.report.inputs import suite_inputs
    from evalgate.report.markdown import render_summary
    from evalgate.report.settings import suite_settings
    from evalgate.report.summary import build_report
    from evalgate.results import ReadStats, latest_by_item, read_results
    from evalgate.resume import current_results

    stats = ReadStats()
    current, note = current_results(
        latest_by_item(read_results(paths.results, stats)), suites, stats
    )
    current, derivations = derive_results(suites, current)
    gate = analyze_run(current, suites, GateSettings())
    document = build_report(
        current,
        run_id=paths.run_id,
        baselines={name: suite.baseline for name, suite in suites.items()},
        config_orders={name: [c.id for c in suite.configs] for name, suite in suites.items()},
        extra={name: {"stats": section} for name, section in gate.sections.items()},
    )
    for name, section in document["suites"].items():
        section["settings"] = suite_settings(suites[name])
        section["inputs"] = suite_inputs(suites[name], {r["case_id"] for r in section["cases"]})
        if derivations.get(name):
            section["derivations"] = derivations[name]
            document.setdefault("notes", []).extend(
                f"{name}: {record['line']}" for record in derivations[name].values()
            )
    document["gate"] = {"blocked": bool(gate.blocking), "reasons": gate.blocking, "notes": []}
    if note:
        document.setdefault("notes", []).append(note)
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    return text, render_summary(document), render_html(document)


def test_the_streamed_writer_writes_what_the_in_memory_one_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resumed run's file: superseded, stale, removed, unreadable and torn lines, a
    # suite of six configs (errors, cache hits, unknown costs) and one whose routed and
    # cascade configs are composed when the report is written.
    import time

    from evalgate.report.gate import GateSettings
    from evalgate.report.write import write_run_report
    from evalgate.results import ResultsWriter
    from evalgate.runs import RunPaths
    from evalgate.suite.loader import load_suite
    from evalgate.testing.report_data import synthetic_results, synthetic_suite

    fixed = time.struct_time((2026, 12, 4, 6, 0, 0, 4, 338, 0))
    monkeypatch.setattr(time, "gmtime", lambda *_: fixed)
    synthetic = synthetic_suite(110)
    rows = "".join(
        f'  - {{id: q{i}, vars: {{question: "q {i}", answer: "v{i * 7}"}}}}\n' for i in range(40)
    )
    (tmp_path / "derived.yaml").write_text(DERIVED_SUITE + rows)
    derived = load_suite(tmp_path / "derived.yaml")
    suites = {synthetic.name: synthetic, derived.name: derived}
    paths = RunPaths(tmp_path / "reports", "run-1")
    measured = synthetic_results(synthetic, seed=4) + _derived_results(derived, 40)
    old = dataclasses.replace(measured[7], suite_hash="earlier", score=0.0, passed=False)
    removed = dataclasses.replace(measured[0], config_id="gone-config")
    stale = dataclasses.replace(measured[-1], suite_hash="earlier")
    writer = ResultsWriter(paths.results)
    for result in [old, removed, *measured[::-1], measured[7], stale]:
        writer.append(result)  # reversed: first appearances are not the suites' order
    writer.close()
    with paths.results.open("ab") as fh:
        fh.write(b'"another shape"\n{"item_key": "torn')

    written = write_run_report(paths, suites, GateSettings())
    expected_json, expected_md, expected_html = _reference_report(paths, suites)
    assert written.ignored_note and "stored result(s) ignored" in written.ignored_note
    assert paths.report_json.read_text(encoding="utf-8") == expected_json
    assert (paths.run_dir / "evalgate.json").read_text(encoding="utf-8") == expected_json
    assert paths.summary_md.read_text(encoding="utf-8") == expected_md
    html = (paths.reports / "evalgate.html").read_text(encoding="utf-8")
    assert html == expected_html
    assert '"derivations"' in expected_json and '"cascade"' in expected_json


def _held_at_statistics(tmp_path: Path, n_cases: int) -> int:
    """Traced memory the report writer holds when the statistics start (bytes)."""
    import gc
    import tracemalloc

    import evalgate.stats as stats
    from evalgate.report.gate import GateSettings
    from evalgate.report.write import write_run_report
    from evalgate.results import ResultsWriter
    from evalgate.runs import RunPaths
    from evalgate.testing.report_data import SyntheticConfig, synthetic_results, synthetic_suite

    configs = (SyntheticConfig("large"), SyntheticConfig("small", tier="small", quality=0.85))
    suite = synthetic_suite(n_cases, configs)
    paths = RunPaths(tmp_path / f"reports-{n_cases}", "r")
    writer = ResultsWriter(paths.results)
    for result in synthetic_results(suite, configs):
        writer.append(result)
    writer.close()
    held: list[int] = []
    analyze = stats.analyze_suite

    def spy(*args: Any, **kwargs: Any) -> Any:
        held.append(tracemalloc.get_traced_memory()[0])
        if n_cases > 20:
            raise _Measured  # the rest of the report is not what is measured here
        return analyze(*args, **kwargs)

    gc.collect()
    tracemalloc.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(stats, "analyze_suite", spy)
            with contextlib.suppress(_Measured):
                write_run_report(paths, {suite.name: suite}, GateSettings())
    finally:
        tracemalloc.stop()
    return held[0]


class _Measured(BaseException):
    """Ends the writer once measured (not an Exception: the writer keeps going on those)."""


def test_the_report_writer_holds_no_result_object_per_item(tmp_path: Path) -> None:
    # The writer reads each suite's results back from results.jsonl for each use; what
    # it holds per item while the statistics run is an offset and the suite's columns,
    # not the run's results (a CaseResult with its call and grades is ~1.1 KiB).
    _held_at_statistics(tmp_path, 20)  # imports and caches outside the measurement
    small, large = _held_at_statistics(tmp_path, 300), _held_at_statistics(tmp_path, 1200)
    per_item_kib = (large - small) / 1024 / (2 * (1200 - 300))
    assert per_item_kib < 0.4, per_item_kib


RELEASE_SCRIPT = """
import numpy as np, pandas as pd
from evalgate.report.heap import release_freed_memory
from evalgate.stats import analyze_suite

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

n = 4000
rng = np.random.default_rng(5)
frame = pd.DataFrame({
    "case_id": [f"c{i}" for i in range(n)] * 2,
    "config_id": ["base"] * n + ["cand"] * n,
    "score": (rng.random(2 * n) < 0.9).astype(float),
    "cost_usd": rng.random(2 * n) * 1e-4,
    "latency_ms": rng.lognormal(5, 0.5, 2 * n),
})
analyze_suite(frame, baseline="base", n_boot=200)
before = rss()
print(release_freed_memory(), before - rss())
"""


def test_the_statistics_freed_blocks_go_back_to_the_system() -> None:
    # glibc keeps up to ~32 MiB of freed heap after the bootstrap's blocks; the writer
    # hands it back before the HTML page grows the process on top of it (the run's peak).
    import os
    import subprocess
    import sys

    if not Path("/proc/self/statm").exists():
        pytest.skip("no /proc/self/statm to read the resident set from")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    released, freed_mib = proc.stdout.split()
    if released != "True":
        pytest.skip("no malloc_trim here (not glibc): nothing to hand back")
    assert float(freed_mib) > 8, freed_mib


def test_the_drilldown_text_is_the_data_encoded_without_the_rows_as_objects() -> None:
    # The page's drill-down JSON is made row by row (each row encoded as read); it must
    # be the text of the whole data encoded at once, hostile strings and repeats included.
    from evalgate.report.html import embed_json
    from evalgate.report.html_data import drilldown_data, drilldown_json
    from evalgate.testing.report_data import (
        DEFAULT_CONFIGS,
        SyntheticConfig,
        synthetic_document,
    )

    configs = (*DEFAULT_CONFIGS, SyntheticConfig("small-r3", tier="small", repeats=3))
    document = synthetic_document(cases=400, configs=configs, hostile=True)
    rows = document["suites"]["synthetic"]["cases"]
    rows[0]["latency_ms"] = math.nan
    rows[1]["output"] = '"</script><!-- \u2028 ✓'
    rows.append({"case_id": "extra", "config_id": "not-listed", "repeat": 1})
    rows.append({"case_id": "extra", "config_id": "not-listed", "repeat": 0})
    expected = embed_json(drilldown_data(document))
    assert drilldown_json(document) == expected
    peak_whole = _peak_mib(lambda: embed_json(drilldown_data(document)))
    peak_rows = _peak_mib(lambda: drilldown_json(document))
    assert peak_rows < 0.7 * peak_whole, (peak_rows, peak_whole)
