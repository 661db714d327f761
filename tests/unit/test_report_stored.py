"""The report reads results.jsonl back by offsets: what it reads must be what it indexed,
whatever happens to the file in between (a second process appending, a user or a tool
rewriting it), and its odd lines (a BOM, CRLF, lone surrogates) read as before."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from evalgate.report.stored import ResultsChanged, index_current, suite_rows
from evalgate.results import CaseResult, ReadStats, ResultsWriter, read_results
from evalgate.runs import RunPaths
from evalgate.suite.model import Suite
from evalgate.testing.report_data import synthetic_results, synthetic_suite


def _stored(path: Path, cases: int = 8) -> tuple[Suite, list[CaseResult]]:
    suite = synthetic_suite(cases)
    results = synthetic_results(suite, seed=2)
    writer = ResultsWriter(path)
    for result in results:
        writer.append(result)
    writer.close()
    return suite, results


def _indexed(path: Path, suite: Suite) -> Any:
    index = index_current(path, {suite.name: suite})
    return index, suite_rows(path, index)[suite.name]


def test_lines_appended_after_indexing_leave_the_read_back_alone(tmp_path: Path) -> None:
    # A second process resuming the same run appends while the report is written.
    path = tmp_path / "results.jsonl"
    suite, results = _stored(path)
    index, rows = _indexed(path, suite)
    writer = ResultsWriter(path)
    writer.append(dataclasses.replace(results[0], score=0.0, passed=False))
    writer.close()
    assert list(rows) == results and rows[3] == results[3]
    index.close()


def test_a_results_file_replaced_after_indexing_is_read_as_indexed(tmp_path: Path) -> None:
    # An editor's save, `sed -i` or a tool writing a new file and renaming it over the
    # old one: the offsets belong to the file that was indexed, which is the one read.
    path = tmp_path / "results.jsonl"
    suite, results = _stored(path)
    index, rows = _indexed(path, suite)
    lines = path.read_bytes().splitlines(keepends=True)
    (tmp_path / "new").write_bytes(b"".join(lines[1:]))  # every offset moves
    os.replace(tmp_path / "new", path)
    assert list(rows) == results and rows[-1] == results[-1]
    index.close()


@pytest.mark.parametrize("change", ["truncated", "edited"])
def test_a_results_file_rewritten_in_place_after_indexing_is_refused(
    tmp_path: Path, change: str
) -> None:
    # Rewritten in place (truncated, or a value edited without moving a byte): reading
    # the offsets again would read other lines or other values, and the report's passes
    # (statistics, figures, case rows, page) would disagree. It says so instead.
    path = tmp_path / "results.jsonl"
    suite, _ = _stored(path)
    index, rows = _indexed(path, suite)
    data = path.read_bytes()
    with path.open("r+b") as fh:
        if change == "truncated":
            fh.truncate(len(data) // 2)
        else:
            fh.write(data.replace(b'"passed":false', b'"passed":true ', 1))
    with pytest.raises(ResultsChanged) as raised:
        list(rows)
    message = str(raised.value)
    assert str(path) in message and "byte" in message and "\n" not in message
    index.close()


def test_the_writer_starts_again_when_the_file_changes_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The file is rewritten in place while the statistics run: the report is made again
    # from the file as it now is, and says what the file says.
    import time

    import evalgate.stats as stats
    from evalgate.report.gate import GateSettings
    from evalgate.report.write import write_run_report

    from .test_report_memory import _reference_report

    fixed = time.struct_time((2026, 12, 4, 6, 0, 0, 4, 338, 0))
    monkeypatch.setattr(time, "gmtime", lambda *_: fixed)
    paths = RunPaths(tmp_path / "reports", "run-1")
    suite, _ = _stored(paths.results, cases=30)
    suites = {suite.name: suite}
    analyze = stats.analyze_suite
    rewritten: list[bool] = []

    def rewrite_once(*args: Any, **kwargs: Any) -> Any:
        if not rewritten:
            rewritten.append(True)
            data = paths.results.read_bytes()
            with paths.results.open("r+b") as fh:
                fh.write(data.replace(b'"passed":false', b'"passed":true ', 5))
        return analyze(*args, **kwargs)

    monkeypatch.setattr(stats, "analyze_suite", rewrite_once)
    written = write_run_report(paths, suites, GateSettings())
    monkeypatch.setattr(stats, "analyze_suite", analyze)
    expected_json, expected_md, _ = _reference_report(paths, suites)
    assert rewritten and written.document is not None
    assert paths.report_json.read_text(encoding="utf-8") == expected_json
    assert paths.summary_md.read_text(encoding="utf-8") == expected_md


def test_a_byte_order_mark_does_not_cost_the_first_result(tmp_path: Path) -> None:
    # A results file saved by an editor that adds a BOM: its first line is a result, not
    # "a line torn by an interrupted writer" (which a resume would call again).
    path = tmp_path / "results.jsonl"
    suite, results = _stored(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    stats = ReadStats()
    assert list(read_results(path, stats)) == results and stats == ReadStats()
    index, rows = _indexed(path, suite)
    assert index.ignored_note is None and list(rows) == results and rows[0] == results[0]
    index.close()


def test_crlf_lines_read_as_lf_lines(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    suite, results = _stored(path)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    index, rows = _indexed(path, suite)
    assert index.ignored_note is None and list(rows) == results
    index.close()


def test_a_lone_surrogate_in_an_output_does_not_lose_the_report(tmp_path: Path) -> None:
    # results.jsonl keeps such an output (as a JSON escape); the report must too, in
    # evalgate.json (the same escape, read back as the same text), summary.md and the page.
    from evalgate.report.gate import GateSettings
    from evalgate.report.write import write_run_report

    paths = RunPaths(tmp_path / "reports", "run-1")
    suite = synthetic_suite(6)
    results = synthetic_results(suite, seed=2)
    call = dataclasses.replace(results[0].call, output="half a pair \udc80 ✓")
    results[0] = dataclasses.replace(results[0], call=call)
    writer = ResultsWriter(paths.results)
    for result in results:
        writer.append(result)
    writer.close()
    written = write_run_report(paths, {suite.name: suite}, GateSettings())
    assert written.html_error is None
    text = paths.report_json.read_text(encoding="utf-8")  # valid UTF-8
    cases = json.loads(text)["suites"][suite.name]["cases"]
    assert cases[0]["output"] == "half a pair \udc80 ✓"
    assert "✓" in text  # everything else still written as text, not escapes
    html = (paths.reports / "evalgate.html").read_text(encoding="utf-8")
    assert "half a pair" in html


def test_spooled_results_leave_no_file_and_are_held_when_none_can_be_written(
    tmp_path: Path,
) -> None:
    # The composed (derived) results go to an unnamed file in the run's directory: a
    # crash leaves nothing behind. A directory that cannot take one (a full disk, a
    # TMPDIR that is not a directory) must not lose the report: the results are held.
    from evalgate.report.stored import StoredRows, spool

    results = synthetic_results(synthetic_suite(5), seed=1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spooled = StoredRows([spool(results, run_dir)])
    assert list(spooled) == results and spooled[-1] == results[-1]
    assert list(run_dir.iterdir()) == []
    (tmp_path / "a-file").write_text("")
    held = spool(results, tmp_path / "a-file")
    assert list(StoredRows([held])) == results


FULL_DISK = """
import os, resource, signal, sys
from pathlib import Path
from evalgate.report.summary import copy_atomic, write_json, write_text

