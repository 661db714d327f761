"""Results -> per suite and config figures, ``reports/evalgate.json`` and the terminal table."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalgate.results import CaseResult

if TYPE_CHECKING:
    import pandas as pd

REPORT_VERSION = 1


def _percentile(series: pd.Series, q: float) -> float | None:
    values = series.dropna()
    return float(values.quantile(q)) if len(values) else None


_FIGURES = (
    "quality",
    "pass_rate",
    "total_cost_usd",
    "cost_per_case",
    "saved_usd",
    "latency_p50",
    "latency_p95",
    "ttft_p50",
    "ttft_p95",
)


def _estimate(interval: Mapping[str, Any] | None) -> float | None:
    return None if not interval else interval.get("estimate")


def _joined(column: pd.Series) -> str:
    """The one value of a column, or its distinct values joined with '+' (sorted)."""
    values = sorted({str(v) for v in column})
    return "+".join(values)


def config_summary(rows: pd.DataFrame, figures: Mapping[str, Any]) -> dict[str, Any]:
    """One config's entry in evalgate.json.

    ``figures`` is the config's :class:`evalgate.stats.ConfigStats` as a dict: quality,
    pass rate, errors, cost and latency come from there only (one source of per-config
    figures; cost and latency over completed calls, errors counted beside them). The
    rest (tokens, misses, repeats, grading cost) are the report's own.
    """
    ok = rows[~rows["error"]]
    # Repeats: pass^k = every repeat of a case passed; flaky = some but not all did.
    repeat_pass = ok.groupby("case_id")["passed"].agg(["mean", "count"])
    repeats = int(rows.groupby("case_id")["repeat"].nunique().max()) if len(rows) else 0
    measured = ok[~ok["cached"]]
    return {
        # A routed or cascade config's rows come from two tiers: name both, never
        # whichever answered its first case.
        "tier": _joined(rows["tier"]),
        "model": _joined(rows["model"]),
        "n_cases": int(figures["n_cases"]),
        "n_items": len(rows),
        "n_completed_cases": int(figures["n_completed"]),
        "quality_mean": _estimate(figures["quality"]),
        "pass_rate": figures["pass_rate"],
        "errors": int(figures["n_errors"]),
        "error_rate": figures["error_rate"],
        "misses": sorted(set(ok.loc[~ok["passed"], "case_id"])),
        "cost_total_usd": figures["total_cost_usd"],
        "cost_per_case_usd": _estimate(figures["cost_per_case"]),
        "saved_usd": figures["saved_usd"],
        "grading_cost_usd": float(rows["grading_cost_usd"].sum())
        if rows["grading_cost_usd"].notna().all()
        else None,
        "grading_calls": int(rows["grading_calls"].sum()),
        "tokens_in": int(rows["input_tokens"].fillna(0).sum()),
        "tokens_out": int(rows["output_tokens"].fillna(0).sum()),
        "latency_p50_ms": _estimate(figures["latency_p50"]),
        "latency_p95_ms": _estimate(figures["latency_p95"]),
        "ttft_p50_ms": _estimate(figures["ttft_p50"]),
        "ttft_p95_ms": _estimate(figures["ttft_p95"]),
        "cache_hits": int(figures["cache_hits"]),
        "repeats": repeats,
        "pass_all_repeats": float((repeat_pass["mean"] == 1).mean()) if len(repeat_pass) else None,
        "flaky_cases": int(((repeat_pass["mean"] > 0) & (repeat_pass["mean"] < 1)).sum()),
        # Completed calls the cache did not serve: the latency a user would wait.
        "measured_latency_p50_ms": _percentile(measured["latency_ms"], 0.50),
    }


def _figures(rows: pd.DataFrame, config_id: str, stats: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config's statistics figures, computed by the same function when absent."""
    known = ((stats or {}).get("configs") or {}).get(config_id)
    if known is not None:
        return dict(known)
    from evalgate.stats import config_stats

    try:
        return config_stats(rows).to_dict()
    except Exception:  # rows the statistics reject, or a defect (their note says which)
        unknown: dict[str, Any] = dict.fromkeys(_FIGURES)
        errors = int(rows["error"].sum())
        return {
            **unknown,
            "n_cases": int(rows["case_id"].nunique()),
            "n_completed": 0,
            "n_errors": errors,
            "error_rate": errors / len(rows) if len(rows) else None,
            "cache_hits": 0,
        }


