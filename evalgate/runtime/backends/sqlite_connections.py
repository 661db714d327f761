"""One SQLite connection per thread, closed safely from any thread.

Closing a connection while another thread is inside one of its statements crashes the
interpreter (a segfault, seen when a policy closed its backend while its ledger writer
thread was appending). So every statement runs under its connection's own lock (never
contended in normal use: one thread per connection) and ``close`` takes each lock before
closing; a thread that then uses its closed connection gets ``sqlite3.ProgrammingError``
(an ``sqlite3.Error``, which the runtime treats as the backend being unavailable).

A fork waits for the statements in flight (it takes every connection's lock first):
SQLite keeps a file's lock state per process, so a child forked inside another thread's
transaction inherits a lock that no thread of the child holds or releases, and every write
it makes to the file fails with "database is locked".
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
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
        self._held: list[threading.Lock] = []
        _instances.add(self)

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

    def _hold(self) -> None:
        """Before a fork: waits for every statement in flight and lets none start."""
        self._all_lock.acquire()
        self._held = [lock for _, lock in self._all]
        for lock in self._held:
            lock.acquire()

    def _release(self) -> None:
        """After a fork (parent and child): what :meth:`_hold` took. The child then opens
        its own connections (see :meth:`use`)."""
        for lock in reversed(self._held):
            lock.release()
        self._held = []
        self._all_lock.release()


_instances: weakref.WeakSet[ThreadConnections] = weakref.WeakSet()


def _before_fork() -> None:
    for connections in list(_instances):
        connections._hold()


def _after_fork() -> None:
    for connections in list(_instances):
        if connections._all_lock.locked():
            connections._release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
