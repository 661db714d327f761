"""Bounded time for every grade: grader jobs run in threads that can be abandoned.

A grader is code that reads untrusted output (a catastrophic regex, a deeply nested JSON
document, a user function that loops forever), so no grade may wait on it without limit.
Each grade is a *job* with its own time limit (:data:`DEFAULT_TIMEOUT_S`, or the grader's
``timeout_s``), run by a :class:`GradingThreads` pool. A watchdog thread fails a job that
runs past its limit with :class:`GraderTimeout`, abandons the worker thread running it
(a fresh one takes its place, so later grades keep flowing) and asks the abandoned thread
to stop by raising :class:`GraderTimeout` inside it, which ends Python code at its next
instruction.

The clock counts the grader's own work only: while the grader waits for one of its model
calls (an LLM judge's, see :func:`paused`) it stands still, because those calls are bounded
by the engine (each attempt's ``timeout_s`` and the retries).

One limit is outside any thread's reach: C code that holds the GIL, such as a stdlib
``re`` search, freezes every thread of the process. Built-in graders therefore match
patterns with the ``regex`` package and its own timeout (:func:`search`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
"""A grade's time limit unless its grader sets ``timeout_s`` (seconds of the grader's own
work; model calls it makes are bounded by the engine instead)."""


class GraderTimeout(Exception):
    """A grader ran past its time limit."""


class _Job:
    __slots__ = (
        "fn",
        "future",
        "label",
        "pause_started",
        "paused",
        "paused_total",
        "started",
        "timeout_s",
        "worker",
    )

    def __init__(self, fn: Callable[[], Any], timeout_s: float, label: str) -> None:
        self.fn = fn
        self.timeout_s = timeout_s
        self.label = label
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.started: float | None = None
        self.worker: _Worker | None = None
        self.paused = 0
        self.pause_started = 0.0
        self.paused_total = 0.0

    def overdue_in(self, now: float) -> float:
        """Seconds until the limit (<= 0: overdue); inf while paused or not started."""
        if self.started is None or self.paused:
            return math.inf
        return self.started + self.paused_total + self.timeout_s - now

    def remaining(self) -> float:
        left = self.overdue_in(time.monotonic())
        return self.timeout_s if math.isinf(left) else max(0.0, left)


class _Worker:
    __slots__ = ("abandoned", "job", "loop", "thread")

    def __init__(self) -> None:
        self.abandoned = False
        self.job: _Job | None = None
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


_current = threading.local()


def _job() -> _Job | None:
    return getattr(_current, "job", None)


def remaining() -> float:
    """Seconds left to the running grade (the default limit outside a grading thread)."""
    job = _job()
    return DEFAULT_TIMEOUT_S if job is None else job.remaining()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Stops the running grade's clock while the block runs (a model call of the grader)."""
    job = _job()
    if job is None:
        yield
        return
    with _LOCK:
        if job.paused == 0:
            job.pause_started = time.monotonic()
        job.paused += 1
    try:
        yield
    finally:
        with _LOCK:
            job.paused -= 1
            if job.paused == 0:
                job.paused_total += time.monotonic() - job.pause_started
            _WAKE.notify_all()


@contextlib.contextmanager
def limited(timeout_s: float) -> Iterator[None]:
    """Bounds :func:`remaining` on this thread while the block runs, for grader code run
    outside a :class:`GradingThreads` pool (a runtime cascade's checks in the caller's
    thread): a :func:`search` in it stops at the limit instead of the default one."""
    job = _Job(lambda: None, timeout_s, "check")
    job.started = time.monotonic()
    previous = getattr(_current, "job", None)
    _current.job = job
    try:
        yield
    finally:
        _current.job = previous


def run_coroutine(coro: Any) -> Any:
    """Runs a coroutine on the calling grading thread's own event loop (made once per thread).

    Async graders run here, never on the engine's loop, so one that blocks cannot stall the
    engine's calls.
    """
    worker = getattr(_current, "worker", None)
    if worker is None:
        return asyncio.run(coro)
    if worker.loop is None or worker.loop.is_closed():
        worker.loop = asyncio.new_event_loop()
    return worker.loop.run_until_complete(coro)


def search(pattern: str, text: str, flags: int = 0) -> Any:
    """``regex.search`` bounded by the running grade's remaining time.

    Raises:
        GraderTimeout: the match ran past the limit (a pattern with catastrophic
            backtracking on this text).
    """
    import regex

    try:
        return regex.search(pattern, text, flags, timeout=max(0.001, remaining()))
    except TimeoutError:
        raise GraderTimeout("the regular expression ran past the time limit") from None