def _summary_columns() -> tuple[str, ...]:
    from evalgate.stats.analysis import INPUT_COLUMNS

    own = ("tier", "model", "repeat", "input_tokens", "output_tokens")
    own += ("grading_cost_usd", "grading_calls")
    return tuple(dict.fromkeys((*INPUT_COLUMNS, *own)))


def build_report(
    results: Iterable[CaseResult],
    *,
    run_id: str,
    baselines: Mapping[str, str],
    config_orders: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    stream_cases: bool = False,
) -> dict[str, Any]:
    """The evalgate.json document.

    Args:
        results: the latest result of every item of the run.
        run_id: the run's id.
        baselines: suite name -> baseline config id.
        config_orders: suite name -> config ids in the suite's order (tables follow it).
        extra: suite name -> further sections (statistics) merged into that suite.
        stream_cases: each suite's ``cases`` is a :class:`~evalgate.report.tables.CaseRows`
            (rows made as iterated, for ``write_json`` and the HTML page: the run's report
            writer) instead of a plain list (for any other use, ``json.dumps`` included).
    """
    by_suite: dict[str, list[CaseResult]] = {}
    for result in results:
        by_suite.setdefault(result.suite, []).append(result)
    return build_suites_report(
        by_suite,
        run_id=run_id,
        baselines=baselines,
        config_orders=config_orders,
        extra=extra,
        stream_cases=stream_cases,
    )


def build_suites_report(
    by_suite: Mapping[str, Sequence[CaseResult]],
    *,
    run_id: str,
    baselines: Mapping[str, str],
    config_orders: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    stream_cases: bool = False,
) -> dict[str, Any]:
    """:func:`build_report` of results grouped by suite (a list, or rows read back from
    the run's file as iterated: :class:`evalgate.report.stored.StoredRows`)."""
    from evalgate.report.tables import CaseRows, read_suite
    from evalgate.stats._common import json_safe

    as_float: set[str] = set()
    suites: dict[str, Any] = {}
    for suite_name, suite_results in sorted(by_suite.items()):
        # Only the columns the figures read: a suite's outputs and grades stay out.
        table = read_suite(suite_results, _summary_columns())
        as_float |= table.float_columns
        suite_rows = table.frame
        order = list((config_orders or {}).get(suite_name, ()))
        by_config = dict(iter(suite_rows.groupby("config_id", sort=False)))
        ids = [c for c in order if c in by_config] + sorted(
            str(c) for c in by_config if c not in order
        )
        stats = (extra or {}).get(suite_name, {}).get("stats")
        configs = {
            cid: config_summary(by_config[cid], _figures(by_config[cid], cid, stats)) for cid in ids
        }
        feature, suite_hash = table.feature, table.suite_hash  # of the suite's last result
        del table, suite_rows, by_config
        suites[suite_name] = {
            "feature": feature,
            "suite_hash": suite_hash,
            "baseline": baselines.get(suite_name),
            "configs": configs,
            **dict((extra or {}).get(suite_name, {})),
        }
    # Made row by row when written (see CaseRows): no dict per item held.
    cases = {name: CaseRows(by_suite[name], as_float) for name in suites}
    document = json_safe(
        {
            "version": REPORT_VERSION,
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "suites": suites,
        }
    )
    for suite_name, rows in cases.items():
        document["suites"][suite_name]["cases"] = rows if stream_cases else rows.materialize()
    return document


