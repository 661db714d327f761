"""Limits on Redis: check-and-reserve and settle, each one server-side Lua script.

Redis runs a script to the end before any other command, so every application instance
sees the check (settled usage plus live reservations) and the reservation as one step.
Per counter (``scope|subject|metric|window``) there are two keys: a hash holding the
settled amount (``used``), the total reserved (``held``) and each reservation's amount
(``r:<id>``), and a sorted set of reservation ids scored by their expiry, so expired ones
are swept (and their amounts released) by the next call on that counter.

Every key a script touches is passed in ``KEYS``; on Redis Cluster, put the prefix in a
hash tag (``prefix="{evalgate}:"``) so that they share a slot.
"""

from __future__ import annotations

from typing import Any

from evalgate.runtime.limits import Need, Refusal

# Both scripts take, per counter i, KEYS[2i-1] (hash) and KEYS[2i] (zset of reservations).
_SWEEP = """
local function sweep(h, z, now)
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #dead == 0 then return end
  local freed = 0
  for _, id in ipairs(dead) do
    freed = freed + tonumber(redis.call('HGET', h, 'r:' .. id) or '0')
    redis.call('HDEL', h, 'r:' .. id)
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  redis.call('HINCRBYFLOAT', h, 'held', -freed)
end
"""

# ARGV: now, rid, expires, slack, then per counter: amount, limit, keep_ms.
RESERVE = (
    _SWEEP
    + """
local now, rid, expires, slack = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = #KEYS / 2
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  sweep(h, z, now)
  local used = tonumber(redis.call('HGET', h, 'used') or '0')
    + tonumber(redis.call('HGET', h, 'held') or '0')
  local amount, limit = tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i])
  if used + amount > limit + slack then
    return {i, tostring(used)}
  end
end
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local amount, keep = ARGV[2 + 3 * i], ARGV[4 + 3 * i]
  redis.call('HSET', h, 'r:' .. rid, amount)
  redis.call('HINCRBYFLOAT', h, 'held', amount)
  redis.call('ZADD', z, expires, rid)
  redis.call('PEXPIRE', h, keep)
  redis.call('PEXPIRE', z, keep)
end
return 0
"""
)

# ARGV: rid, then per counter: actual amount, keep_ms.
SETTLE = """
local rid = ARGV[1]
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local held = redis.call('HGET', h, 'r:' .. rid)
  if held then  -- else it expired (and was released) before the call ended
    redis.call('HDEL', h, 'r:' .. rid)
    redis.call('HINCRBYFLOAT', h, 'held', -tonumber(held))
    redis.call('ZREM', z, rid)
  end
  redis.call('HINCRBYFLOAT', h, 'used', ARGV[2 * i])
  redis.call('PEXPIRE', h, ARGV[2 * i + 1])
end
return 0
"""

SLACK = 1e-9


class RedisLimitStore:
    """Limit counters in one Redis database, under the backend's key prefix."""

    def __init__(self, client: Any, *, url: str, prefix: str = "evalgate:") -> None:
        self._r = client
        self.url = url
        self.prefix = prefix
        self._reserve = client.register_script(RESERVE)
        self._settle = client.register_script(SETTLE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "evalgate:") -> RedisLimitStore:
        import redis

        # Short timeouts: a call waits on this before its model call, and a down server
        # must turn into a clear refusal (or a fail-open admission) quickly.
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return cls(client, url=url, prefix=prefix)

    def _keys(self, needs: list[Need]) -> list[str]:
        keys = []
        for need in needs:
            base = f"{self.prefix}lim:{need.key}"
            keys += [base, base + ":z"]
        return keys

    def reserve(self, rid: str, needs: list[Need], now: float, expires: float) -> Refusal | None:
        args: list[Any] = [repr(now), rid, repr(expires), repr(SLACK)]
        for need in needs:
            args += [repr(need.amount), repr(need.limit), max(1, int(need.expires_in_s * 1000))]
        result = self._reserve(keys=self._keys(needs), args=args)
        if result == 0:
            return None
        index, used = result
        return Refusal(int(index) - 1, float(used))

    def settle(self, rid: str, actual: list[Need], now: float) -> None:
        args: list[Any] = [rid]
        for need in actual:
            args += [repr(need.amount), max(1, int(need.expires_in_s * 1000))]
        self._settle(keys=self._keys(actual), args=args)

    def usage(self, key: str, now: float) -> tuple[float, float]:
        """(settled, live reserved) of one counter: for tests and inspection."""
        base = f"{self.prefix}lim:{key}"
        used = float(self._r.hget(base, "used") or 0.0)
        held = 0.0
        for rid in self._r.zrangebyscore(base + ":z", f"({now!r}", "+inf"):
            held += float(self._r.hget(base, b"r:" + rid) or 0.0)
        return used, held

    def delete_all(self) -> None:
        """Removes this prefix's limit counters (for tests and resets)."""
        batch = list(self._r.scan_iter(match=f"{self.prefix}lim:*", count=1000))
        for start in range(0, len(batch), 1000):
            self._r.delete(*batch[start : start + 1000])

    def close(self) -> None:
        self._r.close()
