"""``reports/summary.md``: a short Markdown summary for a CI step summary or a PR comment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}%"


def _interval(interval: Mapping[str, Any] | None, scale: float = 1.0, fmt: str = "+.3f") -> str:
    if not interval or interval.get("estimate") is None:
        return "–"
    low, high = interval.get("low"), interval.get("high")
    est = format(interval["estimate"] * scale, fmt)
    if low is None or high is None:
        return f"{est} (CI undefined)"
    return f"{est} [{format(low * scale, fmt)}, {format(high * scale, fmt)}]"


def comparison_rows(stats: Mapping[str, Any]) -> list[tuple[bool, str]]:
    """(significant, markdown row) per candidate, for sorting significant changes first."""
    alpha = stats.get("alpha", 0.05)
    rows = []
    for config_id, c in stats.get("comparisons", {}).items():
        p = c.get("p_value")
        significant = p is not None and p < alpha
        ni = c.get("noninferiority") or {}
        savings = c.get("savings_pct")
        prob = (stats.get("pareto") or {}).get("probability", {}).get(config_id)
        margin = ni.get("min_detectable_margin")
        errors = ((stats.get("configs") or {}).get(config_id) or {}).get("n_errors")
        rows.append(
            (
                significant,
                (
                    f"| {config_id} | {_interval(c.get('delta'))} | {ni.get('test', '–')} | "
                    f"{'–' if errors is None else errors} | "
                    f"{'–' if p is None else f'{p:.3g}'} | {c.get('n_paired', 0)} | "
                    f"**{c.get('verdict', '–')}** | "
                    f"{_interval(savings, fmt='+.1f') if savings else '–'} | "
                    f"{'–' if margin is None else format(margin, '.3f')} | "
                    f"{'–' if prob is None else f'{prob:.0%}'} |"
                ),
            )
        )
    rows.sort(key=lambda item: not item[0])
    return rows


def render_summary(document: Mapping[str, Any]) -> str:
    """The Markdown document: gate verdict first, then per suite the comparisons."""
    gate = document.get("gate", {})
    lines = ["# evalgate summary", ""]
    if "gate" not in document:  # rebuilt from a killed run's results.jsonl: never gated
        lines.append("**Gate: not run** (no statistics)")
    elif gate.get("skipped"):  # one shard of a matrix: the merge gates
        lines.append(f"**Gate: not applied** ({gate['skipped']})")
    elif gate.get("blocked"):
        lines.append("**Gate: BLOCKED**")
        lines += [f"- {reason}" for reason in gate.get("reasons", [])]
    else:
        lines.append("**Gate: passed**")
    for note in gate.get("notes", []):
        lines.append(f"- note: {note}")
    lines.append("")
    for name, suite in document.get("suites", {}).items():
        stats = suite.get("stats")
        lines.append(f"## {name} (baseline `{suite.get('baseline')}`)")
        lines.append("")
        if not stats:
            lines += ["No statistics for this suite.", ""]
            continue
        rec = stats.get("recommendation")
        if rec:
            lines.append(f"Recommended: **{rec['config_id']}** — {rec['reason']}")
        else:
            lines.append("Recommended: none (no candidate passes non-inferiority within the SLOs)")
        lines.append("")
        alpha = stats.get("alpha") or 0.05
        lines.append(
            f"Δ quality vs baseline with the {1 - 2 * alpha:.0%} interval of the test that "
            f"decides the verdict (column *test*), margin δ={stats.get('margin')}, "
            f"α={alpha}; {stats.get('gate', {}).get('note', '')}."
        )
        lines.append(
            "A candidate's errored calls count as losses in Δ (*errors*: its errored calls). "
            "Significant changes first."
        )
        lines.append("")
        lines.append(
            "| config | Δ quality | test | errors | p | N | verdict | cost saving % "
            "| min. margin | P(frontier) |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        lines += [row for _, row in comparison_rows(stats)]
        lines.append("")
        for record in (suite.get("derivations") or {}).values():
            lines.append(f"- derived {record.get('line', '')}")
        if suite.get("derivations"):
            lines.append("")
    return "\n".join(lines) + "\n"
