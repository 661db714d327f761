"""One model call through litellm's async API, measured: output, tokens, cost, latency, TTFT."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalgate.cachekey import request_key
from evalgate.litellm_import import litellm_module
from evalgate.results import CallResult
from evalgate.suite.model import Price


@dataclass(frozen=True, slots=True)
class CallSpec:
    """Everything one call needs.

    Attributes:
        model: the tier's model string as written in the suite (the cache identity).
        messages: rendered chat messages.
        max_tokens, temperature: generation parameters every call sends.
        stream: stream the response (measures TTFT; not part of the answer's identity).
        repeat: 0-based repeat index (the cache key's eval-only ``sample``).
        tier: tier name (for messages; rate limits are keyed by model and endpoint).
        use_cache: read and write the response cache.
        price: explicit price; None -> litellm's price map.
        api_base, api_key_env: endpoint override and the env var holding the key.
        timeout_s: bounds each attempt as a whole, from sending the request to the last
            chunk (the engine cuts it there); also the transport's connect and read
            timeout, so no wait between chunks outlasts it.
        transport: ``auto``, ``native`` or ``litellm`` (see :mod:`evalgate.engine.native`).
        params: every other generation parameter sent to the model as is (``top_p``,
            ``stop``, ``seed``, ``response_format``, ``tools``...), as sorted
            ``(name, value)`` pairs so the spec stays immutable and picklable. Each one is
            part of the response cache key.
        batch: send as part of a provider batch (:mod:`evalgate.engine.batch`); not part
            of the answer's identity (a batch and an online call share cache entries).
    """

    model: str
    messages: tuple[Mapping[str, str], ...]
    max_tokens: int
    temperature: float
    stream: bool
    repeat: int
    tier: str
    use_cache: bool = False
    price: Price | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 120.0
    transport: str = "auto"
    params: tuple[tuple[str, Any], ...] = ()
    batch: bool = False

    def generation_params(self) -> dict[str, Any]:
        """Every parameter that decides the answer: what is sent, and what the cache keys on.

        ``stream`` is not one of them: a streamed and a non-streamed call of the same
        request produce the same text.
        """
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, **dict(self.params)}

    def cache_key(self) -> str:
        """The response-cache key (:func:`evalgate.cachekey.request_key`, repeat as sample)."""
        return request_key(
            model=self.model,
            messages=self.messages,
            params=self.generation_params(),
            api_base=self.api_base,
            sample=self.repeat,
        )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a call actually goes: litellm model name, base URL and key."""

    model: str
    api_base: str | None
    api_key: str | None


class CallFailed(Exception):
    """An attempt failed; carries the original exception for retry decisions."""


class AttemptLoop(asyncio.SelectorEventLoop):
    """The event loop attempts run on: a selector loop with a cheaper async-generator finalizer.

    Each streamed chunk leaves an unfinished async generator behind (the stream wrappers
    re-enter ``async for`` per chunk), and the stock finalizer schedules its ``aclose()``
    with ``call_soon_threadsafe``, which writes a byte to the loop's self-pipe: a system
    call per chunk, ~17 per streamed call. On the loop's own thread, which is where these
    generators die, ``call_soon`` does the same scheduling without waking the selector
    (the loop runs its ready queue before it next blocks). Other threads keep the stock,
    thread-safe path.
    """

    def _asyncgen_finalizer_hook(self, agen: Any) -> None:
        thread_id = getattr(self, "_thread_id", None)
        asyncgens = getattr(self, "_asyncgens", None)
        if thread_id is None or asyncgens is None or thread_id != threading.get_ident():
            super()._asyncgen_finalizer_hook(agen)  # type: ignore[misc]
            return
        asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon(self.create_task, agen.aclose())


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A fresh :class:`AttemptLoop` (on POSIX; the platform default elsewhere)."""
    if os.name != "posix":
        return asyncio.new_event_loop()
    return AttemptLoop()


# Models litellm's price map has no entry for: litellm never caches a miss, and tries
# every generalisation rule before giving up (~0.1 ms a call; models added to litellm's
# map later in the process are not seen).
_UNPRICED: set[str] = set()


def call_cost(
    spec: CallSpec, endpoint: Endpoint, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """USD for the call: the suite's price if given, else litellm's map, else None."""
    if input_tokens is None or output_tokens is None:
        return None
    if spec.price is not None:
        return spec.price.cost(input_tokens, output_tokens)
    if endpoint.model in _UNPRICED:
        return None
    try:
        prompt_cost, completion_cost = litellm_module().cost_per_token(
            model=endpoint.model, prompt_tokens=input_tokens, completion_tokens=output_tokens
        )
    except Exception:  # litellm raises for models it has no price for
        if len(_UNPRICED) < 1024:
            _UNPRICED.add(endpoint.model)
        return None
    return float(prompt_cost) + float(completion_cost)


async def attempt(spec: CallSpec, endpoint: Endpoint) -> CallResult:
    """Makes one attempt; raises the provider's exception on failure."""
    litellm = litellm_module()
    kwargs: dict[str, Any] = {
        "model": endpoint.model,
        "messages": [dict(m) for m in spec.messages],
        **spec.generation_params(),
        "timeout": spec.timeout_s,
        "max_retries": 0,  # the engine retries, with backoff that honours Retry-After
    }
    if endpoint.api_base:
        kwargs["api_base"] = endpoint.api_base
    if endpoint.api_key:
        kwargs["api_key"] = endpoint.api_key
    if spec.price is not None:
        # litellm prices every response for its own logging, whether or not anything
        # reads it; with the suite's price it uses that instead of searching its price
        # map (for a model the map lacks, ~3 ms of CPU per streamed call). These are
        # litellm's documented custom-pricing parameters: they are not sent upstream.
        kwargs["input_cost_per_token"] = spec.price.input_per_mtok / 1e6
        kwargs["output_cost_per_token"] = spec.price.output_per_mtok / 1e6
    started = time.perf_counter()
    ttft_ms: float | None = None
    finish_reason: str | None = None
    usage: Any = None
    if spec.stream:
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        parts: list[str] = []
        response = await litellm.acompletion(**kwargs)
        async for chunk in response:
            for choice in chunk.choices:
                content = choice.delta.content
                if content:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - started) * 1000
                    parts.append(content)
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
            chunk_usage = getattr(chunk, "usage", None)
            if chunk_usage is not None:
                usage = chunk_usage
        output = "".join(parts)
    else:
        response = await litellm.acompletion(**kwargs)
        choice = response.choices[0]
        output = choice.message.content or ""
        finish_reason = choice.finish_reason
        usage = getattr(response, "usage", None)
    latency_ms = (time.perf_counter() - started) * 1000
    input_tokens = getattr(usage, "prompt_tokens", None) if usage is not None else None
    output_tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
    return CallResult(
        output=output,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=call_cost(spec, endpoint, input_tokens, output_tokens),
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        finish_reason=finish_reason,
    )
