"""One report note per batch config: its turnaround (reported apart) and how it is priced.

Batch configs are offline configs: compared on quality and cost, never ranked on per-call
latency (the statistics leave their latency out, see ``analyze_suite(offline=...)``).
"""

from __future__ import annotations

from typing import Any

from evalgate.suite.model import Suite


def batch_notes(name: str, suite: Suite, frame: Any) -> list[str]:
    """``frame``: the suite's per-item rows (config_id, latency_ms, error, cost_usd...)."""
    from evalgate.engine.batch import price_source

    notes: list[str] = []
    for config in suite.configs:
        if not config.batch:
            continue
        rows = frame[frame["config_id"] == config.id]
        if "error" in rows:  # True where the call (or its grading) failed
            rows = rows[~rows["error"].fillna(False).astype(bool)]
        turnaround = rows["latency_ms"].dropna() if "latency_ms" in rows else rows.iloc[:0]
        tier = suite.tiers[config.tier]
        when = (
            f"batch turnaround p50 {turnaround.median() / 1000:.1f} s, max "
            f"{turnaround.max() / 1000:.1f} s"
            if len(turnaround)
            else "no batch result yet"
        )
        notes.append(
            f"{name}: {config.id} is a batch config (offline): {when}, reported apart and "
            f"not ranked on latency; priced at {price_source(tier.model, tier.price is not None)}"
        )
    return notes
