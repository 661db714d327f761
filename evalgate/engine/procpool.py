"""Spreads attempts over worker processes, each with its own event loop and litellm.

A streamed call through litellm costs 8-13 ms of CPU in its stream wrappers, logging and
pricing, almost all of it holding the GIL: one process tops out near 100 calls/s, which
a fast endpoint at high concurrency outruns (50 in flight at 200 ms want 250 calls/s).
The pool lets the engine hand each *attempt* to one of N child processes instead:

* everything else stays in the engine's process and loop: the cache, the concurrency
  semaphore (so ``concurrency`` still bounds the calls in flight across all children),
  rate limits, retries and their seeded backoff, timeouts;
* a child runs exactly :func:`evalgate.engine.calls.attempt` on the same spec and
  endpoint, so results are the same as in-process; a failure comes back as a
  :class:`RemoteAttemptError` carrying what the retry policy needs (whether to retry, the
  server's Retry-After, the ``Type: message`` line), computed by the child from the
  original exception;
* children are started once, when the engine's first litellm call arrives (a run whose
  calls all go native starts none), and live until the engine closes (or until the
  engine's process dies: they exit when their socket reaches end of file).

Messages are length-prefixed pickles over a Unix socket pair, one per child. A child
that dies fails its in-flight attempts with a retryable error; when no child is left,
attempts run in the engine's own process.

A child inherits the environment (API keys, ``LITELLM_*`` settings) but not litellm
settings made in the engine's process at run time (``litellm.success_callback = ...``,
``litellm.register_model``): those apply in-process only (``EVALGATE_PROCESSES=0``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalgate.engine.calls import CallSpec, Endpoint, attempt, litellm_module, new_event_loop
from evalgate.redact import redact
from evalgate.results import CallResult

_HEADER = struct.Struct("!I")
_READY_TIMEOUT_S = 300.0  # importing litellm on a loaded machine can take a while
_CANCEL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RemoteFailure:
    """A failed attempt, as the retry policy and the error result need it."""

    description: str  # ``Type: message``, as engine.describe renders the exception
    retryable: bool
    retry_after_s: float | None


class RemoteAttemptError(Exception):
    """An attempt that failed in a worker process (or whose worker died)."""

    def __init__(self, failure: RemoteFailure) -> None:
        super().__init__(failure.description)
        self.failure = failure


def _frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


async def _read(reader: asyncio.StreamReader) -> Any:
    header = await reader.readexactly(_HEADER.size)
    (size,) = _HEADER.unpack(header)
    return pickle.loads(await reader.readexactly(size))


def _child_env() -> dict[str, str]:
    """The engine's environment, with evalgate's own source tree importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not path else os.pathsep.join([root, path])
    return env


