"""The engine: runs calls concurrently on one background event loop.

Concurrency is the engine's, not pytest's: a single process keeps up to ``concurrency``
calls in flight (plus per-tier rpm/tpm limits), whether or not xdist adds processes.
Callers submit from any thread and get a ``concurrent.futures.Future``.

OpenAI-protocol endpoints are called by the native transport (:mod:`evalgate.engine.native`);
litellm makes every other call. At high concurrency litellm's attempts run in worker
processes (:mod:`evalgate.engine.procpool`): litellm spends ~10 ms of CPU on each streamed
call, so one process cannot keep 50 fast calls in flight. The engine's own process keeps
the semaphore, limits, retries and cache either way; see :func:`auto_processes`.

litellm is started lazily: the worker processes (or, without them, litellm's import and
warm-up in this process) start on the first call that uses the litellm transport, so a run
whose tiers are all native pays none of it (~5 s of CPU and wall time on 2 cores).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from evalgate.engine.batch import BatchQueue, BatchSettings, BatchStore, batch_unsupported
from evalgate.engine.cache import ResponseCache
from evalgate.engine.calls import CallSpec, Endpoint, attempt, litellm_module, new_event_loop
from evalgate.engine.limits import RateLimit, limit_key, limiters
from evalgate.engine.native import NativeClients
from evalgate.engine.procpool import ProcessPool, RemoteAttemptError
from evalgate.engine.retry import RetryPolicy, is_retryable, retry_after_seconds
from evalgate.engine.slots import ITEM_PRIORITY, PrioritySlots
from evalgate.redact import redact
from evalgate.results import CallResult

EndpointResolver = Callable[[CallSpec], Endpoint | Awaitable[Endpoint]]
"""Maps a spec to its endpoint; returns an awaitable when it must do I/O (run off the loop)."""
Attempt = Callable[[CallSpec, Endpoint], Awaitable[CallResult]]
T = TypeVar("T")

# Worker processes are used automatically from this many calls in flight: one process
# sustains ~100 streamed calls/s through litellm, which 32 calls in flight outrun as soon
# as a call takes under ~300 ms. Below it, starting the workers (each imports litellm,
# about a second of CPU) buys nothing.
AUTO_PROCESSES_MIN_CONCURRENCY = 32
CALLS_IN_FLIGHT_PER_PROCESS = 25
PROCESSES_ENV = "EVALGATE_PROCESSES"


def auto_processes(concurrency: int) -> int:
    """How many worker processes to run attempts in (0: in the engine's own process).

    ``EVALGATE_PROCESSES=N`` forces N (0 turns the pool off). Otherwise, on POSIX and from
    :data:`AUTO_PROCESSES_MIN_CONCURRENCY` calls in flight, one worker per
    :data:`CALLS_IN_FLIGHT_PER_PROCESS` calls, at most one per CPU this process may use
    (shared among pytest-xdist workers); fewer than two is not worth it.
    """
    forced = os.environ.get(PROCESSES_ENV, "").strip()
    if forced:
        try:
            return max(0, int(forced))
        except ValueError:
            raise ValueError(f"{PROCESSES_ENV} must be an integer, got {forced!r}") from None
    if os.name != "posix" or concurrency < AUTO_PROCESSES_MIN_CONCURRENCY:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        xdist_workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    except ValueError:
        xdist_workers = 1
    n = min(cpus // xdist_workers, math.ceil(concurrency / CALLS_IN_FLIGHT_PER_PROCESS))
    return n if n >= 2 else 0


def describe(exc: BaseException) -> str:
    """``Type: message`` on one line, without credentials litellm may echo (redacted)."""
    message = redact(" ".join(str(exc).split()) or repr(exc))
    if len(message) > 300:
        message = message[:299] + "…"
    return f"{type(exc).__name__}: {message}"


async def _warm_up() -> None:
    """Pays litellm's one-time setup before the first measured call; sends nothing anywhere.

    litellm imports provider modules and builds clients and stream wrappers lazily on the
    first call (~300 ms here); without this the first wave of calls would carry that in
    their latency and TTFT. Two calls do it without a server: a streamed call answered by
    litellm's own ``mock_response`` (the stream wrapper, logging, usage), and a call
    through the OpenAI provider to a port on 127.0.0.1 that refuses connections (the SDK
    client, its HTTP pool and litellm's error mapping). Nothing is recorded.
    """
    import socket

    from evalgate.engine.calls import litellm_module

    litellm = litellm_module()
    common: dict[str, Any] = {
        "messages": [{"role": "user", "content": "warm up"}],
        "max_tokens": 4,
        "max_retries": 0,
        "timeout": 10,
    }
    with contextlib.suppress(Exception):  # best effort: a real call reports real problems
        response = await litellm.acompletion(
            model="openai/evalgate-warm-up",
            mock_response="warm",
            stream=True,
            stream_options={"include_usage": True},
            **common,
        )
        async for _ in response:
            pass
    # A bound socket that never listens: connecting to it is refused at once, and no other
    # process can take the port while it is held.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with contextlib.suppress(Exception):
            await litellm.acompletion(
                model="openai/evalgate-warm-up",
                api_base=f"http://127.0.0.1:{port}/v1",
                api_key="-",
                stream=True,
                **common,
            )


class LitellmStartError(RuntimeError):
    """litellm (its import, or its worker processes) could not be started for a call."""


def _as_hit(original: CallResult, started: float) -> CallResult:
    """``original`` served again: free, flagged, with the time it took to serve it."""
    return replace(
        original,
        cached=True,
        cost_usd=0.0,
        saved_usd=original.cost_usd or 0.0,
        hit_latency_ms=(time.perf_counter() - started) * 1000,
    )


class Engine:
    """Runs :class:`CallSpec` s with bounded concurrency, retries, limits and a cache.

    Args:
        resolve: maps a spec to the endpoint to call (local servers, API keys).
        concurrency: calls in flight at most.
        cache: the response cache, or None to bypass it (``--evalgate-no-cache``).
        retry: backoff policy.
        limits: :func:`~evalgate.engine.limits.limit_key` (model at endpoint) -> its rpm
            and tpm; calls of that model at that endpoint (item and grader calls alike)
            spend from one budget.
        limits_dir: where the limits' state is shared with the run's other processes
            (the run directory's ``limits/``); None keeps it in this process.
        seed: seeds the backoff jitter (reproducible waits in tests).
        warm_up: pay litellm's one-time setup before the first measured litellm call (with
            worker processes, in each of them). Like the worker processes, this happens
            when the first call that uses the litellm transport arrives, not before.
        processes: worker processes to run litellm attempts in; None chooses
            automatically (:func:`auto_processes`), 0 runs them in this process.
        batch_dir: where submitted batches are recorded (the run directory's
            ``batches/``), so a resumed run polls them instead of submitting again; None
            records nothing.
        batch_settings: batch limits and polling (:class:`~evalgate.engine.batch.BatchSettings`).
    """

    def __init__(
        self,
        resolve: EndpointResolver,
        *,
        concurrency: int = 8,
        cache: ResponseCache | None = None,
        retry: RetryPolicy | None = None,
        limits: Mapping[str, RateLimit] | None = None,
        limits_dir: Path | None = None,
        seed: int | None = None,
        warm_up: bool = True,
        processes: int | None = None,
        local_concurrency: int | None = None,
        batch_dir: Path | None = None,
        batch_settings: BatchSettings | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self._resolve = resolve
        self.concurrency = concurrency
        self._cache = cache
        self._retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        # OpenAI-protocol endpoints are called directly (evalgate.engine.native); litellm
        # (in this process or in the worker pool) makes every other call.
        self._native = NativeClients()
        # Calls of batch configs: queued, grouped and sent as provider batches; the
        # batches submitted are recorded in batch_dir (a resumed run polls them again).
        self._batches = BatchQueue(
            BatchStore(batch_dir) if batch_dir is not None else None,
            batch_settings,
            batch_base=getattr(resolve, "batch_base", None),  # local models' batch endpoints
        )
        # Cache key -> the result of the identical cached call now in flight (single flight).
        self._in_flight: dict[str, asyncio.Future[CallResult]] = {}
        # Validated now (EVALGATE_PROCESSES), used when the litellm transport starts.
        self._n_processes = auto_processes(concurrency) if processes is None else processes
        self._warm_up = warm_up
        self._pool: ProcessPool | None = None
        # The one start of litellm (pool or in-process warm-up), made by the first call
        # that needs it; every later call awaits the same task (and its failure).
        self._litellm_started: asyncio.Task[None] | None = None
        self._litellm_startup_s: float | None = None
        # litellm imported in this process (for its price map), off the loop.
        self._litellm_imported: asyncio.Task[Any] | None = None
        self._loop = new_event_loop()
        # The loop runs one root task until close(), not run_forever(): anyio (which
        # litellm uses to hand work to threads, twice per streamed call) looks for the
        # loop's root task, and without one it scans every task, i.e. every queued call.
        self._closing = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(self._until_closed(),),
            name="evalgate-engine",
            daemon=True,
        )
        self._thread.start()
        self._slots = self._on_loop(self._make_slots(concurrency))
        # Embedded local models share this machine's CPU: more calls in flight only queue
        # inside llama.cpp and make the servers' threads fight for the cores, so they get
        # their own, smaller limit on top of the global one (the session passes 1).
        self._local_slots = self._on_loop(
            self._make_slots(local_concurrency or max(1, os.cpu_count() or 1))
        )
        self._limits = limiters(dict(limits or {}), limits_dir)

    async def _until_closed(self) -> None:
        await self._closing

    def _release(self) -> None:
        if not self._closing.done():
            self._closing.set_result(None)

    def _on_loop(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @staticmethod
    async def _make_slots(n: int) -> PrioritySlots:
        return PrioritySlots(n)

    @property
    def processes(self) -> int:
        """Worker processes litellm attempts run in (0: this process, or not started yet)."""
        return 0 if self._pool is None else self._pool.size

    @property
    def litellm_startup_s(self) -> float | None:
        """Seconds the litellm transport took to start (None: no call has used it yet)."""
        return self._litellm_startup_s

    async def _litellm_attempt(self) -> Attempt:
        """The litellm attempt function, once litellm is started (the first caller starts it).

        Callers await this before their attempt's clock and timeout start, so neither the
        worker processes' start nor the warm-up counts in any call's latency or TTFT.
        """
        if self._litellm_started is None:
            # Created before any await: concurrent first calls on this loop share it.
            self._litellm_started = asyncio.ensure_future(self._start_litellm())
        # Shielded: a waiter that is cancelled does not cancel the start for the others.
        await asyncio.shield(self._litellm_started)
        return attempt if self._pool is None else self._pool.attempt

    async def _start_litellm(self) -> None:
        started = time.perf_counter()
        try:
            if self._n_processes > 0:
                # Spawned on the loop's thread (a few ms) and published at once, so that
                # close() sees and reaps it whatever point the start has reached.
                self._pool = ProcessPool(self._n_processes, warm_up=self._warm_up)
                # Children exit by themselves when this process dies; this covers an
                # engine that is dropped without close().
                weakref.finalize(self, self._pool.kill)
                await self._pool.start()
            else:
                await self._import_litellm()
                if self._warm_up:
                    await _warm_up()
        except Exception as exc:
            raise LitellmStartError(
                f"could not start the litellm transport: {describe(exc)}"
            ) from exc
        self._litellm_startup_s = time.perf_counter() - started

    async def _import_litellm(self) -> None:
        """Imports litellm (seconds of CPU) in a thread, so calls in flight keep going."""
        if self._litellm_imported is None:
            self._litellm_imported = asyncio.ensure_future(asyncio.to_thread(litellm_module))
        await asyncio.shield(self._litellm_imported)

    def worker_cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the worker processes (0.0 if none)."""
        if self._pool is None:
            return 0.0
        return self.submit_coroutine(self._pool.cpu_seconds()).result(timeout=60)

    def submit(
        self, spec: CallSpec, priority: int = ITEM_PRIORITY
    ) -> concurrent.futures.Future[CallResult]:
        """Schedules a call; the future never raises, failures are error results."""
        return asyncio.run_coroutine_threadsafe(self.run(spec, priority), self._loop)

    @contextlib.contextmanager
    def batches_held(self) -> Iterator[None]:
        """No batch is sent while inside (calls submitted meanwhile wait to be grouped).

        Scheduled on the loop in order with the calls submitted inside, so every one of
        them reaches the batch queue while it is held.
        """
        self._loop.call_soon_threadsafe(self._batches.hold)
        try:
            yield
        finally:
            self._loop.call_soon_threadsafe(self._batches.release)

    def submit_coroutine(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Runs a coroutine (which may await :meth:`run`) on the engine's loop."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def run(self, spec: CallSpec, priority: int = ITEM_PRIORITY) -> CallResult:
        """Runs one call: cache, then attempts with retries; never raises.

        Calls wait for a slot by ``priority`` (lower first), then in arrival order. Two
        identical cached requests in flight at once make one model call: the second waits
        for the first and is served its result as a cache hit (single flight).
        """
        # Everything happens inside the concurrency slot, the cache lookup included: calls
        # queue for slots in submission order (pytest's item order), and a lookup
        # that awaited a thread before queueing would send its call to the back of the
        # line, leaving its item waiting until the end of the run.
        if spec.batch:
            # No concurrency slot: a batch call waits for its batch, not for the endpoint.
            return await self._cached(spec, self._batch_call)
        async with self._slots.slot(priority):
            return await self._cached(spec, lambda s: self._call_with_retries(s, priority))

    async def _cached(
        self, spec: CallSpec, call: Callable[[CallSpec], Awaitable[CallResult]]
    ) -> CallResult:
        """``call(spec)`` behind the response cache (when the spec uses it), single flight."""
        cache = self._cache if spec.use_cache else None
        if cache is None:
            return await call(spec)
        key = spec.cache_key()
        started = time.perf_counter()
        while (leader := self._in_flight.get(key)) is not None:
            # The same request is being made right now: its answer is ours. An error
            # is not shared (errors are never cached): then this call makes its own.
            shared = await asyncio.shield(leader)
            if shared.error is None:
                return _as_hit(shared, started)
        # Registered before the first await, so an identical call arriving during the
        # lookup waits for this one instead of making its own.
        mine: asyncio.Future[CallResult] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = mine
        original = CallResult(error="CancelledError: the call was cancelled", attempts=0)
        try:
            lookup_started = time.perf_counter()
            entry = await asyncio.to_thread(cache.get, key)
            if entry is not None:
                original = entry.result
                return _as_hit(original, lookup_started)
            original = await call(spec)
            if original.error is None:
                await asyncio.to_thread(cache.put, key, spec.model, original)
            return original
        finally:
            del self._in_flight[key]
            mine.set_result(original)

    async def _batch_call(self, spec: CallSpec) -> CallResult:
        """A ``batch: true`` call, through the batch queue (:mod:`evalgate.engine.batch`)."""
        try:
            resolved = self._resolve(spec)
            endpoint = await resolved if inspect.isawaitable(resolved) else resolved
            unsupported = batch_unsupported(endpoint.model, endpoint.api_base, spec.transport)
            native = None if unsupported else self._native.target(spec, endpoint)
            if native is None:
                raise ValueError(unsupported or f"batch not supported for {spec.model}")
        except Exception as exc:  # missing API key, no OpenAI-protocol endpoint
            return CallResult(error=describe(exc), attempts=0)
        if spec.price is None and (
            self._litellm_imported is None or not self._litellm_imported.done()
        ):
            with contextlib.suppress(Exception):  # litellm's price map prices the answers
                await self._import_litellm()
        return await self._batches.call(spec, native)

    async def _call_with_retries(self, spec: CallSpec, priority: int) -> CallResult:
        try:
            resolved = self._resolve(spec)
            endpoint = await resolved if inspect.isawaitable(resolved) else resolved
            native = self._native.target(spec, endpoint)
        except Exception as exc:  # missing API key, server not started: not retryable
            return CallResult(error=describe(exc), attempts=0)
        run_attempt: Attempt = attempt
        if native is None:
            try:
                run_attempt = await self._litellm_attempt()
            except Exception as exc:  # not retryable: the same start failed for every call
                return CallResult(error=describe(exc), attempts=0)
        elif spec.price is None and (
            self._litellm_imported is None or not self._litellm_imported.done()
        ):
            # The call is priced from litellm's map: import it before the clock starts and
            # off the loop, not on the loop when the first answer is priced (which would
            # stall every call in flight). Without litellm the call goes unpriced, as before.
            with contextlib.suppress(Exception):
                await self._import_litellm()
        limits = self._limits.get(limit_key(spec.model, spec.api_base)) if self._limits else None
        estimated_tokens = spec.max_tokens + sum(len(m["content"]) for m in spec.messages) // 4
        local = (
            self._local_slots.slot(priority) if spec.model.startswith("local/") else nullcontext()
        )
        async with local:
            for number in range(1, self._retry.max_attempts + 1):
                if limits is not None:
                    await limits.acquire(estimated_tokens)
                try:
                    # timeout_s bounds the attempt as a whole, connecting to the last chunk:
                    # a stream that trickles on past it is cut (and retried). The transport
                    # gets the same value as its connect and read timeout, so a stall
                    # between chunks ends no later.
                    call = (
                        self._native.attempt(spec, native)
                        if native is not None
                        else run_attempt(spec, endpoint)
                    )
                    result = await asyncio.wait_for(call, spec.timeout_s)
                    return replace(result, attempts=number)
                except Exception as exc:
                    # A worker process judged its exception with the same functions.
                    remote = exc.failure if isinstance(exc, RemoteAttemptError) else None
                    retryable = remote.retryable if remote else is_retryable(exc)
                    if number == self._retry.max_attempts or not retryable:
                        # A worker process may not know every key this one read.
                        error = redact(remote.description) if remote else describe(exc)
                        return CallResult(error=error, attempts=number)
                    after = remote.retry_after_s if remote else retry_after_seconds(exc)
                    await asyncio.sleep(self._retry.delay(number, after, self._rng))
        raise AssertionError("unreachable")  # the loop always returns

    async def _aclose_transports(self) -> None:
        await self._batches.aclose()
        await self._native.aclose()
        if self._litellm_started is not None and not self._litellm_started.done():
            self._litellm_started.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._litellm_started
        if self._pool is not None:
            await self._pool.aclose()

    def close(self) -> None:
        """Closes the transports, reaps the worker processes (if they were started)."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.submit_coroutine(self._aclose_transports()).result(timeout=30)
        if self._pool is not None:
            self._pool.kill()
        if self._thread.is_alive() and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._release)
            self._thread.join(timeout=5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()
