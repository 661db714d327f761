"""Write a run's reports from its stored results: evalgate.json, summary.md, the HTML page.

One writer for the pytest session (at the end of a run) and for ``evalgate merge`` (from
shards' results, with no pytest session): both give it the run's paths and suites and get
the same files. The results are read from disk (``results.jsonl``), so what the report
says is what was recorded, never an in-memory copy that could disagree with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalgate.report.gate import GateSettings
    from evalgate.report.stored import CurrentIndex
    from evalgate.results import ReadStats
    from evalgate.runs import RunPaths
    from evalgate.suite.model import Suite


@dataclass(slots=True)
class WrittenReport:
    """What the writer produced and what to tell the user."""

    document: dict[str, Any] | None = None
    blocked: bool = False
    ignored_note: str | None = None
    html_error: str | None = None
    notes: list[str] = field(default_factory=list)


def write_run_report(
    paths: RunPaths,
    suites: Mapping[str, Suite],
    gate_settings: GateSettings,
    *,
    stored_baseline: dict[str, Any] | None = None,
    baseline_error: str | None = None,
    shard_note: str | None = None,
    extra_document: Mapping[str, Any] | None = None,
    gate_notes: Sequence[str] = (),
) -> WrittenReport:
    """Analyses the run's current results and writes its report files.

    ``baseline_error`` (a stored baseline that could not be read) becomes a blocking
    reason. ``shard_note`` marks a shard's partial run: its figures are written, its gate
    is not applied (the merged shards are gated).

    results.jsonl may be appended to meanwhile (a second process resuming the run). If
    it is rewritten in place instead, the report is made again from the file as it is
    then (a few times at most: :class:`~evalgate.report.stored.ResultsChanged` after).
    """
    from evalgate.report.stored import ResultsChanged

    for attempt in range(_ATTEMPTS):
        try:
            return _write(
                paths,
                suites,
                gate_settings,
                stored_baseline=stored_baseline,
                baseline_error=baseline_error,
                shard_note=shard_note,
                extra_document=extra_document,
                gate_notes=gate_notes,
            )
        except ResultsChanged:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


_ATTEMPTS = 3


def _write(
    paths: RunPaths,
    suites: Mapping[str, Suite],
    gate_settings: GateSettings,
    *,
    stored_baseline: dict[str, Any] | None,
    baseline_error: str | None,
    shard_note: str | None,
    extra_document: Mapping[str, Any] | None,
    gate_notes: Sequence[str],
) -> WrittenReport:
    """One attempt of :func:`write_run_report`."""
    from evalgate.report.stored import index_current
    from evalgate.results import ReadStats

    stats = ReadStats()
    # Offsets of the current results, not the results: each suite's are read back from
    # the file for each use (statistics, figures, case rows, page), one at a time.
    index = index_current(paths.results, suites, stats)
    # On success it stays open: the returned document's case rows read from it (it is
    # closed when they are dropped, as the spool of composed results is).
    try:
        return _write_indexed(
            paths,
            suites,
            gate_settings,
            index,
            stats,
            stored_baseline=stored_baseline,
            baseline_error=baseline_error,
            shard_note=shard_note,
            extra_document=extra_document,
            gate_notes=gate_notes,
        )
    except BaseException:
        index.close()
        raise


def _write_indexed(
    paths: RunPaths,
    suites: Mapping[str, Suite],
    gate_settings: GateSettings,
    index: CurrentIndex,
    stats: ReadStats,
    *,
    stored_baseline: dict[str, Any] | None,
    baseline_error: str | None,
    shard_note: str | None,
    extra_document: Mapping[str, Any] | None,
    gate_notes: Sequence[str],
) -> WrittenReport:
    """The report of the results ``index`` points at (read back from its open file)."""
    from evalgate.report.heap import release_freed_memory
    from evalgate.report.stored import ResultsChanged, composed_rows, suite_rows
    from evalgate.report.summary import build_suites_report, copy_atomic, write_json, write_text

    written = WrittenReport()
    written.ignored_note = index.ignored_note
    if not index.suites:
        return written
    by_suite = suite_rows(paths.results, index)
    from evalgate.derived import derive_results

    # Routed and cascade configs: composed from the measured results, then analysed alike.
    # One suite at a time (a suite's results are held only while its configs are
    # composed); the composed results are spooled and read back like the stored ones.
    derivations: dict[str, dict[str, Any]] = {}
    for name, rows in by_suite.items():
        if not any(config.derived is not None for config in suites[name].configs):
            continue
        measured = list(rows)
        current, derived = derive_results({name: suites[name]}, measured)
        by_suite[name] = composed_rows(rows, current[len(measured) :], paths.run_dir)
        derivations.update(derived)
        del measured, current
    from evalgate.report.gate import RunGate, analyze_suites
    from evalgate.report.markdown import render_summary

    baselines = {name: suite.baseline for name, suite in suites.items()}
    orders = {name: [c.id for c in suite.configs] for name, suite in suites.items()}

    # A defect in the analysis must not lose the report: the results are already on
    # disk; the reason becomes one blocking line.
    try:
        gate = analyze_suites(by_suite, suites, gate_settings, stored_baseline)
    except ResultsChanged:
        raise  # not a defect of the analysis: the report is made again
    except Exception as exc:
        gate = RunGate(blocking=[f"statistics failed ({type(exc).__name__}: {exc})"])
    if baseline_error:
        gate.blocking.append(baseline_error)
    # The statistics' freed blocks, returned before the rest of the report grows on top.
    release_freed_memory()
    document = build_suites_report(
        by_suite,
        run_id=paths.run_id,
        baselines=baselines,
        config_orders=orders,
        extra={name: {"stats": section} for name, section in gate.sections.items()},
        stream_cases=True,
    )
    # The document's case rows are read back from the files as they are written (see
    # report.tables.CaseRows and report.stored.StoredRows): no result is held.
    del by_suite
    release_freed_memory()  # the figures' columns, before the page is built
    from evalgate.report.inputs import suite_inputs
    from evalgate.report.settings import suite_settings

    for name, section in document["suites"].items():
        if name in suites:
            section["settings"] = suite_settings(suites[name])
            ran = {result.case_id for result in section["cases"].results}
            section["inputs"] = suite_inputs(suites[name], ran)
        if derivations.get(name):
            section["derivations"] = derivations[name]
            document.setdefault("notes", []).extend(
                f"{name}: {record['line']}" for record in derivations[name].values()
            )
    if shard_note is not None:
        # A shard's part is a fraction of the cases: its verdicts would be underpowered
        # and, over N jobs, N chances to block by luck. The merge gates the whole.
        document["gate"] = {"blocked": False, "skipped": shard_note, "reasons": [], "notes": []}
    else:
        document["gate"] = {
            "blocked": bool(gate.blocking),
            "reasons": gate.blocking,
            "notes": [*gate_notes, *gate.notes],
        }
    if written.ignored_note:
        document.setdefault("notes", []).append(written.ignored_note)
    if extra_document:
        document.update(extra_document)
    written.blocked = bool(document["gate"]["blocked"])
    write_json(document, paths.report_json)
    # The same bytes: copied, not serialised (and its rows read back) a second time.
    copy_atomic(paths.report_json, paths.run_dir / "evalgate.json")
    write_text(render_summary(document), paths.summary_md)
    written.html_error = _write_html(document, paths)
    written.document = document
    return written


def _write_html(document: dict[str, Any], paths: RunPaths) -> str | None:
    """The HTML page beside evalgate.json; a failure to render it never loses the run."""
    from evalgate.report.html import html_path_for, write_html
    from evalgate.report.stored import ResultsChanged

    try:
        write_html(document, html_path_for(paths.report_json))
    except ResultsChanged:
        raise  # the page reads the case rows: the report is made again
    except Exception as exc:  # the JSON is written; say why the page is missing
        return f"{type(exc).__name__}: {exc}"
    return None
