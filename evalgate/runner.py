"""Per-process execution: prefetch calls, grade them as they finish, record each at once.

Each pytest process (the only one, or each xdist worker) has one Runner. The session
hands it the items this process will run, in pytest's order; the runner keeps a bounded
window of them submitted to the engine (:data:`PREFETCH_PER_SLOT` times the concurrency)
and refills it as calls finish and as pytest takes their results, so ``concurrency``
calls stay in flight while memory stays flat however large the suite, and ``-x`` or
``--maxfail`` stops the run with at most a window of calls to cancel. Each finished call
is graded at once, each grade in a grading thread within its time limit
(:mod:`evalgate.graders.deadline`), and appended to results.jsonl by the recorder thread,
so an interrupted run keeps every finished result and no grader can hang it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
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
from evalgate.graders import deadline
from evalgate.graders.deadline import GraderTimeout, GradingThreads
from evalgate.graders.grading import (
    UsageMeter,
    combine,
    grade_one,
    is_async,
    timed_out,
    timeout_s,
)
from evalgate.graders.registry import TIMEOUT_PARAM
from evalgate.plan import ItemPlan
from evalgate.redact import remember, remember_environment
from evalgate.results import CallResult, CaseResult, GradeResult, ItemKey, ResultsWriter
from evalgate.resume import Action, decide
from evalgate.runs import RunPaths
from evalgate.suite.model import LOCAL_PREFIX, GraderSpec, Suite

ASYNC_GRADERS = 16
"""Async grades (an LLM judge waiting on its model) running at once per process."""


class Endpoints:
    """Resolves a call's endpoint: local servers (from the run's servers.json) or providers.

    servers.json is read when the object is made (in pytest's thread) and again, in a
    worker thread, whenever a call names a local model it does not list: a file that did
    not exist yet (or named other servers) is never taken as the final word, and the
    engine's event loop never waits on the disk.
    """

    def __init__(self, servers_file: os.PathLike[str] | str) -> None:
        self._servers_file = servers_file
        # A local model's chat URL -> its Files/Batches URL (evalgate.engine.batch_local).
        self._batch_urls: dict[str, str] = {}
        self._local: dict[str, str] = self._read_servers()
        remember_environment(os.environ)  # provider keys litellm reads for us

    def set_local(self, local: Mapping[str, str]) -> None:
        self._local = dict(local)

    def _read_servers(self) -> dict[str, str]:
        try:
            with open(self._servers_file, encoding="utf-8") as fh:
                servers = json.load(fh)
            local = {name: info["url"] for name, info in servers.items()}
            self._batch_urls.update(
                {
                    info["url"]: info["batch_url"]
                    for info in servers.values()
                    if info.get("batch_url")
                }
            )
            return local
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}

    def batch_base(self, base_url: str) -> str:
        """Where the batches of calls to ``base_url`` go: a local model's batch endpoints,
        else the endpoint itself."""
        return self._batch_urls.get(base_url.rstrip("/"), base_url)

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
        done: Mapping[ItemKey, CaseResult] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.paths = paths
        self.engine = engine
        self.worker = worker
        self._done = dict(done or {})
        self._should_stop = should_stop or (lambda: False)
        self._writer = ResultsWriter(paths.results)
        # One recorder thread appends, so lines are written in completion order.
        self._recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalgate-rec")
        # Grades run in threads that a grader past its time limit cannot hold up: synchronous
        # graders one at a time (as user code expects), async ones (a judge waiting on
        # its model) side by side.
        self._sync_graders = GradingThreads("evalgate-grade", 1)
        self._async_graders = GradingThreads("evalgate-grade-async", ASYNC_GRADERS)
        self._futures: dict[ItemKey, concurrent.futures.Future[CaseResult]] = {}
        # Items waiting to be submitted, in pytest's order, and every key ever submitted
        # (an item pytest asked for early is not submitted again when the queue gets there).
        self._queue: deque[ItemPlan] = deque()
        self._submitted: set[ItemKey] = set()
        self._running = 0
        # Keys of submitted batch items: they count in neither the window nor the lead.
        self._batched: set[ItemKey] = set()
        self.window = PREFETCH_PER_SLOT * engine.concurrency
        self._ahead = AHEAD_PER_WINDOW * self.window
        self._stopped = False
        # Refills come from pytest's thread and from the engine's (as calls finish).
        self._lock = threading.RLock()

    def prefetch(self, plans: Iterable[ItemPlan]) -> None:
        """Queues items to run ahead of pytest (in this order) and fills the window.

        Items of batch configs are all submitted now, outside the window: a provider batch
        needs its requests together (the engine groups them), and a call waiting for its
        batch holds no connection, only a future.
        """
        with self._lock, self.engine.batches_held():
            for plan in plans:
                if plan.config.batch:
                    if plan.key not in self._submitted and self._reusable(plan) is None:
                        self._submit(plan)
                else:
                    self._queue.append(plan)
        self._fill()

    def _fill(self) -> None:
        with self._lock:
            while (
                self._queue
                and self._running < self.window
                and len(self._futures) - len(self._batched) < self._ahead
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
            if plan.config.batch:
                self._batched.add(plan.key)
            else:
                self._running += 1
            # A resumed item whose grading alone changed is graded again, without a call.
            stored = self._done.get(plan.key)
            call = stored.call if decide(plan, stored) is Action.REGRADE and stored else None
            future = self.engine.submit_coroutine(self._execute(plan, call))
            self._futures[plan.key] = future
        if plan.config.batch:
            return
        future.add_done_callback(self._finished)

    def _finished(self, _future: concurrent.futures.Future[CaseResult]) -> None:
        with self._lock:
            self._running -= 1
        self._fill()

    def _reusable(self, plan: ItemPlan) -> CaseResult | None:
        """A stored result of a resumed run that still holds (see :mod:`evalgate.resume`)."""
        done = self._done.get(plan.key)
        return done if decide(plan, done) is Action.REUSE else None

    async def _execute(self, plan: ItemPlan, stored: CallResult | None = None) -> CaseResult:
        # The prompt is rendered here, not kept in the plan (see ItemPlan): microseconds for
        # a template, milliseconds when the config trims a long context.
        call = stored if stored is not None else await self.engine.run(plan.spec)
        grades: tuple[GradeResult, ...] = ()
        if call.error is None:
            graders = (*plan.suite.graders, *plan.case.graders)
            grades = tuple(await asyncio.gather(*(self._grade(plan, call, s) for s in graders)))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._recorder, self._record, plan, call, grades)

    async def _grade(self, plan: ItemPlan, call: CallResult, spec: GraderSpec) -> GradeResult:
        """One grade, in a grading thread and within its time limit (never on this loop)."""
        meter = UsageMeter()
        ctx = GraderCalls(self.engine, plan.suite, meter)
        lane = self._async_graders if is_async(spec) else self._sync_graders
        future = lane.submit(
            functools.partial(grade_one, spec, call.output, plan.case, call, ctx, meter),
            timeout_s(spec),
            f"grader {spec.type!r}",
        )
        try:
            return await asyncio.wrap_future(future)
        except GraderTimeout as exc:
            return timed_out(spec, plan.case, exc, meter)

    def _record(
        self, plan: ItemPlan, call: CallResult, grades: tuple[GradeResult, ...]
    ) -> CaseResult:
        suite, case = plan.suite, plan.case
        if call.error is None:
            score, passed = combine(grades, suite.threshold)
        else:
            grades, score, passed = (), 0.0, False
        result = CaseResult(
            item_key=plan.label,
            run_id=self.paths.run_id,
            suite=suite.name,
            feature=suite.feature,
            suite_hash=suite.suite_hash,
            case_id=case.id,
            config_id=plan.config.id,
            repeat=plan.repeat,
            group=case.group,
            tier=plan.config.tier,
            model=plan.model,
            must_pass=case.must_pass,
            call=call,
            grades=grades,
            score=score,
            passed=passed,
            expected=expected_text(plan),
            worker=self.worker,
            finished_at=time.time(),
            request_hash=plan.request_hash,
            grading_hash=case.grading_hash,
        )
        self._writer.append(result)
        return result

    def result_for(self, plan: ItemPlan) -> tuple[CaseResult, bool]:
        """Blocks until the item's result is recorded: (result, reused from a resumed run)."""
        reused = self._reusable(plan)
        if reused is not None:
            if reused.suite_hash != plan.suite.suite_hash:
                # Still valid after an edit elsewhere in the suite: recorded again under
                # the current hash, since the report reads only results of that hash.
                reused = replace(reused, suite_hash=plan.suite.suite_hash, worker=self.worker)
                self._writer.append(reused)
                self._done[plan.key] = reused
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
                self._batched.discard(plan.key)
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
        self._sync_graders.close()
        self._async_graders.close()
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
            transport=tier.transport if tier else "auto",
        )
        # Ahead of queued item calls: the item being graded already holds its answer. The
        # grader runs on a grading thread's loop; the call runs on the engine's, and the
        # grade's clock stands still meanwhile (the engine bounds the call).
        with deadline.paused():
            result = await asyncio.wrap_future(self._engine.submit(spec, GRADER_PRIORITY))
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
        shown = {
            k: v
            for k, v in spec.params.items()
            if isinstance(v, str | int | float | list) and k != TIMEOUT_PARAM
        }
        rendered = {
            k: render(v, dict(plan.case.vars)) if isinstance(v, str) else v
            for k, v in shown.items()
        }
        args = ", ".join(f"{k}={v!r}" for k, v in rendered.items())
        parts.append(f"{spec.type}({args})")
    return "; ".join(parts)
