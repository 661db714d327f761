"""Results -> per suite and config figures, ``reports/evalgate.json`` and the terminal table."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalgate.results import CaseResult, to_rows

if TYPE_CHECKING:
    import pandas as pd

REPORT_VERSION = 1


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _percentile(series: pd.Series, q: float) -> float | None:
    values = series.dropna()
    return float(values.quantile(q)) if len(values) else None


def config_summary(rows: pd.DataFrame) -> dict[str, Any]:
    """Figures for one config's rows (one row per item)."""
    ok = rows[~rows["error"]]
    # Repeats are averaged within a case: quality is a mean over cases, not over calls.
    per_case = ok.groupby("case_id")["score"].mean()
    n_cases = int(rows["case_id"].nunique())
    cost_known = rows["cost_usd"].notna().all()
    cost_total = float(rows["cost_usd"].fillna(0).sum()) if cost_known else None
    uncached = rows[~rows["cached"]]
    # Repeats: pass^k = every repeat of a case passed; flaky = some but not all did.
    repeat_pass = ok.groupby("case_id")["passed"].agg(["mean", "count"])
    repeats = int(rows.groupby("case_id")["repeat"].nunique().max()) if len(rows) else 0
    return {
        "tier": str(rows["tier"].iloc[0]),
        "model": str(rows["model"].iloc[0]),
        "n_cases": n_cases,
        "n_items": len(rows),
        "quality_mean": float(per_case.mean()) if len(per_case) else None,
        "pass_rate": float(ok["passed"].mean()) if len(ok) else None,
        "errors": int(rows["error"].sum()),
        "misses": sorted(set(ok.loc[~ok["passed"], "case_id"])),
        "cost_total_usd": cost_total,
        "cost_per_case_usd": cost_total / n_cases if cost_total is not None and n_cases else None,
        "saved_usd": float(rows["saved_usd"].sum()),
        "grading_cost_usd": float(rows["grading_cost_usd"].sum())
        if rows["grading_cost_usd"].notna().all()
        else None,
        "grading_calls": int(rows["grading_calls"].sum()),
        "tokens_in": int(rows["input_tokens"].fillna(0).sum()),
        "tokens_out": int(rows["output_tokens"].fillna(0).sum()),
        "latency_p50_ms": _percentile(ok["latency_ms"], 0.50),
        "latency_p95_ms": _percentile(ok["latency_ms"], 0.95),
        "ttft_p50_ms": _percentile(ok["ttft_ms"], 0.50),
        "ttft_p95_ms": _percentile(ok["ttft_ms"], 0.95),
        "cache_hits": int(rows["cached"].sum()),
        "repeats": repeats,
        "pass_all_repeats": float((repeat_pass["mean"] == 1).mean()) if len(repeat_pass) else None,
        "flaky_cases": int(((repeat_pass["mean"] > 0) & (repeat_pass["mean"] < 1)).sum()),
        "measured_latency_p50_ms": _percentile(uncached["latency_ms"], 0.50),
    }


def build_report(
    results: Iterable[CaseResult],
    *,
    run_id: str,
    baselines: Mapping[str, str],
    config_orders: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The evalgate.json document.

    Args:
        results: the latest result of every item of the run.
        run_id: the run's id.
        baselines: suite name -> baseline config id.
        config_orders: suite name -> config ids in the suite's order (tables follow it).
        extra: suite name -> further sections (statistics) merged into that suite.
    """
    import pandas as pd

    results = list(results)
    frame = pd.DataFrame(to_rows(results))
    hashes = {r.suite: r.suite_hash for r in results}
    features = {r.suite: r.feature for r in results}
    suites: dict[str, Any] = {}
    if not frame.empty:
        for suite_name, suite_rows in frame.groupby("suite", sort=True):
            order = list((config_orders or {}).get(str(suite_name), ()))
            by_config = dict(iter(suite_rows.groupby("config_id", sort=False)))
            ids = [c for c in order if c in by_config] + sorted(
                str(c) for c in by_config if c not in order
            )
            configs = {config_id: config_summary(by_config[config_id]) for config_id in ids}
            cases = suite_rows.drop(columns=["suite", "feature"]).to_dict(orient="records")
            suites[str(suite_name)] = {
                "feature": features[str(suite_name)],
                "suite_hash": hashes[str(suite_name)],
                "baseline": baselines.get(str(suite_name)),
                "configs": configs,
                **dict((extra or {}).get(str(suite_name), {})),
                "cases": cases,
            }
    return _clean(
        {
            "version": REPORT_VERSION,
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "suites": suites,
        }
    )


def write_json(document: Mapping[str, Any], path: Path) -> None:
    """Writes atomically: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
        lines.append("")
    gate = document.get("gate")
    if gate:
        for note in gate.get("notes", []):
            lines.append(f"note: {note}")
        if gate.get("blocked"):
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
            f"N={c.get('n_paired')} p(Δ≠0)={_fmt(p, '.3g')} "
            f"p(NI, Holm)={_fmt(c.get('p_adjusted'), '.3g')} {c.get('verdict')}{plan}"
            f", saves {_fmt(savings, '.0f')}% of cost"
        )
    rec = stats.get("recommendation")
    lines.append(
        f"  recommended: {rec['config_id']} ({rec['reason']})" if rec else "  recommended: none"
    )
    return lines
