"""The usage ledger: one record per policy call, by feature, user and tenant.

Records are JSON objects appended to the backend (SQLite table or Redis stream), so a
record written by one version of evalgate is readable by the next: unknown fields are
kept, missing ones read as None.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields

from evalgate.runtime.backends.base import Backend
from evalgate.runtime.degraded import BackendFailures

LEDGER_VERSION = 1


@dataclass(slots=True)
class UsageRecord:
    """One call through the policy.

    Attributes:
        ts: when the call started (Unix seconds).
        feature, user, tenant: who asked for what ("" when not given).
        model: the model that answered (or the last one tried, on error).
        fallback: index in the feature's route of the model that answered (0: the
            primary; 1: the first fallback ...).
        attempts: models tried, failures included.
        tokens_in, tokens_out: the provider's token counts (None when unreported).
        cost_usd: what the call cost (0 for a cache hit; None when the price is unknown).
        saved_usd: for a cache hit, what the original call cost.
        latency_ms: from the call to the last byte (a stream: to its end).
        ttft_ms: time to the first content token (streams and cache replays).
        cached: served from the cache.  stream: streamed to the caller.
        error: None, or the error's type and message (one line).
        trimmed_tokens: (before, after) token counts of a trimmed context, else None.
        policy_hash: suite hash of the feature's evidence (ties a record to its policy).
        route, route_score: a learned router's decision ("small"/"large") and its score;
            a cascade's ("first": its answer was accepted, "escalated": it was not).
        first_cost_usd: an escalated cascade's first call (included in ``cost_usd``).
        similarity: a semantic cache hit's similarity to the entry it served.
        batch_id: the provider batch that carried the request (``policy.batch``); its
            ``cost_usd`` is the batch price and ``latency_ms`` the batch's turnaround.
    """

    ts: float
    feature: str
    user: str = ""
    tenant: str = ""
    model: str = ""
    fallback: int = 0
    attempts: int = 1
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    saved_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cached: bool = False
    stream: bool = False
    error: str | None = None
    trimmed_tokens: tuple[int, int] | None = None
    policy_hash: str | None = None
    route: str | None = None
    route_score: float | None = None
    first_cost_usd: float | None = None
    similarity: float | None = None
    batch_id: str | None = None

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["v"] = LEDGER_VERSION
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> UsageRecord:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}
        if isinstance(kept.get("trimmed_tokens"), list):
            kept["trimmed_tokens"] = tuple(kept["trimmed_tokens"])
        return cls(**kept)


class Ledger:
    """Appends and reads usage records on a backend.

    With ``write_behind`` (what :class:`~evalgate.runtime.Policy` uses), records are
    written by a background thread, so a slow disk or network write never adds to a
    call's latency; :meth:`read`, :meth:`flush`, :meth:`close` and interpreter exit wait
    for the queued records. A process killed with SIGKILL loses the records still
    queued (written within milliseconds otherwise).

    A record the backend fails to take (``backend.errors``: a Redis that is down, a
    locked or damaged SQLite file) is dropped, counted in ``failures.counts["ledger
    write"]`` and logged (rate-limited): the application's call never waits or fails for
    its ledger record.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        write_behind: bool = False,
        failures: BackendFailures | None = None,
    ) -> None:
        self.backend = backend
        self.failures = failures or BackendFailures(backend.url)
        self._queue: queue.Queue[UsageRecord | Callable[[], None] | None] | None = None
        self._pid = 0
        if write_behind:
            self._start_writer()
            atexit.register(_flush_at_exit, weakref.ref(self))

    def _start_writer(self) -> None:
        self._queue = queue.Queue()
        self._pid = os.getpid()
        thread = threading.Thread(
            target=_drain,
            args=(self._queue, self.backend, self.failures),
            name="evalgate-ledger",
            daemon=True,
        )
        thread.start()

    def _pending(self) -> queue.Queue[UsageRecord | Callable[[], None] | None] | None:
        """The writer's queue (None: written inline). A process forked after the writer
        started has no writer thread (it stayed in the parent, which writes what was
        queued before the fork): the child starts its own, on a new queue."""
        if self._queue is not None and self._pid != os.getpid():
            self._start_writer()
        return self._queue

    def append(self, record: UsageRecord) -> None:
        pending = self._pending()
        if pending is not None:
            pending.put(record)
        else:
            self.backend.ledger_append(record.ts, record.to_bytes())

    def submit(self, job: Callable[[], None]) -> None:
        """Runs ``job`` on the writer thread, in order with the records (or now, without one)."""
        pending = self._pending()
        if pending is not None:
            pending.put(job)
        else:
            job()

    def flush(self) -> None:
        """Waits until every appended record is written."""
        pending = self._pending()
        if pending is not None:
            pending.join()

    def close(self) -> None:
        """Writes what is queued and stops the writer."""
        pending = self._pending()
        if pending is not None:
            pending.join()
            pending.put(None)
            self._queue = None

    def read(self, since: float | None = None) -> Iterator[UsageRecord]:
        """Records with ``ts >= since``, oldest first (unreadable ones are skipped)."""
        self.flush()
        for _, raw in self.backend.ledger_read(since):
            try:
                yield UsageRecord.from_bytes(raw)
            except (ValueError, TypeError):
                continue


def _drain(
    pending: queue.Queue[UsageRecord | Callable[[], None] | None],
    backend: Backend,
    failures: BackendFailures,
) -> None:
    while True:
        record = pending.get()
        try:
            if record is None:
                return
            if not isinstance(record, UsageRecord):
                record()  # a cache write: it reports its own failures
            elif not failures.available():
                failures.skipped("ledger write")
            else:
                backend.ledger_append(record.ts, record.to_bytes())
                failures.succeeded()
        except backend.errors as exc:  # the backend is down: say so, keep serving calls
            failures.failed("ledger write", exc)
        except Exception as exc:  # a bug must not stop the writer either; logged, limited
            failures.failed("ledger writer", exc, rest=False)
        finally:
            pending.task_done()


def _flush_at_exit(ref: weakref.ref[Ledger]) -> None:
    ledger = ref()
    if ledger is not None:
        # Closed, not just flushed: a record appended after this (a stream still open at
        # exit, ended by its finalizer) is then written at once instead of being queued
        # for a writer thread that exit is about to stop.
        ledger.close()
