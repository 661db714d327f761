"""A cascade: answer with the first config; escalate to the second when a check fails.

Evaluated offline from the two configs' results (no extra calls): a case whose first
answer passes every ``accept`` check (or is not an error) keeps the first result; an
escalated case takes the second config's answer and quality, and pays for both calls:
cost = first + second, latency = first + second, TTFT = first's full latency + second's
TTFT (the user waits for the first answer to be checked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evalgate.derived import as_config, pairs

if TYPE_CHECKING:
    from evalgate.results import CaseResult, ItemKey
    from evalgate.suite.model import Config, Suite


def _accepts(result: CaseResult, case: Any, config: Config) -> bool:
    from evalgate.graders.grading import run_sync

    if result.errored:
        return False
    assert config.derived is not None
    for spec in config.derived.accept:
        grade = run_sync(spec, result.call.output, case, result.call)
        if grade.error or not grade.passed:
            return False
    return True


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def derive(
    suite: Suite, config: Config, results: Mapping[ItemKey, CaseResult]
) -> tuple[list[CaseResult], dict[str, Any]]:
    d = config.derived
    assert d is not None and d.kind == "cascade"
    composed: list[CaseResult] = []
    escalated = total = 0
    for case, rows in pairs(suite, config, results):
        for first, then in rows:
            total += 1
            if _accepts(first, case, config):
                composed.append(as_config(first, config))
                continue
            escalated += 1
            call = replace(
                then.call,
                cost_usd=_add(first.call.cost_usd, then.call.cost_usd),
                latency_ms=first.call.latency_ms + then.call.latency_ms,
                ttft_ms=None
                if then.call.ttft_ms is None
                else first.call.latency_ms + then.call.ttft_ms,
            )
            composed.append(as_config(then, config, call=call))
    record = {
        "kind": "cascade",
        "first": d.small,
        "then": d.large,
        "accept": [{"type": g.type, **g.params} for g in d.accept],
        "results": total,
        "escalation_rate": escalated / total if total else None,
    }
    return composed, record


def describe(config_id: str, record: Mapping[str, Any]) -> str:
    if "error" in record:
        return f"{config_id}: cascade failed: {record['error']}"
    rate = record.get("escalation_rate")
    shown = "-" if rate is None else f"{100 * rate:.0f}%"
    checks = ", ".join(str(a.get("type")) for a in record.get("accept", []))
    return (
        f"{config_id}: cascade first={record['first']} then={record['then']}, "
        f"escalated {shown} of {record['results']} (checks: {checks}); cost and latency add "
        "both calls on escalation"
    )
