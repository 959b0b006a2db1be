"""A listener slower than its events, for the discard-old tests (`onemanage worker` loads it)."""

from __future__ import annotations

import asyncio

from engine.app import event_listener
from engine.events.schemas import BaseEvent


@event_listener("slow-reader", "events.task.>")
async def slow_reader(event: BaseEvent) -> None:
    """About 100 events a second with one slot: a flood leaves it behind."""
    await asyncio.sleep(0.01)
