"""A cascade in the runtime policy: answer with the first route, escalate on a failed check.

The checks are the cascade's ``accept`` graders from the suite, carried in the policy as
declarative specs (``{"type": "regex", "pattern": "..."}``) and run here with the same
grader code the evaluation ran, so the runtime escalates exactly where the evaluation
did. Only graders that need no case, no model and no file run here (see
:data:`RUNTIME_CHECKS`); ``evalgate export`` refuses the others. Importing this module
imports no pytest, scipy or pandas (the graders' builtin and json-schema modules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalgate.runtime.policy_file import Route

# Graders an application can run on an answer alone: no case variables, model or file.
RUNTIME_CHECKS = ("json-valid", "json-schema", "regex", "contains", "equals")
# A check runs inside the application's request, on model output: a pattern that
# backtracks on an answer must not hold the request for the evals' 30 s grade limit.
CHECK_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class AcceptCheck:
    """One accept check: a grader type (``not-`` negates it) and its parameters."""

    type: str
    params: Mapping[str, Any]

    def failure(self, answer: str) -> str | None:
        """None when the answer passes, else why not (one line)."""
        from evalgate.graders import deadline
        from evalgate.graders.registry import lookup, normalise

        found = lookup(self.type)
        assert found is not None  # checked when the policy was loaded
        definition, negated = found
        try:
            with deadline.limited(CHECK_TIMEOUT_S):
                result = definition.fn(answer, None, **self.params)
            grade = normalise(result, source=self.type)
        except Exception as exc:  # a grader error escalates, as it does offline
            return f"{self.type}: error: {type(exc).__name__}: {exc}"
        if grade.passed != negated:
            return None
        return f"{self.type}: {grade.reason}"


@dataclass(frozen=True, slots=True)
class CascadeRouting:
    """Ask ``first``; when one ``accept`` check fails on its answer, ask ``then``."""

    first: Route
    then: Route
    accept: tuple[AcceptCheck, ...]
    escalation_rate: float | None = None  # the evals' share of escalated answers

    def rejection(self, answer: Any) -> str | None:
        """None when every check accepts the answer, else the first failing check's reason."""
        if not isinstance(answer, str):
            return "no text answer (a tool call or an empty message)"
        for check in self.accept:
            why = check.failure(answer)
            if why is not None:
                return why
        return None


def check_spec(spec: Any) -> tuple[str, str] | None:
    """(key, why) when an accept spec cannot run at runtime, else None."""
    from evalgate.graders.registry import lookup

    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        return "", "expected a mapping with a string `type`"
    kind = spec["type"]
    found = lookup(kind)
    if found is None or kind.removeprefix("not-") not in RUNTIME_CHECKS:
        return "type", (
            f"{kind!r} cannot run in the application; a cascade's runtime checks are "
            f"{', '.join(RUNTIME_CHECKS)} (and their not- forms)"
        )
    definition = found[0]
    params = {k: v for k, v in spec.items() if k != "type"}
    for name, value in params.items():
        wanted = definition.params.get(name)
        kinds = wanted if isinstance(wanted, tuple) else (wanted,)
        if (
            wanted is None
            or not isinstance(value, kinds)
            or (isinstance(value, bool) and bool not in kinds)
        ):
            return name, f"not a parameter of {kind!r} of the right type: {value!r:.60}"
        if name in definition.templated and isinstance(value, str) and "{{" in value:
            return name, "a per-case template cannot run in the application (no case there)"
    if "schema_file" in params:
        return "schema_file", "a schema file cannot travel with the policy: give `schema` inline"
    missing = [name for name in definition.required if name not in params]
    if kind.removeprefix("not-") == "json-schema" and "schema" not in params:
        missing.append("schema")
    if missing:
        return missing[0], f"{kind!r} needs it"
    if definition.validate is not None:
        error = definition.validate(params, ".")
        if error:
            return "", str(error).splitlines()[0][:200]
    return None