def write_json(document: Mapping[str, Any], path: Path) -> None:
    """Writes atomically: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    # Streamed to the file, never built as one string: a 20,000-item run's document
    # serialised whole would add ~150 MiB to the run's peak memory.
    try:
        with open(tmp, "w", encoding="utf-8", errors=UNPAIRED) as fh:
            json.dump(document, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a value json cannot write: no half file left behind
        raise


UNPAIRED = "backslashreplace"
"""How the report's files write a lone surrogate (half a UTF-16 pair, which a model's
output can hold and results.jsonl keeps): UTF-8 cannot hold it, and failing would lose
the report. Python writes it as ``\\udc80``, which inside a JSON string is the JSON
escape of the same code unit (so evalgate.json reads back the same text) and elsewhere
(summary.md, the page's text) shows where it was."""


def write_text(text: str, path: Path) -> None:
    """Writes ``text`` atomically (temporary file, then rename): a run killed mid-write
    leaves the previous file, never half of the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", errors=UNPAIRED) as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_atomic(source: Path, path: Path) -> None:
    """A copy of a written report, replaced atomically like :func:`write_json`'s."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def format_tables(document: Mapping[str, Any]) -> list[str]:
    """One table per suite: config x quality, cost, latency, TTFT, errors, cache hits."""
    lines: list[str] = []
    header = (
        f"{'config':<22} {'tier':<8} {'quality':>7} {'pass':>6} {'cost/case':>11} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'ttft p50':>8} {'ttft p95':>8} {'errors':>6} "
        f"{'cached':>6}"
    )
    for name, suite in document.get("suites", {}).items():
        lines.append(f"suite {name} (feature {suite['feature']}, baseline {suite.get('baseline')})")
        lines.append(header)
        for config_id, c in suite["configs"].items():
            mark = "*" if config_id == suite.get("baseline") else " "
            lines.append(
                f"{(config_id + mark)[:22]:<22} {c['tier'][:8]:<8} "
                f"{_fmt(c['quality_mean'], '.3f'):>7} {_fmt(c['pass_rate'], '.0%'):>6} "
                f"{_fmt(c['cost_per_case_usd'], '.2e'):>11} "
                f"{_fmt(c['latency_p50_ms'], '.0f'):>8} {_fmt(c['latency_p95_ms'], '.0f'):>8} "
                f"{_fmt(c['ttft_p50_ms'], '.0f'):>8} {_fmt(c['ttft_p95_ms'], '.0f'):>8} "
                f"{c['errors']:>6} {c['cache_hits']:>6}"
            )
            if c["misses"]:
                shown = ", ".join(c["misses"][:5])
                more = f" (+{len(c['misses']) - 5} more)" if len(c["misses"]) > 5 else ""
                lines.append(f"{'':<4}misses: {shown}{more}")
        lines.extend(_stats_lines(suite.get("stats")))
        for record in (suite.get("derivations") or {}).values():
            lines.append(f"  derived {record.get('line', '')}")
        lines.append("")
    gate = document.get("gate")
    if gate:
        for note in gate.get("notes", []):
            lines.append(f"note: {note}")
        if gate.get("skipped"):
            lines.append(f"evalgate gate: not applied ({gate['skipped']})")
        elif gate.get("blocked"):
            lines.append("evalgate gate: BLOCKED")
            lines.extend(f"  blocked: {reason}" for reason in gate.get("reasons", []))
        else:
            lines.append("evalgate gate: passed")
    return lines


def _stats_lines(stats: Mapping[str, Any] | None) -> list[str]:
    if not stats:
        return []
    lines = [
        f"  vs baseline (margin {stats['margin']}, alpha {stats['alpha']}; "
        f"{stats['gate']['note']}):"
    ]
    for config_id, c in stats.get("comparisons", {}).items():
        delta = c.get("delta") or {}
        ni = c.get("noninferiority") or {}
        ci = "[-]" if delta.get("low") is None else f"[{delta['low']:+.3f}, {delta['high']:+.3f}]"
        p = c.get("p_value")
        savings = (c.get("savings_pct") or {}).get("estimate")
        # Planning figures only where they are the next step: an INCONCLUSIVE verdict.
        plan = ""
        if c.get("verdict") == "INCONCLUSIVE":
            needed = ni.get("n_needed")
            plan = (
                f" (needs N≈{needed}" if needed else " (needs more cases"
            ) + f"; this N shows δ>={_fmt(ni.get('min_detectable_margin'), '.3f')})"
        lines.append(
            f"    {config_id[:20]:<20} Δ {_fmt(delta.get('estimate'), '+.3f')} {ci} "
            f"({ni.get('test')}) N={c.get('n_paired')} p(Δ≠0)={_fmt(p, '.3g')} "
            f"p(NI, Holm)={_fmt(c.get('p_adjusted'), '.3g')} {c.get('verdict')}{plan}"
            f", saves {_fmt(savings, '.0f')}% of cost"
        )
    rec = stats.get("recommendation")
    lines.append(
        f"  recommended: {rec['config_id']} ({rec['reason']})" if rec else "  recommended: none"
    )
    return lines
