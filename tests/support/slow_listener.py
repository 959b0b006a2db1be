"""Listeners slower than their events, for the discard-old tests (`onemanage worker` loads it).

One reads a part of EVENTS and one all of it: they jump past discarded events
differently (a filtered durable is carried past other subjects too).
"""

from __future__ import annotations

import asyncio

from engine.app import event_listener
from engine.events.schemas import BaseEvent


@event_listener("slow-reader", "events.task.>")
async def slow_reader(event: BaseEvent) -> None:
    """About 100 events a second with one slot: a flood leaves it behind."""
    await asyncio.sleep(0.01)


@event_listener("slow-all")
async def slow_all(event: BaseEvent) -> None:
    """The same pace on every subject, as the audit log reads."""
    await asyncio.sleep(0.01)
