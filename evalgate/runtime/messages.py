"""Request shaping: the context slot and trimming, the max_tokens cap, caller kwargs.

How an application marks the trimmable context: it passes the context text as
``context=`` and writes the slot :data:`CONTEXT_SLOT` (``"{context}"``) where it goes in
a message's content; the question the context is ranked against is ``query=`` (default:
the last user message, without the slot). The feature's ``context_trim`` then keeps the
same share of the context, chosen by the same function
(:func:`evalgate.trim.trim_context`) as the evals measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalgate.trim import trim_context

CONTEXT_SLOT = "{context}"
"""Where the (trimmed) context goes in a message's content."""

CALLER_MAY_NOT_SET = frozenset({"model", "api_base", "base_url", "api_key", "custom_llm_provider"})
"""The policy chooses the model and endpoint: a caller's value would bypass it."""


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str):
            return content.replace(CONTEXT_SLOT, " ")
    return ""


def fill_context(
    messages: Sequence[Mapping[str, Any]],
    context: str | None,
    query: str | None,
    ratio: float | None,
) -> tuple[list[dict[str, Any]], tuple[int, int] | None]:
    """Messages with the slot replaced by the (trimmed) context, and (tokens before, after).

    Raises:
        ValueError: ``context`` given but no message content holds the slot.
    """
    out = [dict(m) for m in messages]
    if context is None:
        return out, None
    slots = [m for m in out if isinstance(m.get("content"), str) and CONTEXT_SLOT in m["content"]]
    if not slots:
        raise ValueError(
            f"context= was given but no message content contains the slot {CONTEXT_SLOT!r} "
            "that marks where it goes"
        )
    counts = None
    if ratio is not None and ratio < 1:
        trimmed = trim_context(context, query if query is not None else _last_user_text(out), ratio)
        context, counts = trimmed.text, (trimmed.tokens_before, trimmed.tokens_after)
    for message in slots:
        message["content"] = message["content"].replace(CONTEXT_SLOT, context)
    return out, counts


OUTPUT_CAP_KEYS = ("max_tokens", "max_completion_tokens")


def bad_output_cap(params: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The first output cap a caller set that is not an integer >= 1 (NaN, inf, 1.5, True,
    0, "50"), as (name, value); None when every cap is valid or absent. Checked before the
    call, so a bad value is one clear error instead of ``int(nan)`` deep in the call path."""
    for name in OUTPUT_CAP_KEYS:
        value = params.get(name)
        if value is not None and (type(value) is not int or value < 1):
            return name, value
    return None


def capped_params(
    kwargs: Mapping[str, Any], cap: int | None, temperature: float | None
) -> dict[str, Any]:
    """The caller's parameters with the output cap and the evaluated temperature applied.

    A caller's larger ``max_tokens`` (or ``max_completion_tokens``) is lowered to the cap,
    a smaller one kept; without one the cap is sent. The policy's temperature applies when
    the caller sets none.

    Raises:
        TypeError: a parameter that would bypass the policy (model, endpoint, key).
        ValueError: an output cap that is not an integer >= 1.
    """
    bad = sorted(CALLER_MAY_NOT_SET & set(kwargs))
    if bad:
        raise TypeError(f"the policy chooses the model and endpoint; do not pass {', '.join(bad)}")
    bad_cap = bad_output_cap(kwargs)
    if bad_cap is not None:
        raise ValueError(f"{bad_cap[0]}: expected an integer >= 1, found {bad_cap[1]!r}"[:300])
    params = dict(kwargs)
    if cap is not None:
        given = [k for k in OUTPUT_CAP_KEYS if params.get(k) is not None]
        for name in given:
            params[name] = min(params[name], cap)
        if not given:
            params["max_tokens"] = cap
    if temperature is not None and params.get("temperature") is None:
        params["temperature"] = temperature
    return params
