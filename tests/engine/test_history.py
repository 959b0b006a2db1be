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
from engine.events.stats import StatsFolder, TaskTypeStats, fold_task_event, read_task_stats
from engine.settings import Settings
from engine.streams import EVENTS, STATS_BUCKET
from tests.support.waiting import eventually

STORED = 1200  # more than four of the reader's batches of 250


@pytest.fixture
async def private(tmp_path: Path) -> AsyncIterator[OneManageBroker]:
    server = embedded.start(tmp_path / "server", detach=False)
    broker = create_broker(
        Settings(
            nats_url=[server.url],
            data_dir=tmp_path / "data",
            credentials_dir=server.credentials_dir,
        )
    )
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


async def _consumers(broker: OneManageBroker, stream: str = EVENTS) -> list[str]:
    """The consumers the server holds on ``stream``, by name, and checks its count agrees."""
    names = sorted(str(c.name) for c in await broker.js.consumers_info(stream))
    assert (await broker.js.stream_info(stream)).state.consumer_count == len(names)
    return names


async def test_reading_and_following_create_no_consumer(private: OneManageBroker) -> None:
    """Direct get holds no state on the server: nothing to expire, nothing left behind."""
    await _publish(private, STORED)
    before = await _consumers(private)
    seqs = []
    async for delivered in monitor.read_history(private, 1):
        seqs.append(delivered.seq)
        if len(seqs) == 300:
            assert await _consumers(private) == before  # mid-read, the reader open
    assert seqs == list(range(1, STORED + 1))
    assert await _consumers(private) == before

    seen: list[int] = []
    idle = asyncio.Event()
    reader = monitor.EventReader(private, 1)
    follow = asyncio.create_task(reader.run(lambda d: seen.append(d.seq), on_idle=idle.set))
    try:
        await asyncio.wait_for(idle.wait(), 30)  # the history is in, the reader polls on
        await _publish(private, 5, "live")
        await eventually(lambda: len(seen) == STORED + 5, 30, lambda: f"saw {len(seen)}")
        assert await _consumers(private) == before
    finally:
        follow.cancel()
        await asyncio.gather(follow, return_exceptions=True)
    assert seen == list(range(1, STORED + 6))
    assert await _consumers(private) == before


async def test_task_statistics_are_read_by_direct_get(private: OneManageBroker) -> None:
    """Each key's latest value, removed keys left out, and no consumer on the bucket."""
    for name in ("kept", "deleted", "purged"):
        for _ in range(3):  # three revisions of each: only the latest counts
            await fold_task_event(private, TaskQueued(task_id=name, task_name=name))
    kv = await private.key_value(STATS_BUCKET)
    await kv.delete("deleted")
    await kv.purge("purged")
    stats = await read_task_stats(private)
    assert [(s.task_name, s.queued) for s in stats] == [("kept", 3)]
    assert await _consumers(private, f"KV_{STATS_BUCKET}") == []
    await fold_task_event(private, TaskQueued(task_id="again", task_name="deleted"))
    stats = await read_task_stats(private)  # a removed key counts again from nothing
    assert [(s.task_name, s.queued) for s in stats] == [("deleted", 1), ("kept", 3)]

    # More keys than one multi_last request answers for (the server's limit is 1024).
    for n in range(1030):
        key = f"many-{n:04}"
        await kv.put(key, TaskTypeStats(task_name=key).model_dump_json().encode())
    names = [s.task_name for s in await read_task_stats(private)]
    assert names == ["deleted", "kept", *(f"many-{n:04}" for n in range(1030))]
    assert await _consumers(private, f"KV_{STATS_BUCKET}") == []


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


async def test_folds_from_two_folders_at_once_count_every_event(private: OneManageBroker) -> None:
    """Group commit: concurrent events share writes, and two writers (two workers) racing
    on the same keys lose none of them."""
    first, second = StatsFolder(private), StatsFolder(private)
    events = [
        TaskQueued(task_id=f"t{n}", task_name="shared" if n % 3 else "other") for n in range(90)
    ]
    await asyncio.gather(
        *((first if n % 2 else second).fold(event) for n, event in enumerate(events))
    )
    stats = {s.task_name: s.queued for s in await read_task_stats(private)}
    assert stats == {"other": 30, "shared": 60}
    info = await private.js.stream_info(f"KV_{STATS_BUCKET}")
    assert (info.state.last_seq or 0) < len(events)  # fewer writes than events
