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

from evalgate.runtime.backends.base import SEMANTIC_ENTRY_MAGIC, Backend, SemanticTail
from evalgate.runtime.errors import PolicyError

READ_BATCH = 1000


_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# Removes the oldest entries of a scope's list beyond ARGV[3], then the run of expired
# entries that follows them (an entry of format 2 carries its expiry as a float64 at byte
# 5; one TTL per scope makes the expired entries the oldest), and moves the scope's
# generation; only while it is still ARGV[1] and the clear count ARGV[2]. One script: no
# reader or writer runs in between, so no reader can resume at a position that shifted.
_COMPACT = """
if tonumber(redis.call('GET', KEYS[2]) or '0') ~= tonumber(ARGV[1]) or
   tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[2]) then
  return 0
end
local n = redis.call('LLEN', KEYS[1])
local now = tonumber(ARGV[4])
local cut = math.max(0, n - tonumber(ARGV[3]))
local expired = true
while expired and cut < n do
  local chunk = redis.call('LRANGE', KEYS[1], cut, cut + 255)
  if #chunk == 0 then break end
  for _, entry in ipairs(chunk) do
    if #entry < 12 or string.sub(entry, 1, 4) ~= ARGV[5] or
       struct.unpack('<d', entry, 5) > now then
      expired = false
      break
    end
    cut = cut + 1
  end
end
if cut == 0 then return 0 end
redis.call('LTRIM', KEYS[1], cut, -1)
redis.call('INCR', KEYS[2])
return cut
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
        self._semantic_gen = f"{prefix}cache:semgen:"  # a scope's compactions
        # Clears, outside the cache prefix so that a clear cannot reset it: a reader
        # whose scope was cleared and refilled reads it again (see semantic_tail).
        self._semantic_clears = f"{prefix}semclears"

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
        self._r.incr(self._semantic_clears)

    def semantic_add(self, scope: str, entry: bytes, expires: float | None = None) -> None:
        # One list per scope, appended by RPUSH (atomic); the entry carries its expiry.
        self._r.rpush(self._semantic + scope, entry)

    def semantic_tail(self, scope: str, after: int, limit: int | None = None) -> SemanticTail:
        # Generation, entries and length in one round trip (MULTI: one snapshot). A list
        # shorter than ``after`` was cleared (and perhaps refilled): the reader starts
        # over (position 0 < after says so).
        key = self._semantic + scope
        pipe = self._r.pipeline(transaction=True)
        pipe.get(self._semantic_gen + scope)
        pipe.get(self._semantic_clears)
        pipe.lrange(key, after, -1 if limit is None else after + limit - 1)
        pipe.llen(key)
        compactions, clears, entries, length = pipe.execute()
        try:
            generation = int(clears or 0) << 32 | int(compactions or 0)
        except ValueError:
            # Another writer's value under evalgate's keys: a backend fault (a miss, logged
            # once), not an exception out of the application's call.
            raise self.errors[0](
                f"semantic cache generation of a scope is not an integer: {compactions!r}, "
                f"{clears!r}"
            ) from None
        if length < after:
            return SemanticTail(generation, 0, [])
        return SemanticTail(generation, after + len(entries), [bytes(e) for e in entries])

    def semantic_compact(self, scope: str, generation: int, now: float, keep: int) -> int:
        removed = self._r.eval(
            _COMPACT,
            3,
            self._semantic + scope,
            self._semantic_gen + scope,
            self._semantic_clears,
            generation & 0xFFFFFFFF,
            generation >> 32,
            keep,
            repr(now),
            SEMANTIC_ENTRY_MAGIC,
        )
        return int(removed)

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
        self._r.delete(self._ledger, self._semantic_clears)

    def close(self) -> None:
        self._r.close()
