"""State backends of the runtime policy, chosen by URL.

``sqlite:///path/to/state.sqlite3`` (the embedded default: one host, many processes) and
``redis://host:port/db`` (many application instances). A backend offers a few atomic
operations that the cache, the ledger and (later) the per-user limits are built from; the
same tests run against both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalgate.runtime.backends.base import Backend
from evalgate.runtime.errors import PolicyError

if TYPE_CHECKING:
    from evalgate.runtime.limits import LimitStore

__all__ = ["Backend", "open_backend", "open_limit_store"]


def open_backend(url: str, *, prefix: str = "evalgate:") -> Backend:
    """Opens the backend at ``url``.

    Args:
        url: ``sqlite:///relative/or//absolute/path`` or ``redis://[:password@]host:port/db``
            (``rediss://`` for TLS).
        prefix: Redis key prefix (lets several policies or tests share one database).

    Raises:
        PolicyError: an unknown scheme, or Redis without the ``redis`` package.
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from evalgate.runtime.backends.sqlite import SQLiteBackend

        return SQLiteBackend.from_url(url)
    if scheme in ("redis", "rediss", "unix"):
        from evalgate.runtime.backends.redis import RedisBackend

        return RedisBackend.from_url(url, prefix=prefix)
    raise PolicyError(
        f"backend URL {url!r}: unknown scheme {scheme!r}; expected sqlite:///path or redis://host:port/db"
    )


def open_limit_store(backend: Backend) -> LimitStore:
    """The per-user limits' store on the same state as ``backend`` (same file or server).

    Raises:
        PolicyError: a backend type that has no limit store.
    """
    from evalgate.runtime.backends.redis import RedisBackend
    from evalgate.runtime.backends.sqlite import SQLiteBackend

    if isinstance(backend, SQLiteBackend):
        from evalgate.runtime.backends.sqlite_limits import SQLiteLimitStore

        return SQLiteLimitStore(backend.path)
    if isinstance(backend, RedisBackend):
        from evalgate.runtime.backends.redis_limits import RedisLimitStore

        return RedisLimitStore.from_url(backend.url, prefix=backend.prefix)
    raise PolicyError(f"backend {backend.url!r}: per-user limits need an SQLite or Redis backend")
