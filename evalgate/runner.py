"""Per-process execution: prefetch calls, grade them as they finish, record each at once.

Each pytest process (the only one, or each xdist worker) has one Runner. The session
hands it the items this process will run, in pytest's order; the runner keeps a bounded
window of them submitted to the engine (:data:`PREFETCH_PER_SLOT` times the concurrency)
and refills it as calls finish and as pytest takes their results, so ``concurrency``
calls stay in flight while memory stays flat however large the suite, and ``-x`` or
``--maxfail`` stops the run with at most a window of calls to cancel. Each finished call
is graded and appended to results.jsonl immediately, in the engine's thread, so an
interrupted run keeps every finished result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from evalgate.engine.calls import CallSpec, Endpoint
from evalgate.engine.engine import Engine
from evalgate.engine.slots import GRADER_PRIORITY
from evalgate.graders.grading import UsageMeter, grade_output, is_async, run_async
from evalgate.plan import ItemPlan
from evalgate.redact import remember, remember_environment
from evalgate.results import CallResult, CaseResult, GradeResult, ResultsWriter
from evalgate.runs import RunPaths
from evalgate.suite.model import LOCAL_PREFIX, Suite


class Endpoints:
    """Resolves a call's endpoint: local servers (from the run's servers.json) or providers.

    servers.json is read when the object is made (in pytest's thread) and again, in a
    worker thread, whenever a call names a local model it does not list: a file that did
    not exist yet (or named other servers) is never taken as the final word, and the
    engine's event loop never waits on the disk.
    """

    def __init__(self, servers_file: os.PathLike[str] | str) -> None:
        self._servers_file = servers_file
        self._local: dict[str, str] = self._read_servers()
        remember_environment(os.environ)  # provider keys litellm reads for us

    def set_local(self, local: Mapping[str, str]) -> None:
        self._local = dict(local)

    def _read_servers(self) -> dict[str, str]:
        try:
            with open(self._servers_file, encoding="utf-8") as fh:
                return {name: info["url"] for name, info in json.load(fh).items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    def __call__(self, spec: CallSpec) -> Endpoint | Awaitable[Endpoint]:
        if spec.model.startswith(LOCAL_PREFIX):
            name = spec.model[len(LOCAL_PREFIX) :]
            url = self._local.get(name)
            if url is None:
                return self._reload_for(spec.model, name)
            return _local_endpoint(name, url)
        api_key = None
        if spec.api_base and not spec.api_key_env:
            # A self-hosted endpoint without a named key: send a placeholder, never let the
            # SDK fall back to OPENAI_API_KEY and hand a real key to a third-party server.
            api_key = "no-key"
        if spec.api_key_env:
            api_key = os.environ.get(spec.api_key_env)
            if not api_key:
                raise RuntimeError(
                    f"environment variable {spec.api_key_env} is not set (needed for {spec.model})"
                )
            remember(api_key)  # never shown, whatever an error quotes back
        return Endpoint(model=spec.model, api_base=spec.api_base, api_key=api_key)

    async def _reload_for(self, model: str, name: str) -> Endpoint:
        self._local = await asyncio.to_thread(self._read_servers)
        url = self._local.get(name)
        if url is None:
            raise RuntimeError(f"no server is running for {model}")
        return _local_endpoint(name, url)


def _local_endpoint(name: str, url: str) -> Endpoint:
    return Endpoint(model=f"openai/{name}", api_base=url, api_key="local")


PREFETCH_PER_SLOT = 4
"""Calls submitted to the engine and not yet finished, per concurrency slot: enough that
the slots never wait for pytest, few enough that memory does not grow with the suite."""

AHEAD_PER_WINDOW = 4
"""How many windows of results may wait for pytest to take them (behind a slow item)."""


class Runner:
    """Runs this process's items and records their results.

    Args:
        should_stop: True once pytest is stopping (``-x``, ``--maxfail``): nothing more is
            submitted.
    """

    def __init__(
        self,
        paths: RunPaths,
        engine: Engine,
        *,
        worker: str = "main",
        done: Mapping[str, CaseResult] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.paths = paths
        self.engine = engine
        self.worker = worker
        self._done = dict(done or {})
        self._should_stop = should_stop or (lambda: False)
        self._writer = ResultsWriter(paths.results)
        # One recorder thread grades and appends, so the event loop never blocks on
        # CPU-bound graders and lines are written in completion order.
        self._recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalgate-rec")
        self._futures: dict[str, concurrent.futures.Future[CaseResult]] = {}
        # Items waiting to be submitted, in pytest's order, and every key ever submitted
        # (an item pytest asked for early is not submitted again when the queue gets there).
        self._queue: deque[ItemPlan] = deque()
        self._submitted: set[str] = set()
        self._running = 0
        self.window = PREFETCH_PER_SLOT * engine.concurrency
        self._ahead = AHEAD_PER_WINDOW * self.window
        self._stopped = False
        # Refills come from pytest's thread and from the engine's (as calls finish).
        self._lock = threading.RLock()

    def prefetch(self, plans: Iterable[ItemPlan]) -> None:
        """Queues items to run ahead of pytest (in this order) and fills the window."""
        with self._lock:
            self._queue.extend(plans)
        self._fill()

    def _fill(self) -> None:
        with self._lock:
            while (
                self._queue
                and self._running < self.window
                and len(self._futures) < self._ahead
                and not self._stopped
            ):
                if self._should_stop():
                    self._stopped = True
                    self._queue.clear()
                    return
                plan = self._queue.popleft()
                if plan.key not in self._submitted and self._reusable(plan) is None:
                    self._submit(plan)

    def _submit(self, plan: ItemPlan) -> None:
        with self._lock:
            self._submitted.add(plan.key)
            self._running += 1
            future = self.engine.submit_coroutine(self._execute(plan))
            self._futures[plan.key] = future
        future.add_done_callback(self._finished)

    def _finished(self, _future: concurrent.futures.Future[CaseResult]) -> None:
        with self._lock:
            self._running -= 1
        self._fill()

    def _reusable(self, plan: ItemPlan) -> CaseResult | None:
        """A finished result of a resumed run, if it is for the same suite definition."""
        done = self._done.get(plan.key)
        if done is not None and done.suite_hash == plan.suite.suite_hash and not done.errored:
            return done
        return None

    async def _execute(self, plan: ItemPlan) -> CaseResult:
        call = await self.engine.run(plan.spec)
        precomputed: dict[int, GradeResult] = {}
        if call.error is None:
            graders = (*plan.suite.graders, *plan.case.graders)
            pending = [(i, spec) for i, spec in enumerate(graders) if is_async(spec)]
            if pending:
                meters = [UsageMeter() for _ in pending]
                done = await asyncio.gather(
                    *(
                        run_async(
                            spec,
                            call.output,
                            plan.case,
                            call,
                            GraderCalls(self.engine, plan.suite, meter),
                            meter,
                        )
                        for (_, spec), meter in zip(pending, meters, strict=True)
                    )
                )
                precomputed = {i: grade for (i, _), grade in zip(pending, done, strict=True)}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._recorder, self._record, plan, call, precomputed)

    def _record(
        self, plan: ItemPlan, call: CallResult, precomputed: Mapping[int, GradeResult]
    ) -> CaseResult:
        suite, case = plan.suite, plan.case
        graders = (*suite.graders, *case.graders)
        if call.error is None:
            grades, score, passed = grade_output(
                call.output, case, graders, suite.threshold, call, precomputed
            )
        else:
            grades, score, passed = (), 0.0, False
        result = CaseResult(
            item_key=plan.key,
            run_id=self.paths.run_id,
            suite=suite.name,
            feature=suite.feature,
            suite_hash=suite.suite_hash,
            case_id=case.id,
            config_id=plan.config.id,
            repeat=plan.repeat,
            group=case.group,
            tier=plan.config.tier,
            model=plan.spec.model,
            must_pass=case.must_pass,
            call=call,
            grades=grades,
            score=score,
            passed=passed,
            expected=expected_text(plan),
            worker=self.worker,
            finished_at=time.time(),
        )
        self._writer.append(result)
        return result

    def result_for(self, plan: ItemPlan) -> tuple[CaseResult, bool]:
        """Blocks until the item's result is recorded: (result, reused from a resumed run)."""
        reused = self._reusable(plan)
        if reused is not None:
            return replace(reused, worker=self.worker), True
        with self._lock:
            future = self._futures.get(plan.key)
            if future is None:  # not prefetched (or not yet): run it now
                self._submit(plan)
                future = self._futures[plan.key]
        try:
            return future.result(), False
        finally:
            with self._lock:
                del self._futures[plan.key]
            self._fill()

    def close(self) -> None:
        """Stops submitting, cancels what is still queued or running, flushes the results."""
        with self._lock:
            self._stopped = True
            self._queue.clear()
            futures = list(self._futures.values())
        for future in futures:
            future.cancel()
        self._recorder.shutdown(wait=True)
        self._writer.close()


class GraderCalls:
    """The :class:`~evalgate.graders.registry.GradeContext` given to async graders.

    Their calls go through the run's engine (concurrency, retries, response cache) and are
    metered separately: grading cost is never added to the config's cost.
    """

    def __init__(self, engine: Engine, suite: Suite, meter: UsageMeter) -> None:
        self._engine = engine
        self._suite = suite
        self._meter = meter

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> CallResult:
        tier = self._suite.tiers.get(model)
        spec = CallSpec(
            model=tier.model if tier else model,
            messages=tuple(messages),
            max_tokens=max_tokens,
            temperature=temperature,
            stream=False,  # nothing to measure about the judge's first token
            repeat=0,
            tier=tier.name if tier else model,
            use_cache=True,
            price=tier.price if tier else None,
            api_base=tier.api_base if tier else None,
            api_key_env=tier.api_key_env if tier else None,
            timeout_s=tier.timeout_s if tier else 120.0,
        )
        # Ahead of queued item calls: the item being graded already holds its answer.
        result = await self._engine.run(spec, GRADER_PRIORITY)
        self.record_usage(result)
        return result

    def record_usage(self, call: CallResult) -> None:
        self._meter.add(call)


def grader_models(suite: Suite) -> set[str]:
    """Models the suite's graders call (an LLM judge), resolved through the suite's tiers."""
    from evalgate.graders.registry import lookup

    models = set()
    for spec in (*suite.graders, *(g for case in suite.cases for g in case.graders)):
        found = lookup(spec.type)
        if found is None or not found[0].wants_ctx:
            continue
        model = spec.params.get("model", found[0].default_model)
        if isinstance(model, str):
            tier = suite.tiers.get(model)
            models.add(tier.model if tier else model)
    return models


def expected_text(plan: ItemPlan) -> str:
    """A short statement of what the graders expect, for failure messages."""
    from evalgate.suite.templates import render

    parts = []
    for spec in (*plan.suite.graders, *plan.case.graders):
        shown = {k: v for k, v in spec.params.items() if isinstance(v, str | int | float | list)}
        rendered = {
            k: render(v, dict(plan.case.vars)) if isinstance(v, str) else v
            for k, v in shown.items()
        }
        args = ", ".join(f"{k}={v!r}" for k, v in rendered.items())
        parts.append(f"{spec.type}({args})")
    return "; ".join(parts)
