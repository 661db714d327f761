"""What every backend offers: a few atomic operations, not business logic.

The cache, the ledger and the per-user limits are written once against this interface;
each backend makes every method atomic on its own terms (an SQLite transaction across
processes, a single Redis command or server-side script across instances). Limits will
add their check-and-reserve / settle operations here, as one atomic method each.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import NamedTuple

SEMANTIC_ENTRY_MAGIC = b"\xffSC2"
"""The first bytes of a semantic-cache entry of format 2
(:func:`evalgate.runtime.semantic_cache.encode_entry`): its expiry follows as a float64,
which a backend's compaction reads without decoding the rest."""


class SemanticTail(NamedTuple):
    """What one version check of a semantic-cache scope read (see
    :meth:`Backend.semantic_tail`)."""

    generation: int
    """Changes whenever entries were removed from the scope (a compaction, a clear): a
    reader holding another generation drops what it holds and reads the scope again."""
    position: int
    """Where the next read resumes (below the ``after`` asked for: the scope was cleared)."""
    entries: list[bytes]
    """The entries after ``after``, oldest first."""


class Backend(abc.ABC):
    """Shared state of a runtime policy: cache entries and ledger records."""

    url: str

    errors: tuple[type[BaseException], ...] = ()
    """The driver's exceptions meaning the state cannot be read or written right now (a
    server down or timing out, a locked, full or damaged file). The call path treats them
    as a cache miss or a skipped write, so the application still gets its answer."""

    # -- cache ---------------------------------------------------------------------------

    @abc.abstractmethod
    def cache_get(self, key: str) -> bytes | None:
        """The live (unexpired) value stored under ``key``, or None."""

    @abc.abstractmethod
    def cache_set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        """Stores ``value`` under ``key`` for ``ttl_s`` seconds (None: no expiry)."""

    def cache_add(self, key: str, value: bytes, ttl_s: float | None) -> bool:
        """Stores ``value`` under ``key`` only if no live value is there (atomically, across
        processes); True when stored. A claim: of several writers, exactly one wins."""
        raise NotImplementedError(f"{type(self).__name__} has no atomic add")

    def cache_delete_if(self, key: str, value: bytes) -> None:
        """Removes ``key`` only while it still holds ``value`` (releases one's own claim,
        never a claim another writer took after it expired)."""
        raise NotImplementedError(f"{type(self).__name__} has no atomic delete")

    @abc.abstractmethod
    def cache_clear(self) -> None:
        """Removes every cache entry (not the ledger)."""

    # -- semantic cache (append-only entries per scope) ---------------------------------

    def semantic_add(self, scope: str, entry: bytes, expires: float | None = None) -> None:
        """Appends one semantic-cache entry to ``scope`` (a tenant's exact key part);
        ``expires``: when it stops being served (a compaction then removes it)."""
        raise NotImplementedError(f"{type(self).__name__} has no semantic cache")

    def semantic_tail(self, scope: str, after: int, limit: int | None = None) -> SemanticTail:
        """The scope's generation and (at most ``limit`` of) the entries appended after
        position ``after`` (0: all), read together: a reader that has seen everything
        pays one cheap round trip to learn that nothing changed (the version check)."""
        raise NotImplementedError(f"{type(self).__name__} has no semantic cache")

    def semantic_read(self, scope: str, after: int) -> tuple[int, list[bytes]]:
        """The entries of ``scope`` appended after position ``after`` (0: all), and the
        position to pass next time. A position below ``after`` means the scope was
        cleared: the reader drops what it holds and reads again from that position."""
        tail = self.semantic_tail(scope, after)
        return tail.position, tail.entries

    def semantic_compact(self, scope: str, generation: int, now: float, keep: int) -> int:
        """Removes the scope's entries expired by ``now``, then its oldest until at most
        ``keep`` remain, in one atomic step, and moves the scope to a new generation;
        only while the scope is still at ``generation`` (of two writers at the bound,
        one compacts, the other finds the generation moved and leaves it). Returns how
        many entries were removed (0: none, or another writer compacted first)."""
        raise NotImplementedError(f"{type(self).__name__} has no semantic cache")

    # -- ledger --------------------------------------------------------------------------

    @abc.abstractmethod
    def ledger_append(self, ts: float, record: bytes) -> None:
        """Appends one record (atomically: a concurrent writer never loses or splits one)."""

    @abc.abstractmethod
    def ledger_read(self, since: float | None = None) -> Iterator[tuple[float, bytes]]:
        """(timestamp, record) pairs with ``ts >= since``, oldest first."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases connections (the stored state stays)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