# One lock and condition for every pool: jobs and the watchdog share few, short sections.
_LOCK = threading.Lock()
_WAKE = threading.Condition(_LOCK)


def _interrupt(thread: threading.Thread | None) -> None:
    """Raises GraderTimeout in a thread at its next Python instruction (best effort)."""
    if thread is None or thread.ident is None:
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(GraderTimeout)
    )


class GradingThreads:
    """Runs grading jobs in daemon threads, each job within its own time limit.

    Args:
        name: thread name prefix.
        size: jobs running at once (more wait in order; a job's clock starts when it runs).
    """

    _ids = itertools.count(1)

    def __init__(self, name: str, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self._name = name
        self._size = size
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: set[_Worker] = set()
        self._busy = 0  # jobs submitted and not yet settled
        self._closed = False
        self._watchdog = threading.Thread(target=self._watch, name=f"{name}-watchdog", daemon=True)
        self._watchdog.start()

    def submit(
        self, fn: Callable[[], T], timeout_s: float, label: str
    ) -> concurrent.futures.Future[T]:
        """Runs ``fn()`` in a grading thread; the future fails with :class:`GraderTimeout`
        (saying ``label`` and the limit) when it runs for more than ``timeout_s`` seconds."""
        job = _Job(fn, timeout_s, label)
        with _LOCK:
            if self._closed:
                raise RuntimeError("the grading threads are closed")
            self._busy += 1
            if self._busy > len(self._workers) and len(self._workers) < self._size:
                self._spawn()
        self._queue.put(job)
        return job.future

    def _spawn(self) -> None:
        # Called with _LOCK held.
        worker = _Worker()
        worker.thread = threading.Thread(
            target=self._work,
            args=(worker,),
            name=f"{self._name}-{next(self._ids)}",
            daemon=True,
        )
        self._workers.add(worker)
        worker.thread.start()

    def _work(self, worker: _Worker) -> None:
        _current.worker = worker
        try:
            while True:
                job = self._queue.get()
                if job is None or worker.abandoned:
                    if job is not None:
                        self._queue.put(job)  # not ours to run any more
                    return
                if not job.future.set_running_or_notify_cancel():
                    with _LOCK:
                        self._busy -= 1
                    continue
                with _LOCK:
                    job.worker = worker
                    job.started = time.monotonic()
                    worker.job = job
                    _WAKE.notify_all()
                _current.job = job
                try:
                    result = job.fn()
                except GraderTimeout:
                    if worker.abandoned:
                        return
                    self._settle(worker, job, error=GraderTimeout(self._timeout_message(job)))
                except BaseException as exc:
                    if worker.abandoned:
                        return
                    self._settle(worker, job, error=exc)
                else:
                    if worker.abandoned:
                        return
                    self._settle(worker, job, result=result)
                finally:
                    _current.job = None
                if worker.abandoned:
                    return
        except GraderTimeout:
            return  # interrupted after it was abandoned; a replacement runs its jobs
        finally:
            if worker.loop is not None and not worker.loop.is_running():
                with contextlib.suppress(Exception):
                    worker.loop.close()

    def _settle(
        self, worker: _Worker, job: _Job, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        with _LOCK:
            if worker.abandoned or job.future.done():
                return
            worker.job = None
            self._busy -= 1
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

    @staticmethod
    def _timeout_message(job: _Job) -> str:
        return f"{job.label} ran past its time limit of {job.timeout_s:g} s"

    def _watch(self) -> None:
        while True:
            overdue: list[_Job] = []
            with _LOCK:
                if self._closed:
                    return
                now = time.monotonic()
                wait = math.inf
                for worker in self._workers:
                    job = worker.job
                    if job is None or worker.abandoned:
                        continue
                    left = job.overdue_in(now)
                    if left <= 0:
                        overdue.append(job)
                    else:
                        wait = min(wait, left)
                for job in overdue:
                    running = job.worker
                    assert running is not None
                    running.abandoned = True
                    self._workers.discard(running)
                    self._busy -= 1
                    job.future.set_exception(GraderTimeout(self._timeout_message(job)))
                    self._spawn()  # later jobs keep flowing
                if not overdue:
                    _WAKE.wait(None if math.isinf(wait) else min(wait, 60.0))
            for job in overdue:
                _interrupt(job.worker.thread if job.worker else None)

    def close(self) -> None:
        """Stops idle workers and the watchdog; running (or abandoned) jobs are not waited for."""
        with _LOCK:
            if self._closed:
                return
            self._closed = True
            count = len(self._workers)
            _WAKE.notify_all()
        for _ in range(count):
            self._queue.put(None)
