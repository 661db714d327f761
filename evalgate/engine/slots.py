"""A counting semaphore whose waiters are served by priority, then in arrival order.

The engine queues every call of a run up front (pytest's item order), so a call that
joins later, an LLM judge grading an item that already has its answer, would otherwise
wait behind the whole run, and its item (with its finished, paid-for call) would stay
unrecorded until the end. Such calls ask for a slot with a higher priority.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

# Lower numbers are served first.
ITEM_PRIORITY = 0
GRADER_PRIORITY = -1


class PrioritySlots:
    """``n`` slots; :meth:`slot` waits for one. Must be used on one event loop."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"need at least one slot, got {n}")
        self._free = n
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, priority: int = ITEM_PRIORITY) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over as we were cancelled: pass it on
            raise

    def release(self) -> None:
        # Hand the slot straight to the first live waiter, so nobody overtakes it.
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1

    @asynccontextmanager
    async def slot(self, priority: int = ITEM_PRIORITY) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
