"""A cascade: answer with the first config; escalate to the second when a check fails.

Evaluated offline from the two configs' results (no extra calls): a case whose first
call answered and whose answer passes every ``accept`` check keeps the first result; an
escalated case takes the second config's answer and quality, and pays for both calls:
cost = first + second, latency = first + second, TTFT = first's full latency + second's
TTFT (the user waits for the first answer to be checked). An accepted answer's TTFT is
the first call's full latency for the same reason: the runtime checks the whole answer
before a streaming caller sees its first token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evalgate.derived import as_config, pairs

if TYPE_CHECKING:
    from evalgate.results import CaseResult, ItemKey
    from evalgate.suite.model import Config, Suite


class _Checks:
    """Runs a cascade's accept checks on first answers, each within its grade time limit.

    The answers are model output, so a check may backtrack or loop on one: each check runs
    as a job of a :class:`~evalgate.graders.deadline.GradingThreads` pool with the grader's
    ``timeout_s`` (default :data:`~evalgate.graders.deadline.DEFAULT_TIMEOUT_S`), as the
    suite's graders do in the run; one that errs or runs past it rejects the answer.
    """

    def __init__(self, config: Config) -> None:
        from evalgate.graders.deadline import GradingThreads

        assert config.derived is not None
        self.specs = config.derived.accept
        self.label = config.id
        self.errors = 0
        self._threads = GradingThreads(f"evalgate-cascade-{config.id}", 1)

    def accepts(self, result: CaseResult, case: Any) -> bool:
        from evalgate.graders.grading import run_sync, timeout_s

        if result.call.error is not None:
            return False
        # A suite grader's error is not the runtime's business (it runs the checks on the
        # answer only): an accepted answer keeps it, and it counts as a loss.
        for spec in self.specs:
            job = self._threads.submit(
                lambda spec=spec: run_sync(spec, result.call.output, case, result.call),
                timeout_s(spec),
                f"cascade {self.label!r} check {spec.type!r} on case {case.id!r}",
            )
            try:
                grade = job.result()
            except Exception:  # past its time limit (or a defect): it cannot accept
                self.errors += 1
                return False
            if grade.error:
                self.errors += 1
                return False
            if not grade.passed:
                return False
        return True

    def close(self) -> None:
        self._threads.close()


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def derive(
    suite: Suite, config: Config, results: Mapping[ItemKey, CaseResult]
) -> tuple[list[CaseResult], dict[str, Any]]:
    d = config.derived
    assert d is not None and d.kind == "cascade"
    composed: list[CaseResult] = []
    escalated = total = 0
    checks = _Checks(config)
    try:
        for case, rows in pairs(suite, config, results):
            for first, then in rows:
                total += 1
                if checks.accepts(first, case):
                    # The whole first answer is checked before a streaming caller sees
                    # a token (as the runtime does): its TTFT is the first call's latency.
                    ttft = None if first.call.ttft_ms is None else first.call.latency_ms
                    composed.append(
                        as_config(first, config, call=replace(first.call, ttft_ms=ttft))
                    )
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
    finally:
        checks.close()
    record: dict[str, Any] = {
        "kind": "cascade",
        "first": d.small,
        "then": d.large,
        "accept": [{"type": g.type, **g.params} for g in d.accept],
        "results": total,
        "escalation_rate": escalated / total if total else None,
    }
    if checks.errors:
        record["check_errors"] = checks.errors
    return composed, record


def describe(config_id: str, record: Mapping[str, Any]) -> str:
    if "error" in record:
        return f"{config_id}: cascade failed: {record['error']}"
    rate = record.get("escalation_rate")
    shown = "-" if rate is None else f"{100 * rate:.0f}%"
    checks = ", ".join(str(a.get("type")) for a in record.get("accept", []))
    line = (
        f"{config_id}: cascade first={record['first']} then={record['then']}, "
        f"escalated {shown} of {record['results']} (checks: {checks}); cost and latency add "
        "both calls on escalation"
    )
    if record.get("check_errors"):
        line += (
            f"; {record['check_errors']} check(s) erred or ran past their time limit (escalated)"
        )
    return line
