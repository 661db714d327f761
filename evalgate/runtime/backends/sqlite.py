"""SQLite backend: the embedded default (one host, many processes and threads).

WAL mode lets readers run beside the one writer; ``busy_timeout`` makes a writer wait
for another process's transaction instead of failing, so concurrent processes append
to the ledger without losing a record. Each write is one short transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evalgate.runtime.backends.base import Backend, SemanticTail
from evalgate.runtime.backends.sqlite_connections import ThreadConnections
from evalgate.runtime.errors import PolicyError
from evalgate.sqlite_setup import run_setup

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL)",
    "CREATE TABLE IF NOT EXISTS ledger (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "ts REAL NOT NULL, record BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts)",
    # Semantic cache: entries (answer, guard signature, unit vector as a float32 blob)
    # appended per scope; the id orders them and is each reader's resume position (never
    # reused: AUTOINCREMENT); ``expires`` lets a compaction remove the expired ones.
    "CREATE TABLE IF NOT EXISTS semantic (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "scope TEXT NOT NULL, entry BLOB NOT NULL, expires REAL)",
    "CREATE INDEX IF NOT EXISTS semantic_scope ON semantic (scope, id)",
    # Each scope's generation, moved by every compaction; the row of scope '*' counts
    # clears (see SQLiteBackend.semantic_tail).
    "CREATE TABLE IF NOT EXISTS semantic_gen (scope TEXT PRIMARY KEY, generation INTEGER NOT NULL)",
)
_CLEARS = "*"  # not a scope: scopes are hex digests
_GENERATION = (
    "SELECT coalesce((SELECT generation FROM semantic_gen WHERE scope = ?), 0), "
    "coalesce((SELECT generation FROM semantic_gen WHERE scope = ?), 0)"
)
_BUMP = (
    "INSERT INTO semantic_gen (scope, generation) VALUES (?, 1) "
    "ON CONFLICT (scope) DO UPDATE SET generation = generation + 1"
)
BUSY_TIMEOUT_S = 30.0
PURGE_EVERY = 1000  # writes between sweeps of expired cache entries


def sqlite_path(url: str) -> Path:
    """The file of an ``sqlite:///`` URL.

    SQLAlchemy's convention: ``sqlite:///rel/path`` is relative to the working directory,
    ``sqlite:////abs/path`` absolute.
    """
    path = url.partition("://")[2]
    path = path[1:] if path.startswith("/") else path
    if not path:
        raise PolicyError(f"backend URL {url!r}: no file path (expected sqlite:///path)")
    return Path(path)


class SQLiteBackend(Backend):
    """State in one SQLite file (WAL)."""

    errors = (sqlite3.Error,)

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        # One connection per thread: under WAL a reader (a cache lookup on the caller's
        # thread) never waits for a writer (the ledger's background thread).
        self._connections = ThreadConnections(self.path, _connect)
        self._writes = 0
        self._open_checked()

    def _open_checked(self) -> None:
        """Opens the first connection, or fails now, in one line naming the file.

        A file that is not SQLite, or a truncated one, fails here (SQLite reads the header
        and the schema to switch to WAL and create the tables) rather than as a
        ``sqlite3.DatabaseError`` in the middle of an application's call.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connections.use() as db:
                # The ledger's newest row and its index: where a truncated file is cut off.
                db.execute("SELECT max(id) FROM ledger").fetchone()
                db.execute("SELECT max(ts) FROM ledger").fetchone()
        except (sqlite3.Error, OSError) as exc:
            self.close()
            what = " ".join(str(exc).split()) or type(exc).__name__
            # Damaged (not SQLite, truncated): moving it aside is the fix. Locked, or a
            # directory, or no permission: it is not, and the file may be fine.
            damaged = type(exc) is sqlite3.DatabaseError
            hint = "; move it aside to start with an empty state" if damaged else ""
            raise PolicyError(
                f"{self.path}: cannot use this file as the runtime's SQLite state ({what}){hint}"
            ) from None

    @classmethod
    def from_url(cls, url: str) -> SQLiteBackend:
        return cls(sqlite_path(url))

    def cache_get(self, key: str) -> bytes | None:
        with self._connections.use() as db:
            row = db.execute("SELECT value, expires FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None or (row[1] is not None and row[1] <= time.time()):
            return None
        return bytes(row[0])

    def cache_set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        now = time.time()
        expires = None if ttl_s is None else now + ttl_s
        with self._connections.use() as db:
            db.execute(
                "INSERT OR REPLACE INTO cache (key, value, expires) VALUES (?, ?, ?)",
                (key, value, expires),
            )
            self._writes += 1
            if self._writes % PURGE_EVERY == 0:
                db.execute("DELETE FROM cache WHERE expires IS NOT NULL AND expires <= ?", (now,))

    def cache_add(self, key: str, value: bytes, ttl_s: float | None) -> bool:
        now = time.time()
        expires = None if ttl_s is None else now + ttl_s
        # One statement, so one transaction: an expired row is taken over, a live one kept.
        with self._connections.use() as db:
            cursor = db.execute(
                "INSERT INTO cache (key, value, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "expires = excluded.expires "
                "WHERE cache.expires IS NOT NULL AND cache.expires <= ?",
                (key, value, expires, now),
            )
            return cursor.rowcount == 1

    def cache_delete_if(self, key: str, value: bytes) -> None:
        with self._connections.use() as db:
            db.execute("DELETE FROM cache WHERE key = ? AND value = ?", (key, value))

    def cache_clear(self) -> None:
        with self._connections.use() as db, _transaction(db, "BEGIN IMMEDIATE"):
            db.execute("DELETE FROM cache")
            db.execute("DELETE FROM semantic")
            # Every reader of every scope reads again, even one whose scope refilled with
            # an entry identical to the last one it saw.
            db.execute("DELETE FROM semantic_gen WHERE scope != ?", (_CLEARS,))
            db.execute(_BUMP, (_CLEARS,))

    def semantic_add(self, scope: str, entry: bytes, expires: float | None = None) -> None:
        with self._connections.use() as db:
            db.execute(
                "INSERT INTO semantic (scope, entry, expires) VALUES (?, ?, ?)",
                (scope, entry, expires),
            )

    def semantic_tail(self, scope: str, after: int, limit: int | None = None) -> SemanticTail:
        # One read transaction: the generation and the entries from one snapshot (WAL).
        with self._connections.use() as db, _transaction(db, "BEGIN"):
            generation = _generation(db, scope)
            rows = db.execute(
                "SELECT id, entry FROM semantic WHERE scope = ? AND id > ? ORDER BY id LIMIT ?",
                (scope, after, -1 if limit is None else limit),
            ).fetchall()
        if not rows:
            return SemanticTail(generation, after, [])
        return SemanticTail(generation, int(rows[-1][0]), [bytes(entry) for _, entry in rows])

    def semantic_compact(self, scope: str, generation: int, now: float, keep: int) -> int:
        # BEGIN IMMEDIATE takes the write lock first: of two writers at the bound, the
        # second waits, then finds the generation moved and removes nothing.
        with self._connections.use() as db, _transaction(db, "BEGIN IMMEDIATE"):
            if _generation(db, scope) != generation:
                return 0
            removed = db.execute(
                "DELETE FROM semantic WHERE scope = ? AND expires <= ?", (scope, now)
            ).rowcount
            (count,) = db.execute(
                "SELECT count(*) FROM semantic WHERE scope = ?", (scope,)
            ).fetchone()
            if count > keep:
                removed += db.execute(
                    "DELETE FROM semantic WHERE id IN "
                    "(SELECT id FROM semantic WHERE scope = ? ORDER BY id LIMIT ?)",
                    (scope, count - keep),
                ).rowcount
            if removed:
                db.execute(_BUMP, (scope,))
            return int(removed)

    def ledger_append(self, ts: float, record: bytes) -> None:
        with self._connections.use() as db:
            db.execute("INSERT INTO ledger (ts, record) VALUES (?, ?)", (ts, record))

    def ledger_read(self, since: float | None = None) -> Iterator[tuple[float, bytes]]:
        with self._connections.use() as db:
            rows = db.execute(
                "SELECT ts, record FROM ledger WHERE ts >= ? ORDER BY ts, id",
                (since if since is not None else float("-inf"),),
            ).fetchall()
        for ts, record in rows:
            yield float(ts), bytes(record)

    def close(self) -> None:
        self._connections.close()


def _generation(db: sqlite3.Connection, scope: str) -> int:
    """The scope's generation: its compactions and the store's clears, in one number."""
    compactions, clears = db.execute(_GENERATION, (scope, _CLEARS)).fetchone()
    return int(clears) << 32 | int(compactions)


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str) -> Iterator[None]:
    db.execute(begin)
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _add_expires_column(db: sqlite3.Connection) -> None:
    """Files written before compaction existed have no ``semantic.expires``: added (NULL
    for their entries, which a compaction then removes by age only)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(semantic)")}
    if "expires" in columns:
        return
    try:
        run_setup(db, ("ALTER TABLE semantic ADD COLUMN expires REAL",))
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):  # another process added it first
            raise


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    # Several processes may open one new file at once: see evalgate.sqlite_setup.
    # WAL + NORMAL: durable across app crashes.
    run_setup(db, ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", *SCHEMA))
    _add_expires_column(db)
    return db
