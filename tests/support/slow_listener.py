"""Listeners slower than their events, for the discard-old tests (`onemanage worker` loads it).

One reads a part of EVENTS and one all of it: they jump past discarded events
differently (a filtered durable is carried past other subjects too).
"""

from __future__ import annotations

import asyncio

from engine.app import event_listener
from engine.events.schemas import BaseEvent

# A handler's own work, not a wait: with one slot, about 100 events a second, so
# that a flood of thousands a second outruns it (the tests wait on server figures).
PACE = 0.01


@event_listener("slow-reader", "events.task.>")
async def slow_reader(event: BaseEvent) -> None:
    """Events of tasks only, at PACE: a flood leaves it behind."""
    await asyncio.sleep(PACE)


@event_listener("slow-all")
async def slow_all(event: BaseEvent) -> None:
    """Every subject, as the audit log reads, at the same PACE."""
    await asyncio.sleep(PACE)
