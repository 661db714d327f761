"""Per-tier requests- and tokens-per-minute limits (async token buckets)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """A bucket of ``capacity`` units refilled at ``rate_per_s``; acquire waits for room.

    Waiters are served in arrival order (a lock around the wait), so a large request is
    not starved by a stream of small ones.
    """

    def __init__(self, per_minute: float) -> None:
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        # A request larger than a minute's budget waits for a full refill, not forever.
        amount = min(amount, self.capacity)
        async with self._lock:
            while True:
                now = time.monotonic()
                refill = (now - self._stamp) * self.rate_per_s
                self._level = min(self.capacity, self._level + refill)
                self._stamp = now
                if self._level >= amount:
                    self._level -= amount
                    return
                await asyncio.sleep((amount - self._level) / self.rate_per_s)


class TierLimits:
    """The rpm and tpm buckets of one tier (either may be absent)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None

    async def acquire(self, estimated_tokens: int) -> None:
        if self.requests is not None:
            await self.requests.acquire(1)
        if self.tokens is not None:
            await self.tokens.acquire(estimated_tokens)
