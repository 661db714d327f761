"""Requests- and tokens-per-minute limits, held for a whole run across processes.

A provider's limit belongs to the model at an endpoint, not to a process: pytest-xdist
workers each run an engine, and per-process buckets would let N workers send N times the
limit. So a limit's state lives in a small file in the run directory, read and updated
under an exclusive ``flock``, and every process of the run (the controller or each xdist
worker) reserves from the same bucket. Without a directory (an engine used on its own)
the state stays in memory.

The bucket is smoothed: it holds at most one second's worth of the limit (at least one
request, or one token), and refills continuously. So calls are spread evenly over the
minute instead of a minute's worth going out at once, and any 60-second window holds at
most the limit plus one second's worth. A reservation takes its amount at once and
returns how long to wait before sending; reservations are served in the order they were
made (a request larger than the bucket waits for a full bucket and leaves a debt the
next ones wait out), so the long-run rate never exceeds the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from evalgate.cachekey import normalise_base

_STATE_BYTES = 256  # fixed width: a rewrite never leaves a longer old tail behind


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A model's limits at one endpoint (either may be None: no limit)."""

    rpm: int | None = None
    tpm: int | None = None

    def tighter(self, other: RateLimit) -> RateLimit:
        """The stricter of two limits, each dimension on its own."""
        return RateLimit(_min(self.rpm, other.rpm), _min(self.tpm, other.tpm))

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm)


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def limit_key(model: str, api_base: str | None) -> str:
    """Whose budget a call spends: its model at its endpoint (tiers sharing both share it)."""
    return f"{model} @ {normalise_base(api_base) or 'default endpoint'}"


def burst(per_minute: float) -> float:
    """The bucket's capacity: one second's worth of the limit, at least one unit."""
    return max(1.0, per_minute / 60.0)


def reserve(
    state: tuple[float, float] | None, now: float, amount: float, per_minute: float
) -> tuple[tuple[float, float], float]:
    """Takes ``amount`` from a bucket: ``(new state, seconds to wait before sending)``.

    ``state`` is ``(level, stamp)``; None is a full bucket. The level may go negative (a
    debt of reservations made ahead of time); a reservation may go once the level,
    refilled at ``per_minute / 60`` per second, reaches its amount (at most the capacity).
    """
    rate = per_minute / 60.0
    capacity = burst(per_minute)
    level, stamp = state if state is not None else (capacity, now)
    level = min(capacity, level + max(0.0, now - stamp) * rate)
    wait = max(0.0, (min(amount, capacity) - level) / rate)
    return (level - amount, now), wait


class Limiter:
    """The buckets of one limit key; shared through ``path`` when one is given."""

    def __init__(self, limit: RateLimit, path: Path | None = None) -> None:
        self.limit = limit
        self.path = path
        self._state: dict[str, tuple[float, float]] = {}  # in-memory state (no path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    async def acquire(self, estimated_tokens: int) -> None:
        """Waits until one request of about ``estimated_tokens`` tokens may be sent."""
        if self.path is None:
            wait = self._reserve(self._state, estimated_tokens)
        else:
            # A file lock and a file read: off the event loop.
            try:
                wait = await asyncio.to_thread(self._reserve_shared, estimated_tokens)
            except OSError:
                # The run directory became unwritable: keep limiting, in this process only.
                wait = self._reserve(self._state, estimated_tokens)
        if wait > 0:
            await asyncio.sleep(wait)

    def _reserve(self, states: dict[str, tuple[float, float]], tokens: int) -> float:
        now = time.time()  # wall time: the only clock every process of the run shares
        wait = 0.0
        for name, per_minute, amount in (
            ("requests", self.limit.rpm, 1.0),
            ("tokens", self.limit.tpm, float(tokens)),
        ):
            if per_minute:
                states[name], waited = reserve(states.get(name), now, amount, per_minute)
                wait = max(wait, waited)
        return wait

    def _reserve_shared(self, tokens: int) -> float:
        import fcntl  # POSIX; imported here so the module imports everywhere

        assert self.path is not None
        # A fresh descriptor per reservation: flock excludes other open descriptions, so
        # two threads of this process exclude each other too.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            states = _parse(os.pread(fd, _STATE_BYTES, 0))
            wait = self._reserve(states, tokens)
            payload = json.dumps({k: list(v) for k, v in states.items()}).encode()
            os.pwrite(fd, payload.ljust(_STATE_BYTES), 0)
        finally:
            os.close(fd)  # releases the lock
        return wait


def _parse(raw: bytes) -> dict[str, tuple[float, float]]:
    """The stored buckets; an unreadable file (a crash mid-write) starts them afresh."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        data = json.loads(raw.decode("utf-8") or "{}")
        return {str(k): (float(v[0]), float(v[1])) for k, v in data.items()}
    return {}


def limiters(
    limits: dict[str, RateLimit] | None, directory: Path | None = None
) -> dict[str, Limiter]:
    """One :class:`Limiter` per limit key; shared through files in ``directory`` if given."""
    out = {}
    for key, limit in (limits or {}).items():
        if not limit:
            continue
        path = None
        if directory is not None:
            digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
            path = directory / f"{digest}.bucket"
        out[key] = Limiter(limit, path)
    return out
