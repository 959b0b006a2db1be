"""The one history reader: everything stored up to the call, however slow the caller.

A private server per test: the reads count exact sequences, and nothing else
publishes there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import embedded, monitor
from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.events.publisher import publish_event
from engine.events.schemas import TaskQueued
from engine.settings import Settings
from engine.streams import EVENTS
from tests.support.waiting import eventually

STORED = 1200  # more than four of the reader's batches of 250


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[OneManageBroker]:
    server = embedded.start(tmp_path / "server", detach=False)
    broker = create_broker(Settings(nats_url=[server.url], data_dir=tmp_path / "data"))
    try:
        await broker.startup()
        await broker.ensure_streams()
        yield broker
        await broker.shutdown()
    finally:
        server.stop()


async def _publish(broker: OneManageBroker, count: int, name: str = "stored") -> None:
    for n in range(count):
        await publish_event(broker, TaskQueued(task_id=f"{name}-{n}", task_name=name))


@pytest.mark.slow  # it stalls the loop for seconds on purpose
@pytest.mark.parametrize("where", ["between batches", "while a batch is on its way"])
async def test_a_reader_blocked_mid_read_still_returns_every_stored_event(
    private: OneManageBroker, where: str
) -> None:
    """The event loop stalls (no timer fires, nothing is read) for longer than any wait."""
    await _publish(private, STORED)
    stall = private.settings.connect_timeout  # > the reader's own wait for a batch (3 s)
    seqs = []
    async for delivered in monitor.read_history(private, 1):
        seqs.append(delivered.seq)
        if len(seqs) == 100:
            if where == "between batches":
                time.sleep(2)  # noqa: ASYNC251 (the caller itself is slow)
            else:  # someone else blocks the loop once the next request has gone out
                asyncio.get_running_loop().call_soon(time.sleep, stall)
    assert seqs == list(range(1, STORED + 1))


async def test_history_ends_at_the_last_sequence_stored_when_it_was_asked(
    private: OneManageBroker,
) -> None:
    await _publish(private, STORED)
    reader = monitor.EventReader(private, 1)
    seqs = []
    async for delivered in reader.history():
        seqs.append(delivered.seq)
        if len(seqs) == 10:
            await _publish(private, 50, "later")  # stored after the read began
    assert seqs == list(range(1, STORED + 1))
    info = await private.js.stream_info(EVENTS)
    assert info.state.last_seq == STORED + 50


async def test_a_reader_whose_consumer_vanished_reads_on_from_where_it_was(
    private: OneManageBroker,
) -> None:
    """A restarted server, or a caller stalled past the inactivity threshold, loses it."""
    await _publish(private, STORED)
    seqs = []
    async for delivered in monitor.read_history(private, 1):
        seqs.append(delivered.seq)
        if len(seqs) == 300:
            for consumer in await private.js.consumers_info(EVENTS):
                await private.js.delete_consumer(EVENTS, consumer.name)
    assert seqs == list(range(1, STORED + 1))  # each once, in order


async def test_history_from_a_time_and_through_a_filter(private: OneManageBroker) -> None:
    await _publish(private, 20, "old")
    since = datetime.now(UTC)
    await _publish(private, 30, "new")
    events = await monitor.recent_events(private, datetime.now(UTC) - since)
    assert [e.task_id for e in events if isinstance(e, TaskQueued)] == [
        f"new-{n}" for n in range(30)
    ]
    nothing = [d async for d in monitor.read_history(private, 1, "events.psd.>")]
    assert nothing == []


async def test_follow_is_the_same_reader_going_on_live(private: OneManageBroker) -> None:
    await _publish(private, 5, "before")
    reader = monitor.EventReader(private, 1)
    seen: list[int] = []
    idle = asyncio.Event()
    follow = asyncio.create_task(reader.run(lambda d: seen.append(d.seq), on_idle=idle.set))
    try:
        await asyncio.wait_for(idle.wait(), 30)  # the history is in, nothing more stored
        assert seen == [1, 2, 3, 4, 5]
        await _publish(private, 5, "after")
        await eventually(lambda: len(seen) >= 10, 30, lambda: f"saw {seen}")
        assert seen == list(range(1, 11))
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
