"""Limits on SQLite: check-and-reserve and settle, each one ``BEGIN IMMEDIATE`` transaction.

``BEGIN IMMEDIATE`` takes the database's write lock before the first read, so between
processes on one host the check (settled usage plus live reservations) and the
reservation are serialised: no two processes can both see room for the last call. The
lock is held for a few statements (well under a millisecond); others wait for it
(``busy_timeout``) rather than fail. The tables live in the backend's file beside the
cache and the ledger, on connections of their own.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from evalgate.runtime.backends.sqlite_connections import ThreadConnections
from evalgate.runtime.limits import Need, Refusal
from evalgate.sqlite_setup import run_setup

SCHEMA = (
    # Settled usage per counter (scope|subject|metric|window); dropped after `expires`.
    "CREATE TABLE IF NOT EXISTS limit_used "
    "(key TEXT PRIMARY KEY, amount REAL NOT NULL, expires REAL NOT NULL)",
    # Live reservations: one row per (reservation, counter), void after `expires`.
    "CREATE TABLE IF NOT EXISTS limit_held (rid TEXT NOT NULL, key TEXT NOT NULL, "
    "amount REAL NOT NULL, expires REAL NOT NULL, PRIMARY KEY (rid, key))",
    "CREATE INDEX IF NOT EXISTS limit_held_key ON limit_held (key)",
    "CREATE INDEX IF NOT EXISTS limit_held_expires ON limit_held (expires)",
)
BUSY_TIMEOUT_S = 30.0
PURGE_EVERY = 500  # settles between sweeps of counters whose window is long gone
# Float sums of costs drift in the last bits; never refuse a call for that.
SLACK = 1e-9


class SQLiteLimitStore:
    """Limit counters in an SQLite file (WAL), shared by every process on the host."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._connections = ThreadConnections(self.path, _connect)
        self._settles = 0
        with self._connections.use():
            pass  # open now: a bad path fails here, not in an application's call

    def reserve(self, rid: str, needs: list[Need], now: float, expires: float) -> Refusal | None:
        with self._connections.use() as db:
            return self._reserve(db, rid, needs, now, expires)

    def _reserve(
        self, db: sqlite3.Connection, rid: str, needs: list[Need], now: float, expires: float
    ) -> Refusal | None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM limit_held WHERE expires <= ?", (now,))
            for index, need in enumerate(needs):
                row = db.execute(
                    "SELECT (SELECT amount FROM limit_used WHERE key = ?1), "
                    "(SELECT SUM(amount) FROM limit_held WHERE key = ?1)",
                    (need.key,),
                ).fetchone()
                used = (row[0] or 0.0) + (row[1] or 0.0)
                if used + need.amount > need.limit + SLACK:
                    db.execute("ROLLBACK")  # nothing of this call stays reserved
                    return Refusal(index, used)
            db.executemany(
                "INSERT INTO limit_held (rid, key, amount, expires) VALUES (?, ?, ?, ?)",
                [(rid, need.key, need.amount, expires) for need in needs],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return None

    def settle(self, rid: str, actual: list[Need], now: float) -> None:
        with self._connections.use() as db:
            self._settle(db, rid, actual, now)

    def _settle(self, db: sqlite3.Connection, rid: str, actual: list[Need], now: float) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM limit_held WHERE rid = ?", (rid,))
            db.executemany(
                "INSERT INTO limit_used (key, amount, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET amount = amount + excluded.amount",
                [(n.key, n.amount, now + n.expires_in_s) for n in actual],
            )
            self._settles += 1
            if self._settles % PURGE_EVERY == 0:
                db.execute("DELETE FROM limit_used WHERE expires <= ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def usage(self, key: str, now: float) -> tuple[float, float]:
        """(settled, live reserved) of one counter: for tests and inspection."""
        with self._connections.use() as db:
            row = db.execute(
                "SELECT (SELECT amount FROM limit_used WHERE key = ?1), "
                "(SELECT SUM(amount) FROM limit_held WHERE key = ?1 AND expires > ?2)",
                (key, now),
            ).fetchone()
        return float(row[0] or 0.0), float(row[1] or 0.0)

    def close(self) -> None:
        self._connections.close()


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    # Several processes may open one new file at once: see evalgate.sqlite_setup.
    run_setup(db, ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", *SCHEMA))
    return db
