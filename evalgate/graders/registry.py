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
    """What a grader returns: a score in [0, 1], pass/fail and a one-line reason."""

    score: float
    passed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GradeUsage:
    """What a grader's own model calls cost (an LLM judge); never mixed into a config's cost."""

    calls: int = 0
    cost_usd: float | None = 0.0
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0


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
        is_async: an ``async def`` grader (runs on the engine's event loop).
        wants_call: the function takes the ``call`` keyword.
        wants_ctx: the function takes the ``ctx`` keyword.
        validate: optional check of the parameters at collection time; returns an error
            message (or None) so a bad schema or import path fails collection, not the run.
        default_model: for graders that call a model (``ctx``): the model used when the
            ``model`` parameter is absent (evalgate starts its local server if needed).
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


_REGISTRY: dict[str, GraderDef] = {}


def grader(
    name: str,
    *,
    params: Mapping[str, ParamType] | None = None,
    required: tuple[str, ...] = (),
    templated: tuple[str, ...] | None = None,
    validate: Callable[[Mapping[str, Any], str], str | None] | None = None,
    default_model: str | None = None,
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
            validate=validate,
            default_model=default_model,
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


def normalise(result: Grade | bool | float, *, threshold: float = 1.0) -> Grade:
    """Turns whatever a grader returned into a Grade with a score in [0, 1]."""
    if isinstance(result, Grade):
        score = min(1.0, max(0.0, float(result.score)))
        return Grade(score, bool(result.passed), result.reason)
    if isinstance(result, bool):
        return Grade(1.0 if result else 0.0, result, "passed" if result else "failed")
    if isinstance(result, int | float):
        score = min(1.0, max(0.0, float(result)))
        return Grade(score, score >= threshold, f"score {score:.3f}")
    raise TypeError(f"a grader must return Grade, bool or float, got {type(result).__name__}")
