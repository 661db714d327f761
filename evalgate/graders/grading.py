"""Applies a case's graders to one output: weighted score, pass/fail, reasons.

Synchronous graders run in the caller's thread (the runner's recorder thread, so the
event loop never blocks on CPU-bound grading); ``async`` graders (an LLM judge) run on the
engine's loop, where their own model calls share its concurrency, retries and cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalgate.graders.registry import Grade, GradeContext, GraderDef, lookup, normalise
from evalgate.results import CallResult, GradeResult
from evalgate.suite.model import Case, GraderSpec
from evalgate.suite.templates import render


def _render_param(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, list):
        return [_render_param(v, variables) for v in value]
    return value


def _prepare(spec: GraderSpec, case: Case) -> tuple[GraderDef, bool, dict[str, Any]] | None:
    found = lookup(spec.type)
    if found is None:
        return None
    definition, negated = found
    variables = dict(case.vars)
    params = {
        key: _render_param(value, variables) if key in definition.templated else value
        for key, value in spec.params.items()
    }
    return definition, negated, params


def is_async(spec: GraderSpec) -> bool:
    found = lookup(spec.type)
    return bool(found and found[0].is_async)


def _finish(
    spec: GraderSpec, case: Case, negated: bool, raw: Any, usage: Mapping[str, Any] | None = None
) -> GradeResult:
    usage = usage or {}
    grade = normalise(raw)
    if negated:
        grade = Grade(1.0 - grade.score, not grade.passed, f"not ({grade.reason})")
    return GradeResult(
        spec.type,
        grade.score,
        grade.passed,
        grade.reason,
        spec.weight,
        cost_usd=usage.get("cost_usd"),
        latency_ms=usage.get("latency_ms"),
        calls=usage.get("calls", 0),
    )


def _error(
    spec: GraderSpec, case: Case, exc: BaseException, usage: Mapping[str, Any] | None = None
) -> GradeResult:
    usage = usage or {}
    message = f"{type(exc).__name__}: {exc}"
    return GradeResult(
        spec.type,
        0.0,
        False,
        f"grader error on case {case.id!r}: {message}",
        spec.weight,
        message,
        cost_usd=usage.get("cost_usd"),
        latency_ms=usage.get("latency_ms"),
        calls=usage.get("calls", 0),
    )


def _unknown(spec: GraderSpec) -> GradeResult:
    # The loader rejects unknown names; a registry change mid-run would land here.
    return GradeResult(spec.type, 0.0, False, "unknown grader", spec.weight, "unknown grader")


def run_sync(spec: GraderSpec, output: str, case: Case, call: CallResult | None) -> GradeResult:
    prepared = _prepare(spec, case)
    if prepared is None:
        return _unknown(spec)
    definition, negated, params = prepared
    if definition.wants_call:
        params["call"] = call
    try:
        return _finish(spec, case, negated, definition.fn(output, case, **params))
    except Exception as exc:  # user and grader code: report it, never crash the run
        return _error(spec, case, exc)


class UsageMeter:
    """Accumulates one grader invocation's model calls (judge cost, kept separate)."""

    def __init__(self) -> None:
        self.calls = 0
        self.cost_usd: float | None = 0.0
        self.latency_ms = 0.0

    def add(self, call: CallResult) -> None:
        self.calls += 1
        self.latency_ms += call.latency_ms
        if self.cost_usd is not None:
            self.cost_usd = None if call.cost_usd is None else self.cost_usd + call.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cost_usd": self.cost_usd if self.calls else None,
            "latency_ms": self.latency_ms if self.calls else None,
        }


async def run_async(
    spec: GraderSpec,
    output: str,
    case: Case,
    call: CallResult | None,
    ctx: GradeContext,
    meter: UsageMeter,
) -> GradeResult:
    prepared = _prepare(spec, case)
    if prepared is None:
        return _unknown(spec)
    definition, negated, params = prepared
    if definition.wants_call:
        params["call"] = call
    if definition.wants_ctx:
        params["ctx"] = ctx
    try:
        raw = await definition.fn(output, case, **params)  # type: ignore[misc]
    except Exception as exc:
        return _error(spec, case, exc, meter.as_dict())
    return _finish(spec, case, negated, raw, meter.as_dict())


def combine(grades: Sequence[GradeResult], threshold: float | None) -> tuple[float, bool]:
    """Weighted mean score and pass/fail.

    With no threshold a case passes only when every grader passes; with one, when the
    weighted score reaches it. A case with no graders scores 1 (it only checks the call).
    A grader error fails the case.
    """
    if not grades:
        return 1.0, True
    total_weight = sum(g.weight for g in grades) or 1.0
    score = sum(g.score * g.weight for g in grades) / total_weight
    if any(g.error for g in grades):
        return score, False
    passed = all(g.passed for g in grades) if threshold is None else score >= threshold - 1e-12
    return score, passed


def grade_output(
    output: str,
    case: Case,
    graders: Sequence[GraderSpec],
    threshold: float | None,
    call: CallResult | None = None,
    precomputed: Mapping[int, GradeResult] | None = None,
) -> tuple[tuple[GradeResult, ...], float, bool]:
    """Grades an output: (each grade, weighted mean score, passed).

    ``precomputed`` holds the results of async graders by their index in ``graders``.
    """
    precomputed = precomputed or {}
    grades = tuple(
        precomputed[i] if i in precomputed else run_sync(spec, output, case, call)
        for i, spec in enumerate(graders)
    )
    score, passed = combine(grades, threshold)
    return grades, score, passed
