"""When the state backend fails, the application's call goes on without it.

A Redis that is down or timing out, or an SQLite file that is locked, full or damaged,
must not cost the application its answer: a cache lookup that fails is a miss, a cache
write or a ledger record that fails is skipped (and counted). :class:`BackendFailures`
is what the cache and the ledger report such failures to. It logs the first failure of
each kind (operation and exception type) at once, then at most one line per kind every
``log_every_s`` with how many it held back, and one line when the backend answers again.

After a failure it also rests the backend for ``retry_after_s``: cache lookups and writes
and ledger records skip it, so a backend that times out (an unreachable host) costs one
timeout per rest, not one per call; one operation after the rest tries it again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter

log = logging.getLogger("evalgate.runtime")

LOG_EVERY_S = 60.0
RETRY_AFTER_S = 1.0
_USERINFO = re.compile(r"(?<=://)[^/@]*@")


def shown_url(url: str) -> str:
    """A backend URL for a log line: a password in it is not shown."""
    return _USERINFO.sub("***@", url)


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class BackendFailures:
    """Counts and reports (rate-limited) a backend's failed operations; thread-safe.

    Attributes:
        counts: failed or skipped operations by kind ("cache lookup", "cache write",
            "ledger write"), since this object was made. ``counts["ledger write"]`` is the
            number of ledger records lost.
    """

    def __init__(
        self,
        url: str,
        *,
        log_every_s: float = LOG_EVERY_S,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.url = shown_url(url)
        self.log_every_s = log_every_s
        self.retry_after_s = retry_after_s
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._last_logged: dict[tuple[str, str], float] = {}
        self._held_back: Counter[tuple[str, str]] = Counter()
        self._resting_until = 0.0
        self._down = False

    def available(self) -> bool:
        """False while the backend rests after a failure (the caller skips it).

        When a rest ends, one caller gets True and probes the backend; the others keep
        skipping it for another rest, so an unreachable host stalls one call per rest
        (for its timeout), not every call that arrives while the probe waits.
        """
        if not self._down:
            return True
        now = time.monotonic()
        with self._lock:
            if now < self._resting_until:
                return False
            self._resting_until = now + self.retry_after_s
            return True

    def skipped(self, operation: str) -> None:
        """An operation not tried because the backend rests."""
        with self._lock:
            self.counts[operation] += 1

    def failed(self, operation: str, exc: BaseException, *, rest: bool = True) -> None:
        """An operation that raised; the caller goes on as if it had missed or been done.

        ``rest=False`` for a failure that is not the backend's (a bug): it is logged the
        same way, but the backend is not rested for it.
        """
        kind = (operation, type(exc).__name__)
        now = time.monotonic()
        with self._lock:
            self.counts[operation] += 1
            if rest:
                self._down = True
                self._resting_until = now + self.retry_after_s
            last = self._last_logged.get(kind)
            if last is not None and now - last < self.log_every_s:
                self._held_back[kind] += 1
                return
            self._last_logged[kind] = now
            held = self._held_back.pop(kind, 0)
        if last is None:
            log.warning(
                "evalgate: runtime backend %s failed (%s: %s); calls go on without it "
                "(cache lookups miss, cache writes and ledger records are skipped); "
                "this failure is logged at most once every %gs",
                self.url,
                operation,
                describe(exc),
                self.log_every_s,
            )
        else:
            log.warning(
                "evalgate: runtime backend %s still failing (%s: %s); %d more since the last",
                self.url,
                operation,
                describe(exc),
                held,
            )

    def succeeded(self) -> None:
        """An operation that worked: says once that a failing backend answers again."""
        if not self._down:
            return
        with self._lock:
            if not self._down:
                return
            self._down = False
            self._last_logged.clear()
            self._held_back.clear()
            lost = dict(self.counts)
        log.warning(
            "evalgate: runtime backend %s answers again (failed or skipped so far: %s)",
            self.url,
            ", ".join(f"{k} {v}" for k, v in sorted(lost.items())),
        )
