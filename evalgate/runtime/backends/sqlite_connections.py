"""One SQLite connection per thread, closed safely from any thread.

Closing a connection while another thread is inside one of its statements crashes the
interpreter (a segfault, seen when a policy closed its backend while its ledger writer
thread was appending). So every statement runs under its connection's own lock (never
contended in normal use: one thread per connection) and ``close`` takes each lock before
closing; a thread that then uses its closed connection gets ``sqlite3.ProgrammingError``
(an ``sqlite3.Error``, which the runtime treats as the backend being unavailable).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class ThreadConnections:
    """Per-thread connections to one SQLite file, opened by ``connect`` on first use."""

    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection]) -> None:
        self.path = path
        self._connect = connect
        self._local = threading.local()
        self._all: list[tuple[sqlite3.Connection, threading.Lock]] = []
        self._all_lock = threading.Lock()
        self._pid = os.getpid()

    @contextmanager
    def use(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, held for the statements of the ``with`` block."""
        if os.getpid() != self._pid:  # a forked child must not share the parent's handles
            self._pid = os.getpid()
            self._local = threading.local()
            self._all = []
        entry: tuple[sqlite3.Connection, threading.Lock] | None = getattr(
            self._local, "entry", None
        )
        if entry is None:
            entry = (self._connect(self.path), threading.Lock())
            self._local.entry = entry
            with self._all_lock:
                self._all.append(entry)
        db, lock = entry
        with lock:
            yield db

    def close(self) -> None:
        with self._all_lock:
            entries, self._all = self._all, []
            self._local = threading.local()
        for db, lock in entries:
            with lock:  # waits for a statement in flight on another thread
                db.close()
