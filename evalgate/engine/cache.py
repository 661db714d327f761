"""Persistent response cache for configs with ``cache: true``.

Keyed by :meth:`CallSpec.cache_key <evalgate.engine.calls.CallSpec.cache_key>`, i.e.
:func:`evalgate.cachekey.request_key` over the model, the configured endpoint, the
messages, every generation parameter and the repeat index: two configs that send exactly
the same request to the same endpoint share entries; repeats stay independent samples.
Only successful calls are stored: an error is never cached and so never replayed.

SQLite in WAL mode: safe for several processes (xdist workers) on one host.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from evalgate.results import CallResult
from evalgate.sqlite_setup import run_setup

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    result TEXT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """What is kept of an original call."""

    result: CallResult
    created: float


class ResponseCache:
    """A thread-safe handle on the on-disk cache."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, check_same_thread=False, timeout=30.0, isolation_level=None
        )
        # xdist workers open one cache file together: see evalgate.sqlite_setup.
        run_setup(self._db, ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", SCHEMA))

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT result, created FROM responses WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        try:
            return CacheEntry(CallResult(**json.loads(row[0])), row[1])
        except (TypeError, ValueError):
            return None  # an entry from an incompatible version: treat as a miss

    def put(self, key: str, model: str, result: CallResult) -> None:
        if result.error is not None or result.cached:
            return  # never cache errors; never re-store a hit as if it were original
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (key, model, created, result) "
                "VALUES (?, ?, ?, ?)",
                (key, model, time.time(), json.dumps(asdict(result))),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
