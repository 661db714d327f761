"""Grader registry: graders are registered by name and looked up from YAML.

A grader is a function ``(output, case, **params) -> Grade | bool | float``. Built-in
graders and user graders (from a conftest.py or plugin module) register the same way::

    import evalgate

    @evalgate.grader("mentions-price", params={"currency": str})
    def mentions_price(output, case, currency="USD"):
        return currency in output

Every grader gets a negated twin for free: ``not-mentions-price``.

Two optional keyword arguments are passed when the function declares them:

- ``call``: the :class:`~evalgate.results.CallResult` (tokens, cost, latency), for graders
  that judge "fast and cheap enough";
- ``ctx``: a :class:`GradeContext`, for ``async def`` graders that make model calls of
  their own (an LLM judge) through the engine, with its concurrency, retries and cache.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from evalgate.results import CallResult

NEGATION_PREFIX = "not-"

# Types a grader parameter may declare; checked at collection, with file:line errors.
ParamType = type | tuple[type, ...]


@dataclass(frozen=True, slots=True)
class Grade:
    """What a grader returns: a score in [0, 1], pass/fail and a one-line reason.

    Attributes:
        score: a finite number in [0, 1]; anything else is a grader error.
        passed: whether the output passes this grader.
        reason: one line a human can read.
        flags: marks for a reviewer (``"addresses-grader"``: a judge-graded pass whose
            output talks to its grader); recorded with the grade in ``results.jsonl``.
    """

    score: float
    passed: bool
    reason: str = ""
    flags: tuple[str, ...] = ()


class GradeContext(Protocol):
    """What an async grader may use: model calls through the engine."""

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> CallResult:
        """Calls ``model`` (a suite tier name or a litellm/local model string)."""
        ...

    def record_usage(self, call: CallResult) -> None:
        """Counts a call's cost and latency as grading cost (reported separately)."""
        ...


@dataclass(frozen=True, slots=True)
class GraderDef:
    """A registered grader.

    Attributes:
        name: the name YAML uses.
        fn: the grading function.
        params: parameter name -> accepted type(s).
        required: parameters that must be given.
        templated: parameters whose strings are jinja2 templates over the case's variables.
        is_async: an ``async def`` grader (runs on a grading thread's own event loop, never
            on the engine's).
        wants_call: the function takes the ``call`` keyword.
        wants_ctx: the function takes the ``ctx`` keyword.
        validate: optional check of the parameters at collection time; returns an error
            message (or None) so a bad schema or import path fails collection, not the run.
        default_model: for graders that call a model (``ctx``): the model used when the
            ``model`` parameter is absent (evalgate starts its local server if needed).
        escaped: templated parameters whose inserted case values are escaped with the
            given function (a regex pattern: ``{{ answer }}`` matches the answer literally),
            unless the grader's ``pattern_vars`` option is true.
    """

    name: str
    fn: Callable[..., Grade | bool | float | Awaitable[Grade | bool | float]]
    params: Mapping[str, ParamType] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    templated: frozenset[str] = frozenset()
    is_async: bool = False
    wants_call: bool = False
    wants_ctx: bool = False
    validate: Callable[[Mapping[str, Any], str], str | None] | None = None
    default_model: str | None = None
    escaped: Mapping[str, Callable[[str], str]] = field(default_factory=dict)


_REGISTRY: dict[str, GraderDef] = {}

TIMEOUT_PARAM = "timeout_s"
"""The option every grader takes: its time limit per grade, in seconds."""


def _with_timeout_check(
    validate: Callable[[Mapping[str, Any], str], str | None] | None,
) -> Callable[[Mapping[str, Any], str], str | None]:
    def check(params: Mapping[str, Any], suite_dir: str) -> str | None:
        if TIMEOUT_PARAM in params:
            limit = params[TIMEOUT_PARAM]
            if isinstance(limit, bool) or not math.isfinite(limit) or limit <= 0:
                return f"{TIMEOUT_PARAM}: expected a number of seconds > 0, found {limit!r}"
        return validate(params, suite_dir) if validate is not None else None

    return check


