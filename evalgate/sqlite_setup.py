"""Opening a shared SQLite file from several processes at once, without "database is locked".

Switching a new database to WAL takes an exclusive lock that SQLite's busy timeout does not
wait for: two processes (pytest-xdist workers, an application's workers) opening the same
new file together make one fail at once with "database is locked". The set-up statements
are therefore retried, with backoff, for as long as the busy timeout would have waited.
Standard library only: the runtime imports it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable


def run_setup(db: sqlite3.Connection, statements: Iterable[str], timeout_s: float = 30.0) -> None:
    """Executes each statement, retrying while the database is locked (up to timeout_s)."""
    deadline = time.monotonic() + timeout_s
    for statement in statements:
        delay = 0.01
        while True:
            try:
                db.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
