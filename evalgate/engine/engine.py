"""The engine: runs calls concurrently on one background event loop.

Concurrency is the engine's, not pytest's: a single process keeps up to ``concurrency``
calls in flight (plus per-tier rpm/tpm limits), whether or not xdist adds processes.
Callers submit from any thread and get a ``concurrent.futures.Future``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from evalgate.engine.cache import ResponseCache, cache_key
from evalgate.engine.calls import CallSpec, Endpoint, attempt
from evalgate.engine.limits import TierLimits
from evalgate.engine.retry import RetryPolicy, is_retryable, retry_after_seconds
from evalgate.results import CallResult

EndpointResolver = Callable[[CallSpec], Endpoint]
T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, without credentials litellm may echo."""
    message = " ".join(str(exc).split()) or repr(exc)
    if len(message) > 300:
        message = message[:299] + "…"
    return f"{type(exc).__name__}: {message}"


async def _warm_up() -> None:
    """One streaming round trip through litellm to a throw-away local server.

    litellm imports provider modules and builds clients and stream wrappers lazily on the
    first call (~300 ms here); without this the first wave of calls would carry that in
    their latency and TTFT. The server is evalgate's own stdlib OpenAI-protocol server,
    started on 127.0.0.1 for this one request; nothing is recorded.
    """
    from evalgate.engine.calls import litellm_module
    from evalgate.testing.fake_openai import FakeOpenAIServer

    litellm = litellm_module()
    server = await asyncio.to_thread(FakeOpenAIServer().start)
    try:
        response = await litellm.acompletion(
            model="openai/evalgate-warm-up", api_base=server.base_url, api_key="-",
            messages=[{"role": "user", "content": "warm up"}], max_tokens=4, stream=True,
            stream_options={"include_usage": True}, max_retries=0, timeout=10,
        )
        async for _ in response:
            pass
    except Exception:
        pass  # warming up is best effort; a real call will report real problems
    finally:
        await asyncio.to_thread(server.stop)


class Engine:
    """Runs :class:`CallSpec` s with bounded concurrency, retries, limits and a cache.

    Args:
        resolve: maps a spec to the endpoint to call (local servers, API keys).
        concurrency: calls in flight at most.
        cache: the response cache, or None to bypass it (``--evalgate-no-cache``).
        retry: backoff policy.
        tier_limits: tier name -> (rpm, tpm).
        seed: seeds the backoff jitter (reproducible waits in tests).
        warm_up: pay litellm's one-time setup before the first measured call.
    """

    def __init__(
        self,
        resolve: EndpointResolver,
        *,
        concurrency: int = 8,
        cache: ResponseCache | None = None,
        retry: RetryPolicy | None = None,
        tier_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
        seed: int | None = None,
        warm_up: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._resolve = resolve
        self._cache = cache
        self._retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="evalgate-engine", daemon=True
        )
        self._thread.start()
        self._semaphore = self._on_loop(self._make_semaphore(concurrency))
        self._limits = {
            tier: self._on_loop(self._make_limits(rpm, tpm))
            for tier, (rpm, tpm) in (tier_limits or {}).items()
            if rpm or tpm
        }
        if warm_up:
            self._on_loop(_warm_up())

    def _on_loop(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @staticmethod
    async def _make_semaphore(n: int) -> asyncio.Semaphore:
        return asyncio.Semaphore(n)

    @staticmethod
    async def _make_limits(rpm: int | None, tpm: int | None) -> TierLimits:
        return TierLimits(rpm, tpm)

    def submit(self, spec: CallSpec) -> concurrent.futures.Future[CallResult]:
        """Schedules a call; the future never raises, failures are error results."""
        return asyncio.run_coroutine_threadsafe(self.run(spec), self._loop)

    def submit_coroutine(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Runs a coroutine (which may await :meth:`run`) on the engine's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def run(self, spec: CallSpec) -> CallResult:
        key = None
        if self._cache is not None and spec.use_cache:
            key = cache_key(spec.model, spec.messages, spec.generation_params(), spec.repeat)
            started = time.perf_counter()
            entry = await asyncio.to_thread(self._cache.get, key)
            if entry is not None:
                original = entry.result
                return replace(
                    original,
                    cached=True,
                    cost_usd=0.0,
                    saved_usd=original.cost_usd or 0.0,
                    hit_latency_ms=(time.perf_counter() - started) * 1000,
                )
        result = await self._call_with_retries(spec)
        if key is not None and result.error is None and self._cache is not None:
            await asyncio.to_thread(self._cache.put, key, spec.model, result)
        return result

    async def _call_with_retries(self, spec: CallSpec) -> CallResult:
        try:
            endpoint = self._resolve(spec)
        except Exception as exc:  # missing API key, server not started: not retryable
            return CallResult(error=describe(exc), attempts=0)
        limits = self._limits.get(spec.tier)
        estimated_tokens = spec.max_tokens + sum(len(m["content"]) for m in spec.messages) // 4
        async with self._semaphore:
            for number in range(1, self._retry.max_attempts + 1):
                if limits is not None:
                    await limits.acquire(estimated_tokens)
                try:
                    # The attempt's own timeout covers connecting; this one also covers a
                    # stream that stalls between chunks.
                    result = await asyncio.wait_for(attempt(spec, endpoint), spec.timeout_s)
                    return replace(result, attempts=number)
                except Exception as exc:
                    if number == self._retry.max_attempts or not is_retryable(exc):
                        return CallResult(error=describe(exc), attempts=number)
                    await asyncio.sleep(
                        self._retry.delay(number, retry_after_seconds(exc), self._rng)
                    )
        raise AssertionError("unreachable")  # the loop always returns

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
