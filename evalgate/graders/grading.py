"""Applies a case's graders to one output: weighted score, pass/fail, reasons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalgate.graders.registry import Grade, lookup, normalise
from evalgate.results import GradeResult
from evalgate.suite.model import Case, GraderSpec
from evalgate.suite.templates import render


def _render_param(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, list):
        return [_render_param(v, variables) for v in value]
    return value


def _run_one(spec: GraderSpec, output: str, case: Case) -> GradeResult:
    found = lookup(spec.type)
    if found is None:  # the loader rejects unknown names; a registry change mid-run lands here
        return GradeResult(spec.type, 0.0, False, "unknown grader", spec.weight, "unknown grader")
    definition, negated = found
    variables = dict(case.vars)
    params = {
        key: _render_param(value, variables) if key in definition.templated else value
        for key, value in spec.params.items()
    }
    try:
        grade = normalise(definition.fn(output, case, **params))
    except Exception as exc:  # user and grader code: report, never crash the run
        message = f"{type(exc).__name__}: {exc}"
        return GradeResult(spec.type, 0.0, False, f"grader error on case {case.id!r}: "
                           f"{message}", spec.weight, message)
    if negated:
        grade = Grade(1.0 - grade.score, not grade.passed, f"not ({grade.reason})")
    return GradeResult(spec.type, grade.score, grade.passed, grade.reason, spec.weight)


def grade_output(
    output: str,
    case: Case,
    graders: Sequence[GraderSpec],
    threshold: float | None,
) -> tuple[tuple[GradeResult, ...], float, bool]:
    """Grades an output: (each grade, weighted mean score, passed).

    With no threshold a case passes only when every grader passes; with one, when the
    weighted score reaches it. A case with no graders scores 1 (it only checks the call).
    """
    grades = tuple(_run_one(spec, output, case) for spec in graders)
    if not grades:
        return grades, 1.0, True
    total_weight = sum(g.weight for g in grades) or 1.0
    score = sum(g.score * g.weight for g in grades) / total_weight
    if any(g.error for g in grades):
        return grades, score, False
    passed = all(g.passed for g in grades) if threshold is None else score >= threshold - 1e-12
    return grades, score, passed
