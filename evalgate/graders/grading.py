"""Applies a case's graders to one output: weighted score, pass/fail, reasons.

Every grade runs in a grading thread within a time limit (:mod:`evalgate.graders.deadline`):
synchronous graders one at a time in order, ``async`` graders (an LLM judge) each on its
grading thread's own event loop; their model calls go to the engine's loop (concurrency,
retries, cache), but the graders themselves never run there, so no grader can block the
engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalgate.graders import deadline
from evalgate.graders.registry import (
    TIMEOUT_PARAM,
    Grade,
    GradeContext,
    GraderDef,
    lookup,
    normalise,
)
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
    params: dict[str, Any] = {}
    for key, value in spec.params.items():
        if key == TIMEOUT_PARAM:
            continue
        if key not in definition.templated:
            params[key] = value
            continue
        escape = definition.escaped.get(key)
        if escape is not None and not spec.params.get("pattern_vars", False):
            # The case's values are data: "3.14" inserted into a pattern matches "3.14".
            params[key] = _render_param(value, _escaped(variables, escape))
        else:
            params[key] = _render_param(value, variables)
    return definition, negated, params


def _escaped(variables: Mapping[str, Any], escape: Any) -> dict[str, Any]:
    return {
        name: escape(str(value))
        if isinstance(value, str | int | float) and not isinstance(value, bool)
        else value
        for name, value in variables.items()
    }


def is_async(spec: GraderSpec) -> bool:
    found = lookup(spec.type)
    return bool(found and found[0].is_async)


def timeout_s(spec: GraderSpec) -> float:
    """The grade's time limit: the grader's ``timeout_s`` or the default."""
    value = spec.params.get(TIMEOUT_PARAM)
    return float(value) if isinstance(value, int | float) else deadline.DEFAULT_TIMEOUT_S


def _finish(
    spec: GraderSpec, case: Case, negated: bool, raw: Any, usage: Mapping[str, Any] | None = None
) -> GradeResult:
    usage = usage or {}
    grade = normalise(raw, source=f"grader {spec.type!r}")
    if negated:
        grade = Grade(1.0 - grade.score, not grade.passed, f"not ({grade.reason})", grade.flags)
    return GradeResult(
        spec.type,
        grade.score,
        grade.passed,
        grade.reason,
        spec.weight,
        cost_usd=usage.get("cost_usd"),
        latency_ms=usage.get("latency_ms"),
        calls=usage.get("calls", 0),
        flags=grade.flags,
        saved_usd=usage.get("saved_usd", 0.0),
    )


def _error(
    spec: GraderSpec, case: Case, exc: BaseException, usage: Mapping[str, Any] | None = None
) -> GradeResult:
    usage = usage or {}
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
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
        saved_usd=usage.get("saved_usd", 0.0),
    )


def timed_out(
    spec: GraderSpec, case: Case, exc: BaseException, meter: UsageMeter | None = None
) -> GradeResult:
    """The grader error of a grade that ran past its time limit (one line: grader, case)."""
    return _error(spec, case, exc, meter.as_dict() if meter else None)


def _unknown(spec: GraderSpec) -> GradeResult:
    # The loader rejects unknown names; a registry change mid-run would land here.
    return GradeResult(spec.type, 0.0, False, "unknown grader", spec.weight, "unknown grader")


def grade_one(
    spec: GraderSpec,
    output: str,
    case: Case,
    call: CallResult | None,
    ctx: GradeContext | None = None,
    meter: UsageMeter | None = None,
) -> GradeResult:
    """Runs one grader to its :class:`GradeResult` in the calling thread (never raises).

    An ``async`` grader runs on this thread's event loop
    (:func:`evalgate.graders.deadline.run_coroutine`). Exceptions become grader errors
    naming the case; how long it may take is the caller's business (the runner submits
    this function to :class:`~evalgate.graders.deadline.GradingThreads`).
    """
    prepared = _prepare(spec, case)
    if prepared is None:
        return _unknown(spec)
    definition, negated, params = prepared
    if definition.wants_call:
        params["call"] = call
    if definition.wants_ctx:
        if ctx is None:
            return _error(spec, case, RuntimeError("this grader needs a model-call context"))
        params["ctx"] = ctx
    usage = meter.as_dict if meter is not None else dict
    try:
        raw = definition.fn(output, case, **params)
        if definition.is_async:
            raw = deadline.run_coroutine(raw)
        return _finish(spec, case, negated, raw, usage())
    except deadline.GraderTimeout as exc:
        return _error(spec, case, exc, usage())
    except Exception as exc:  # user and grader code: report it, never crash the run
        return _error(spec, case, exc, usage())


def run_sync(spec: GraderSpec, output: str, case: Case, call: CallResult | None) -> GradeResult:
    """:func:`grade_one` for a grader that makes no model calls."""
    return grade_one(spec, output, case, call)


class UsageMeter:
    """Accumulates one grader invocation's model calls (judge cost, kept separate).

    Kept like a config's: ``cost_usd`` is what the calls cost now (a cache hit is free,
    but an unpriced model's hit is unknown, not $0), ``saved_usd`` what the response
    cache saved.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.cost_usd: float | None = 0.0
        self.saved_usd = 0.0
        self.latency_ms = 0.0

    def add(self, call: CallResult) -> None:
        from evalgate.graders.budget import uncached_cost

        self.calls += 1
        self.latency_ms += call.latency_ms
        self.saved_usd += call.saved_usd if call.cached else 0.0
        if self.cost_usd is not None:
            # A hit records no price of its own: it is known only when the original was.
            known = call.cost_usd is not None and (
                not call.cached or uncached_cost(call) is not None
            )
            self.cost_usd = self.cost_usd + (call.cost_usd or 0.0) if known else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cost_usd": self.cost_usd if self.calls else None,
            "saved_usd": self.saved_usd,
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
    """Runs an ``async`` grader on the running loop (for tests and tools; the runner uses
    :func:`grade_one` in a grading thread)."""
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
        return _finish(spec, case, negated, raw, meter.as_dict())
    except Exception as exc:
        return _error(spec, case, exc, meter.as_dict())


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
