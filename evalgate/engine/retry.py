"""Which failures are worth retrying, and how long to wait before the next attempt."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

# HTTP statuses that mean "try again later": timeout, conflict, too many requests, and
# every server-side error. 4xx client errors (bad request, auth, not found) never heal.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped, honouring Retry-After.

    Attributes:
        max_attempts: attempts in all, the first included.
        base_s: the first backoff's upper bound; doubles per attempt.
        max_backoff_s: cap on one wait (also caps a server's Retry-After).
    """

    max_attempts: int = 4
    base_s: float = 0.5
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after_s is not None:
            # The server said when; add a little jitter so waiting clients don't stampede.
            return min(self.max_backoff_s, retry_after_s) + rng.uniform(0, 0.1)
        return rng.uniform(0, min(self.max_backoff_s, self.base_s * 2 ** (attempt - 1)))


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def is_retryable(exc: BaseException) -> bool:
    """429/5xx/timeouts/connection errors and broken streams are retried; the rest are not."""
    status = status_of(exc)
    if status is not None:
        return status in RETRYABLE_STATUS or status >= 500
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | ConnectionError | OSError):
        return True
    name = type(exc).__name__
    # litellm raises Timeout / APIConnectionError / MidStreamFallbackError without a status
    # when a connection drops or a stream is cut; match by name to avoid importing litellm.
    return any(word in name for word in ("Timeout", "Connection", "MidStream", "Stream"))


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's Retry-After (seconds or HTTP date), if the error carries one."""
    headers: Any = None
    response = getattr(exc, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
    if not headers:
        headers = getattr(exc, "litellm_response_headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
