"""``cost`` and ``latency``: per-case ceilings on what one call cost and how long it took.

```yaml
assert:
  - {type: cost, max_usd: 0.001}
  - {type: latency, max_ms: 2000, ttft_max_ms: 500}
```

Both read the call's :class:`~evalgate.results.CallResult` (the ``call`` keyword). A figure
that is not known (no price for the model, no TTFT without streaming) is a grader error
saying so, never a silent pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalgate.graders.registry import Grade, grader
from evalgate.results import CallResult


def _need_call(call: CallResult | None, grader_name: str) -> CallResult:
    if call is None:
        raise ValueError(f"{grader_name} needs the call's result (grade_output(..., call=...))")
    return call


def uncached_cost(call: CallResult) -> float | None:
    """What the call costs without the response cache; None when the price is unknown.

    A cache hit costs 0 now and records the original call's cost as ``saved_usd``; a
    ceiling is about the configuration, not about the luck of a warm cache, so a hit is
    judged on ``cost_usd + saved_usd`` (the original call's cost). A hit that saved
    nothing is treated as unknown: the engine records ``saved_usd = 0`` both for an
    unpriced original and for a free one, and a guess here could be a silent pass.
    """
    if call.cost_usd is None:
        return None
    if call.cached:
        if call.saved_usd <= 0:
            return None
        return call.cost_usd + call.saved_usd
    return call.cost_usd


def _check_cost(params: Mapping[str, Any], suite_dir: str) -> str | None:
    if params["max_usd"] < 0:
        return f"max_usd: expected a number >= 0, found {params['max_usd']!r}"
    return None


@grader("cost", params={"max_usd": (int, float)}, required=("max_usd",), validate=_check_cost)
def cost(output: str, case: Any, max_usd: float, *, call: CallResult | None = None) -> Grade:
    """Passes when the call cost at most ``max_usd`` (USD, per case).

    For a cache hit the ceiling applies to what the call would cost without the cache
    (``cost_usd + saved_usd``, i.e. the original call's cost), so a suite's verdict does
    not depend on whether the cache was warm. Unknown cost (no price in the tier and none
    in litellm's map) raises: add ``price:`` to the tier.
    """
    call = _need_call(call, "cost")
    spent = uncached_cost(call)
    if spent is None:
        hit = " (the cache hit records no original cost)" if call.cached else ""
        raise ValueError(
            f"the call's price is unknown{hit}: add `price:` to the tier (litellm's price map "
            "has none for this model), so the cost ceiling cannot be checked"
        )
    ok = spent <= max_usd + 1e-15
    note = " (cache hit: the original call's cost)" if call.cached else ""
    sign = "<=" if ok else ">"
    return Grade(float(ok), ok, f"cost ${spent:.6g} {sign} ${max_usd:g}{note}")


def _check_latency(params: Mapping[str, Any], suite_dir: str) -> str | None:
    if "max_ms" not in params and "ttft_max_ms" not in params:
        return "expected `max_ms` and/or `ttft_max_ms`"
    for key in ("max_ms", "ttft_max_ms"):
        if key in params and params[key] <= 0:
            return f"{key}: expected a number > 0, found {params[key]!r}"
    return None


@grader(
    "latency",
    params={"max_ms": (int, float), "ttft_max_ms": (int, float)},
    validate=_check_latency,
)
def latency(
    output: str,
    case: Any,
    max_ms: float | None = None,
    ttft_max_ms: float | None = None,
    *,
    call: CallResult | None = None,
) -> Grade:
    """Passes when the call's latency is at most ``max_ms`` and its time to first token at
    most ``ttft_max_ms`` (either or both).

    A cache hit is judged on the original call's latency and TTFT, which is what
    ``latency_ms``/``ttft_ms`` hold for a hit (the hit's own time is ``hit_latency_ms``):
    the ceiling describes the model and configuration, not the cache. ``ttft_max_ms``
    on a call without a TTFT (``stream: false``) raises rather than passing. The score is
    the fraction of ceilings met.
    """
    call = _need_call(call, "latency")
    checks: list[tuple[bool, str]] = []
    if max_ms is not None:
        ok = call.latency_ms <= max_ms
        checks.append((ok, f"latency {call.latency_ms:.0f} ms {'<=' if ok else '>'} {max_ms:g}"))
    if ttft_max_ms is not None:
        if call.ttft_ms is None:
            raise ValueError(
                "the call has no time to first token (it was not streamed: set `stream: "
                "true`), so ttft_max_ms cannot be checked"
            )
        ok = call.ttft_ms <= ttft_max_ms
        checks.append((ok, f"TTFT {call.ttft_ms:.0f} ms {'<=' if ok else '>'} {ttft_max_ms:g}"))
    if not checks:
        raise ValueError("latency needs max_ms and/or ttft_max_ms")
    met = sum(ok for ok, _ in checks)
    note = " (cache hit: the original call's timings)" if call.cached else ""
    reason = ", ".join(text for _, text in checks) + note
    return Grade(met / len(checks), met == len(checks), reason)