def grader(
    name: str,
    *,
    params: Mapping[str, ParamType] | None = None,
    required: tuple[str, ...] = (),
    templated: tuple[str, ...] | None = None,
    validate: Callable[[Mapping[str, Any], str], str | None] | None = None,
    default_model: str | None = None,
    escaped: Mapping[str, Callable[[str], str]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers a grader under ``name`` (decorator).

    Args:
        name: the ``type:`` used in YAML; must not start with ``not-``.
        params: accepted parameters and their types (``weight`` is always accepted).
        required: parameters that must be present.
        templated: string parameters rendered as jinja2 templates per case; by default
            every ``str`` or ``list`` parameter.
        validate: ``(params, suite_dir) -> error message | None``, run at collection.
        default_model: model a ``ctx`` grader calls when ``model`` is not given.
        escaped: templated parameter -> function escaping each case value inserted into it.
    """
    if name.startswith(NEGATION_PREFIX):
        raise ValueError(f"grader names may not start with {NEGATION_PREFIX!r}: {name!r}")
    params = dict(params or {})
    if templated is None:
        templated = tuple(
            key
            for key, kind in params.items()
            if kind in (str, list) or (isinstance(kind, tuple) and str in kind)
        )

    # Every grader takes `timeout_s`, the time limit of one grade (evalgate.graders.deadline);
    # grading removes it before calling the function.
    params[TIMEOUT_PARAM] = (int, float)

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn).parameters
        _REGISTRY[name] = GraderDef(
            name,
            fn,
            params,
            frozenset(required),
            frozenset(templated),
            is_async=inspect.iscoroutinefunction(fn),
            wants_call="call" in signature,
            wants_ctx="ctx" in signature,
            validate=_with_timeout_check(validate),
            default_model=default_model,
            escaped=dict(escaped or {}),
        )
        return fn

    return register


def lookup(type_name: str) -> tuple[GraderDef, bool] | None:
    """(definition, negated) for a YAML ``type``, or None when unknown."""
    _ensure_builtins()
    negated = type_name.startswith(NEGATION_PREFIX)
    base = type_name[len(NEGATION_PREFIX) :] if negated else type_name
    found = _REGISTRY.get(base)
    return (found, negated) if found else None


def known_names() -> list[str]:
    """Every name YAML may use, negations included, sorted."""
    _ensure_builtins()
    names = sorted(_REGISTRY)
    return names + [NEGATION_PREFIX + n for n in names]


def _ensure_builtins() -> None:
    # Importing the module registers the built-in graders (once).
    from evalgate.graders import builtin  # noqa: F401


def _plain(value: Any) -> Any:
    """A numpy scalar (or 0-d array) as the Python bool/float it holds; others unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def _checked_score(value: Any, source: str) -> float:
    try:
        score = float(_plain(value))
    except (TypeError, ValueError):
        raise TypeError(f"{source} returned score {value!r}; expected a number in [0, 1]") from None
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"{source} returned score {value!r}; a score must be a number in [0, 1]")
    return score


def normalise(result: Any, *, threshold: float = 1.0, source: str = "the grader") -> Grade:
    """Turns whatever a grader returned into a Grade (the one rule for every grader).

    Accepted: a :class:`Grade` (or anything with ``score``, ``passed`` and ``reason``), a
    bool, or a score (passing at ``threshold``); numpy bools and numbers count as their
    Python values. A score that is NaN, infinite or outside [0, 1] is rejected (never
    clamped), in a Grade as in a plain number.

    Raises:
        TypeError, ValueError: one line naming ``source`` and what it returned.
    """
    result = _plain(result)
    if not isinstance(result, Grade) and all(
        hasattr(result, a) for a in ("score", "passed", "reason")
    ):
        result = Grade(result.score, result.passed, str(result.reason))
    if isinstance(result, Grade):
        score = _checked_score(result.score, source)
        passed = _plain(result.passed)
        if not isinstance(passed, bool):
            raise TypeError(f"{source} returned Grade.passed={passed!r}; expected a bool")
        flags = tuple(str(f) for f in (result.flags or ()))
        return Grade(score, passed, str(result.reason), flags)
    if isinstance(result, bool):
        return Grade(1.0 if result else 0.0, result, f"{source} returned {result}")
    if isinstance(result, int | float):
        score = _checked_score(result, source)
        passed = score >= threshold - 1e-12
        return Grade(score, passed, f"{source} returned {score:g} (pass mark {threshold:g})")
    raise TypeError(
        f"{source} returned {type(result).__name__}; expected bool, a score in [0, 1] "
        "or evalgate.Grade"
    )
