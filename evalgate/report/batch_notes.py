"""One report note per batch config: its turnaround (reported apart), how it is priced and
what it saved (against its online twin when the suite has one: same tier and settings).

Batch configs are offline configs: compared on quality and cost, never ranked on per-call
latency (the statistics leave their latency out, see ``analyze_suite(offline=...)``).
"""

from __future__ import annotations

from typing import Any

from evalgate.suite.model import Config, Suite


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
        source = price_source(tier.model, tier.price is not None)
        notes.append(
            f"{name}: {config.id} is a batch config (offline): {when}, reported apart and "
            f"not ranked on latency; priced at {source}{_saved(suite, config, frame, source)}"
        )
    return notes


def _twin(suite: Suite, config: Config) -> Config | None:
    """The online config making the same calls (tier, trim, cap, temperature, repeats)."""
    same = (config.tier, config.context_trim, config.max_tokens, config.temperature)
    for other in suite.configs:
        if other.batch or other.derived is not None or other.repeats != config.repeats:
            continue
        if (other.tier, other.context_trim, other.max_tokens, other.temperature) == same:
            return other
    return None


def _costs(frame: Any, config_id: str) -> Any:
    """Per case: the config's mean call cost over answered (error-free, priced) rows."""
    rows = frame[frame["config_id"] == config_id]
    if "error" in rows:
        rows = rows[~rows["error"].fillna(False).astype(bool)]
    rows = rows[rows["cost_usd"].notna()] if "cost_usd" in rows else rows.iloc[:0]
    return rows.groupby("case_id")["cost_usd"].mean()


def _saved(suite: Suite, config: Config, frame: Any, source: str) -> str:
    """``; saved $X (P%) against ...`` or "" when nothing can be said."""
    if "cost_usd" not in frame or "case_id" not in frame:
        return ""
    batch = _costs(frame, config.id)
    twin = _twin(suite, config)
    if twin is not None:
        online = _costs(frame, twin.id)
        common = batch.index.intersection(online.index)
        if len(common) and float(online[common].sum()) > 0:
            paid, full = float(batch[common].sum()), float(online[common].sum())
            return (
                f"; saved ${full - paid:.6g} ({(full - paid) / full:.0%}) against its online "
                f"twin {twin.id} on {len(common)} cases"
            )
    if len(batch) and source.startswith("online price x 0.5"):
        paid = float(batch.sum())
        return f"; saved ${paid:.6g} (50%) against the online price of its {len(batch)} cases"
    return ""