class _Worker:
    """The engine's end of one child process."""

    def __init__(self, index: int, *, warm_up: bool) -> None:
        self.index = index
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        # -P: the working directory is not importable in the child (evalgate's own tree is,
        # through PYTHONPATH), so a stray module there cannot shadow litellm or evalgate.
        cmd = [sys.executable, "-P", "-m", "evalgate.engine.procpool", "--fd", str(fd)]
        if not warm_up:
            cmd.append("--no-warm-up")
        try:
            self.proc = subprocess.Popen(
                cmd,
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=_child_env(),
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        self._sock: socket.socket | None = parent_sock
        self._writer: asyncio.StreamWriter | None = None
        self.pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.alive = False
        self._receiver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connects to the child and waits for it to report ready; sets :attr:`alive`."""
        sock, self._sock = self._sock, None
        assert sock is not None
        try:
            reader, self._writer = await asyncio.open_unix_connection(sock=sock)
            kind, *_ = await asyncio.wait_for(_read(reader), _READY_TIMEOUT_S)
        except (Exception, asyncio.CancelledError):
            sock.close()
            self.signal_kill()  # reaped by aclose(), never waited for on the loop
            raise
        if kind != "ready":
            self.signal_kill()
            raise RuntimeError(f"evalgate worker {self.index} sent {kind!r} before 'ready'")
        self.alive = True
        self._receiver = asyncio.get_running_loop().create_task(self._receive(reader))

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, cid, payload = await _read(reader)
                future = self.pending.pop(cid, None)
                if future is not None and not future.done():
                    future.set_result((kind, payload))
        except (asyncio.IncompleteReadError, ConnectionError, OSError, EOFError):
            pass  # the child exited (or was closed): fail whatever it still had
        finally:
            self.alive = False
            failure = RemoteFailure(
                f"ConnectionError: evalgate worker process {self.proc.pid} exited "
                f"(status {self.proc.poll()})",
                retryable=True,
                retry_after_s=None,
            )
            for future in self.pending.values():
                if not future.done():
                    future.set_result(("err", failure))
            self.pending.clear()

    def send(self, message: Any) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(_frame(message))

    async def aclose(self, timeout_s: float = 5.0) -> None:
        self.alive = False
        if self._writer is not None:
            self._writer.close()  # the child sees end of file and exits
        await self._exited_within(timeout_s)
        self.signal_kill()
        await self._exited_within(5.0)  # the loop keeps running while the child dies

    async def _exited_within(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def signal_kill(self) -> None:
        """Sends SIGKILL without waiting (safe on the event loop)."""
        self.alive = False
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.proc.poll() is None:
            self.proc.kill()

    def kill(self) -> None:
        """SIGKILL and wait for the exit: off the loop only (the engine's loop is gone)."""
        self.signal_kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


class ProcessPool:
    """N worker processes running attempts; used from the engine's event loop.

    Construction spawns the children (cheap: the expensive part, importing litellm and
    warming it up, happens in the children, in parallel); :meth:`start` waits for them.
    """

    def __init__(self, processes: int, *, warm_up: bool = True) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self._workers: list[_Worker] = []
        try:
            for index in range(processes):
                self._workers.append(_Worker(index, warm_up=warm_up))
        except BaseException:
            self.kill()
            raise
        self._ids = itertools.count()
        self._started: asyncio.Task[None] | None = None

    @property
    def size(self) -> int:
        return len(self._workers)

    async def start(self) -> None:
        """Waits until every child is ready (idempotent). Children that fail are dropped."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        results = await asyncio.gather(*(w.start() for w in self._workers), return_exceptions=True)
        for worker, outcome in zip(self._workers, results, strict=True):
            if isinstance(outcome, BaseException):
                print(
                    f"evalgate: worker process {worker.index} failed to start: "
                    f"{redact(repr(outcome))}; "
                    "its share of calls runs in the engine's process",
                    file=sys.stderr,
                )

    def _pick(self) -> _Worker | None:
        live = [w for w in self._workers if w.alive]
        return min(live, key=lambda w: len(w.pending)) if live else None

    async def attempt(self, spec: CallSpec, endpoint: Endpoint) -> CallResult:
        """Runs one attempt in the least busy child; same contract as ``calls.attempt``."""
        await self.start()
        worker = self._pick()
        if worker is None:  # every child died or never started: degrade, don't fail
            return await attempt(spec, endpoint)
        cid = next(self._ids)
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        worker.pending[cid] = future
        worker.send(("call", cid, spec, endpoint))
        try:
            kind, payload = await future
        except asyncio.CancelledError:
            # Timed out or abandoned. Like an in-process attempt under wait_for, return
            # only once the attempt has really stopped (its request is closed), so that a
            # retry never runs beside it: cancel it in the child and wait for the answer.
            if cid in worker.pending:
                stopped: asyncio.Future[tuple[str, Any]] = (
                    asyncio.get_running_loop().create_future()
                )
                worker.pending[cid] = stopped
                worker.send(("cancel", cid))
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(stopped, _CANCEL_TIMEOUT_S)
                worker.pending.pop(cid, None)
            raise
        if kind == "ok":
            return payload  # type: ignore[no-any-return]
        if kind == "err":
            raise RemoteAttemptError(payload)
        # "cancelled": the child stopped it on its own (it is shutting down).
        raise RemoteAttemptError(
            RemoteFailure("CancelledError: worker process shut down", True, None)
        )

    async def cpu_seconds(self) -> float:
        """User + system CPU seconds the live children have used so far."""
        await self.start()
        loop = asyncio.get_running_loop()
        futures = []
        for worker in self._workers:
            if worker.alive:
                cid = next(self._ids)
                future: asyncio.Future[tuple[str, Any]] = loop.create_future()
                worker.pending[cid] = future
                worker.send(("stats", cid))
                futures.append(future)
        replies = await asyncio.gather(*futures)
        return sum(float(payload) for kind, payload in replies if kind == "ok")

    async def aclose(self) -> None:
        if self._started is not None and not self._started.done():
            self._started.cancel()
        await asyncio.gather(*(w.aclose() for w in self._workers), return_exceptions=True)

    def kill(self) -> None:
        """Synchronous last resort (the engine's loop is gone)."""
        for worker in self._workers:
            worker.kill()


# --------------------------------------------------------------------------- the child


async def _serve(sock: socket.socket, warm_up: bool) -> None:
    from evalgate.engine.engine import _warm_up, describe
    from evalgate.engine.retry import is_retryable, retry_after_seconds
    from evalgate.redact import remember

    reader, writer = await asyncio.open_unix_connection(sock=sock)
    litellm_module()
    if warm_up:
        await _warm_up()
    # Everything imported and warmed up so far lives as long as the process: move it out
    # of the collector's way, so collections only scan what calls allocate; and collect
    # the youngest generation every 10,000 allocations instead of 700 (a streamed call
    # allocates tens of thousands of short-lived objects). ~1 ms of CPU per call.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    writer.write(_frame(("ready", os.getpid(), None)))
    tasks: dict[int, asyncio.Task[None]] = {}

    def reply(kind: str, cid: int, payload: Any) -> None:
        try:
            frame = _frame((kind, cid, payload))
        except Exception as exc:  # an unpicklable result: report it rather than hang
            failure = RemoteFailure(describe(exc), retryable=False, retry_after_s=None)
            frame = _frame(("err", cid, failure))
        writer.write(frame)

    async def run(cid: int, spec: CallSpec, endpoint: Endpoint) -> None:
        remember(endpoint.api_key)  # so describe() redacts it from this process's errors
        try:
            result = await attempt(spec, endpoint)
        except asyncio.CancelledError:
            reply("cancelled", cid, None)  # the engine waits for this before moving on
        except Exception as exc:
            reply(
                "err",
                cid,
                RemoteFailure(describe(exc), is_retryable(exc), retry_after_seconds(exc)),
            )
        else:
            reply("ok", cid, result)
        finally:
            tasks.pop(cid, None)

    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                kind, cid, *rest = await _read(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return  # the engine closed us, or its process is gone
            if kind == "call":
                tasks[cid] = loop.create_task(run(cid, *rest))
            elif kind == "cancel":
                task = tasks.get(cid)
                if task is not None:
                    task.cancel()
            elif kind == "stats":
                reply("ok", cid, time.process_time())
    finally:
        for task in list(tasks.values()):
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="evalgate engine worker process (internal)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--no-warm-up", action="store_true")
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group; the engine decides what happens to its
    # calls, and closing the socket is how it tells us to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(sock, warm_up=not args.no_warm_up))
    finally:
        loop.close()


if __name__ == "__main__":
    # Run the importable module's main, not this copy's: what the child pickles (failures)
    # must name ``evalgate.engine.procpool``, which the engine can unpickle.
    from evalgate.engine.procpool import main as _main

    _main()