out = Path(sys.argv[1])
write_text("old summary\\n", out / "summary.md")
write_json({"version": "old"}, out / "evalgate.json")
(out / "big.json").write_text("x" * 10_000)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
for write in (
    lambda: write_text("new summary " * 1000, out / "summary.md"),
    lambda: write_json({"version": "new", "pad": "y" * 5000}, out / "evalgate.json"),
    lambda: copy_atomic(out / "big.json", out / "evalgate.json"),
):
    try:
        write()
    except OSError:
        print("refused")
"""


def test_a_disk_that_fills_mid_write_leaves_the_previous_reports_whole(tmp_path: Path) -> None:
    # A file-size limit stands in for a full disk: each report file is written beside
    # its target and renamed over it, so the previous one is left whole, with no
    # temporary file beside it.
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["refused"] * 3
    assert (tmp_path / "summary.md").read_text() == "old summary\n"
    assert json.loads((tmp_path / "evalgate.json").read_text()) == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.json", "evalgate.json", "summary.md"]


WITHOUT_CTYPES = """
import sys
sys.modules["ctypes"] = None  # a Python built without ctypes: importing it fails
from evalgate.report.heap import release_freed_memory
print(release_freed_memory())
"""


def test_no_ctypes_means_nothing_is_trimmed_and_nothing_fails() -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT_CTYPES], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_a_semantic_cache_config_reports_what_the_in_memory_writer_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The semantic cache replays its twin's results in case order through real MiniLM
    # embeddings: composed per suite from the read-back rows, spooled, then analysed,
    # its report must be the one made from every result held at once.
    import time

    from evalgate.report.gate import GateSettings
    from evalgate.report.write import write_run_report
    from evalgate.results import CallResult, GradeResult
    from evalgate.suite.loader import load_suite
    from tests.plugin.test_semcache_suite import suite_text, traffic

    from .test_report_memory import _reference_report

    fixed = time.struct_time((2026, 12, 4, 6, 0, 0, 4, 338, 0))
    monkeypatch.setattr(time, "gmtime", lambda *_: fixed)
    rows = traffic(12)
    (tmp_path / "s.yaml").write_text(suite_text("http://127.0.0.1:9/v1", "k", rows))
    suite = load_suite(tmp_path / "s.yaml")
    paths = RunPaths(tmp_path / "reports", "run-1")
    writer = ResultsWriter(paths.results)
    for i, row in enumerate(rows):
        ok = i % 9 != 4
        writer.append(
            CaseResult(
                item_key=f"doors::{row['id']}[fresh]",
                run_id="run-1",
                suite="doors",
                feature="doors",
                suite_hash=suite.suite_hash,
                case_id=row["id"],
                config_id="fresh",
                repeat=0,
                group=None,
                tier="t",
                model="openai/fake",
                must_pass=False,
                call=CallResult(
                    output=f"The code is {row['answer'] if ok else '0000'}.",
                    input_tokens=20,
                    output_tokens=5,
                    cost_usd=3e-5,
                    latency_ms=100.0 + i,
                    ttft_ms=30.0,
                ),
                grades=(GradeResult("contains", float(ok), ok, "found" if ok else "missed"),),
                score=float(ok),
                passed=ok,
                expected=f"contains(value={row['answer']!r})",
            )
        )
    writer.close()
    suites = {suite.name: suite}
    written = write_run_report(paths, suites, GateSettings())
    expected_json, expected_md, expected_html = _reference_report(paths, suites)
    assert written.html_error is None
    assert paths.report_json.read_text(encoding="utf-8") == expected_json
    assert paths.summary_md.read_text(encoding="utf-8") == expected_md
    assert (paths.reports / "evalgate.html").read_text(encoding="utf-8") == expected_html
    document = json.loads(expected_json)
    assert document["suites"]["doors"]["derivations"]["cached"].get("error") is None
    cached = [r for r in document["suites"]["doors"]["cases"] if r["config_id"] == "cached"]
    assert len(cached) == len(rows) and any(r["cost_usd"] == 0 for r in cached)  # hits


def test_the_returned_document_still_reads_its_case_rows(tmp_path: Path) -> None:
    # The session and library callers keep the document the writer returns; its case
    # rows are read from results.jsonl when iterated, after the writer has returned.
    from evalgate.report.gate import GateSettings
    from evalgate.report.write import write_run_report

    paths = RunPaths(tmp_path / "reports", "run-1")
    suite, results = _stored(paths.results)
    written = write_run_report(paths, {suite.name: suite}, GateSettings())
    assert written.document is not None
    rows = list(written.document["suites"][suite.name]["cases"])
    stored = json.loads(paths.report_json.read_text(encoding="utf-8"))
    assert len(rows) == len(results) and rows == stored["suites"][suite.name]["cases"]


def test_an_item_stored_twice_counts_once_its_latest_line_where_it_first_appeared(
    tmp_path: Path,
) -> None:
    # The rule of resume.current_results: the latest line wins (even a failed or stale
    # one), in the order of the item's first appearance; the earlier line is not used.
    from evalgate.results import latest_by_item
    from evalgate.resume import current_results

    path = tmp_path / "results.jsonl"
    suite, results = _stored(path)
    writer = ResultsWriter(path)
    newer = dataclasses.replace(results[0], score=0.25, passed=False)
    stale = dataclasses.replace(results[1], suite_hash="edited-since")
    writer.append(newer)
    writer.append(stale)
    writer.close()
    index, rows = _indexed(path, suite)
    expected, note = current_results(latest_by_item(read_results(path)), {suite.name: suite})
    assert list(rows) == expected and rows[0] == newer and results[1] not in list(rows)
    assert index.ignored_note == note and note is not None and "earlier version" in note
    index.close()


KILLED_MID_WRITE = """
import sys, time
from pathlib import Path
from evalgate.report.summary import write_json

class Rows(list):  # case rows made as written, as CaseRows makes them
    def __bool__(self):
        return True

    def __iter__(self):
        yield {"case_id": "c0"}
        Path(sys.argv[2]).write_text("half written")
        time.sleep(300)  # killed here, mid-document

write_json({"version": "new", "cases": Rows()}, Path(sys.argv[1]))
"""


def test_a_run_killed_mid_report_leaves_the_previous_evalgate_json(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from evalgate.report.summary import copy_atomic, write_json

    report = tmp_path / "evalgate.json"
    write_json({"version": "old"}, report)
    copy_atomic(report, tmp_path / "copy.json")
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_WRITE, str(report), str(marker)], env=env
    )
    try:
        for _ in range(600):  # a bound on the wait, not a timing assertion
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), "the writer never got mid-document"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads(report.read_text(encoding="utf-8")) == {"version": "old"}
    assert json.loads((tmp_path / "copy.json").read_text(encoding="utf-8")) == {"version": "old"}
