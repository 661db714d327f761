from __future__ import annotations

import asyncio

import pytest

from evalgate.engine.slots import PrioritySlots


async def _hold(slots: PrioritySlots, name: str, priority: int, log: list[str]) -> None:
    async with slots.slot(priority):
        log.append(name)
        await asyncio.sleep(0.01)


def test_waiters_are_served_by_priority_then_arrival() -> None:
    async def main() -> list[str]:
        slots, log = PrioritySlots(1), []
        await slots.acquire()  # taken: everyone below has to queue
        tasks = [asyncio.create_task(_hold(slots, f"item{i}", 0, log)) for i in range(3)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(_hold(slots, "grader", -1, log)))
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)
        return log

    assert asyncio.run(main()) == ["grader", "item0", "item1", "item2"]


def test_never_more_holders_than_slots() -> None:
    async def main() -> int:
        slots, busy, peak = PrioritySlots(3), 0, 0

        async def work(i: int) -> None:
            nonlocal busy, peak
            async with slots.slot(i % 2):
                busy += 1
                peak = max(peak, busy)
                await asyncio.sleep(0.001 * (i % 4))
                busy -= 1

        await asyncio.gather(*(work(i) for i in range(40)))
        return peak

    assert asyncio.run(main()) == 3


def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    async def main() -> list[str]:
        slots, log = PrioritySlots(1), []
        await slots.acquire()
        cancelled = asyncio.create_task(_hold(slots, "cancelled", 0, log))
        later = asyncio.create_task(_hold(slots, "later", 0, log))
        await asyncio.sleep(0)
        cancelled.cancel()
        slots.release()
        await later
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await asyncio.wait_for(slots.acquire(), 1)  # the slot came back
        return log

    assert asyncio.run(main()) == ["later"]


def test_at_least_one_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        PrioritySlots(0)
