"""Redis backend: shared state for many application instances.

Every operation is one Redis command, atomic on the server: the cache is plain keys with
a server-side TTL (``SET ... PX``), the ledger a Redis stream (``XADD``), whose entry ids
are server timestamps, so a time window is one ``XRANGE``. Needs the ``redis`` package
(``pip install 'evalgate[runtime-redis]'``), imported only when a redis:// URL is used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from evalgate.runtime.backends.base import Backend
from evalgate.runtime.errors import PolicyError

READ_BATCH = 1000


_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBackend(Backend):
    """State in one Redis database, under a key prefix."""

    def __init__(self, client: Any, *, url: str, prefix: str = "evalgate:") -> None:
        import redis

        # RedisError covers a refused or dropped connection, a timeout and a server that
        # refuses writes (OOM, a read-only replica); OSError what the socket raises raw.
        self.errors = (redis.RedisError, OSError)
        self._r = client
        self.url = url
        self.prefix = prefix
        self._ledger = f"{prefix}ledger"
        self._cache = f"{prefix}cache:"
        self._semantic = f"{prefix}cache:sem:"  # under the cache prefix: cleared with it

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "evalgate:") -> RedisBackend:
        try:
            import redis
        except ImportError:
            raise PolicyError(
                f"backend URL {url!r} needs the redis package: "
                "pip install 'evalgate[runtime-redis]'"
            ) from None
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return cls(client, url=url, prefix=prefix)

    def cache_get(self, key: str) -> bytes | None:
        value = self._r.get(self._cache + key)
        return None if value is None else bytes(value)

    def cache_set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if ttl_s is None:
            self._r.set(self._cache + key, value)
        else:
            self._r.set(self._cache + key, value, px=max(1, math.ceil(ttl_s * 1000)))

    def cache_add(self, key: str, value: bytes, ttl_s: float | None) -> bool:
        px = None if ttl_s is None else max(1, math.ceil(ttl_s * 1000))
        return bool(self._r.set(self._cache + key, value, px=px, nx=True))

    def cache_delete_if(self, key: str, value: bytes) -> None:
        # Compare and delete in one server-side step (no other writer in between).
        self._r.eval(_DELETE_IF, 1, self._cache + key, value)

    def cache_clear(self) -> None:
        batch: list[bytes] = []
        for key in self._r.scan_iter(match=self._cache + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self._r.delete(*batch)
                batch.clear()
        if batch:
            self._r.delete(*batch)

    def semantic_add(self, scope: str, entry: bytes) -> None:
        # One list per scope, appended by RPUSH (atomic); the list length is its version.
        self._r.rpush(self._semantic + scope, entry)

    def semantic_read(self, scope: str, after: int) -> tuple[int, list[bytes]]:
        # LRANGE and LLEN in one round trip: a list shorter than ``after`` was cleared (and
        # perhaps refilled), so the reader starts over (position 0 < after says so).
        pipe = self._r.pipeline(transaction=True)
        pipe.lrange(self._semantic + scope, after, -1)
        pipe.llen(self._semantic + scope)
        entries, length = pipe.execute()
        if length < after:
            return 0, []
        return after + len(entries), [bytes(e) for e in entries]

    def ledger_append(self, ts: float, record: bytes) -> None:
        # The server assigns the id (its own clock, strictly increasing); the record keeps
        # the caller's timestamp, which is what --since filters on.
        self._r.xadd(self._ledger, {b"ts": repr(ts).encode(), b"r": record})

    def ledger_read(self, since: float | None = None) -> Iterator[tuple[float, bytes]]:
        # Ids are server milliseconds; start a minute early for clock skew between the
        # application host and Redis, then filter on the record's own timestamp.
        start = "-" if since is None else f"{max(0, int((since - 60) * 1000))}-0"
        while True:
            entries = self._r.xrange(self._ledger, min=start, max="+", count=READ_BATCH)
            for _id, fields in entries:
                ts = float(fields[b"ts"])
                if since is None or ts >= since:
                    yield ts, bytes(fields[b"r"])
            if len(entries) < READ_BATCH:
                return
            start = "(" + entries[-1][0].decode()

    def delete_all(self) -> None:
        """Removes this prefix's cache and ledger (for tests and resets)."""
        self.cache_clear()
        self._r.delete(self._ledger)

    def close(self) -> None:
        self._r.close()
