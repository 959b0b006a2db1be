"""Ack wait, max deliver, dead letters, and draining on SIGTERM, with real workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from nats.js.errors import NotFoundError
from taskiq.kicker import AsyncKicker

from engine.broker import OneManageBroker
from engine.errors import DeadLetteredError
from engine.events.publisher import publish_event
from engine.events.schemas import (
    BaseEvent,
    TaskDeadLettered,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
)
from engine.results import await_result
from engine.streams import EVENTS, TASKS
from tests.support.harness import (
    EventCollector,
    WorkerProcess,
    deliveries,
    settled,
    started_again,
    stored_events,
)
from tests.support.tasks import FlakyEvent, always_transient, sleep_for
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def _of(task_id: str, kind: type[BaseEvent]) -> Callable[[BaseEvent], bool]:
    return lambda event: isinstance(event, kind) and getattr(event, "task_id", None) == task_id


async def _counted(
    client: OneManageBroker, worker: WorkerProcess, want: dict[type[BaseEvent], int], task_id: str
) -> list[BaseEvent]:
    """The stored task events, once each kind in ``want`` is there that often (or more).

    Workers publish lifecycle events through an outbox: the last ones may
    still be on their way when the result or the dead letter is.
    """
    stored: list[BaseEvent] = []

    async def arrived() -> list[BaseEvent]:
        stored[:] = await stored_events(client, "events.task.>", since=worker.started_at)
        got = {kind: len([e for e in stored if _of(task_id, kind)(e)]) for kind in want}
        return list(stored) if all(got[kind] >= n for kind, n in want.items()) else []

    def seen() -> str:
        return f"wanted {want} of {task_id}, stored: {[e.event_type for e in stored]}"

    return await eventually(arrived, 60, seen, interval=0.2)


async def test_a_task_longer_than_ack_wait_runs_once(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    durable = client.settings.tasks_durable
    before = deliveries(await settled(client, TASKS, durable))
    seconds = client.settings.ack_wait * 2.5
    task = await sleep_for.kiq(seconds)
    result = await task.wait_result(check_interval=0.05, timeout=60)
    assert result.return_value == seconds
    # Acked and gone: nothing is left to redeliver, and it was delivered once, not again.
    delta = deliveries(await settled(client, TASKS, durable)) - before
    assert delta == 1, await started_again(client, worker.started_at)
    want = {TaskStarted: 1, TaskSucceeded: 1}
    stored = await _counted(client, worker, want, task.task_id)
    assert len([e for e in stored if _of(task.task_id, TaskStarted)(e)]) == 1
    assert len([e for e in stored if _of(task.task_id, TaskSucceeded)(e)]) == 1


async def test_a_transient_failure_ends_as_a_dead_letter(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    max_deliver = client.settings.max_deliver
    durable = client.settings.tasks_durable
    before = deliveries(await settled(client, TASKS, durable))
    task = await always_transient.kiq()

    (dead,) = await events.wait_for(_of(task.task_id, TaskDeadLettered), timeout=60)
    assert isinstance(dead, TaskDeadLettered)
    assert dead.task_name == "test.always_transient"
    assert dead.deliveries == max_deliver
    assert dead.correlation_id == task.task_id
    assert task.task_id in dead.payload  # the original message, kept for later

    async def gone() -> bool:
        try:
            await client.js.get_msg(TASKS, dead.stream_seq)
        except NotFoundError:
            return True
        return False

    # Deleted from the work queue, it cannot be delivered again: the figures are final.
    await eventually(gone, 30, "the dead letter is still in TASKS")
    assert deliveries(await settled(client, TASKS, durable)) - before == max_deliver

    want = {TaskStarted: max_deliver, TaskFailed: max_deliver, TaskDeadLettered: 1}
    stored = await _counted(client, worker, want, task.task_id)
    failures = [e for e in stored if isinstance(e, TaskFailed) and e.task_id == task.task_id]
    assert [f.attempt for f in failures] == list(range(1, max_deliver + 1))
    assert [f.will_retry for f in failures] == [True] * (max_deliver - 1) + [False]
    assert {f.error_type for f in failures} == {"TransientError"}

    result = await task.wait_result(check_interval=0.05, timeout=10)  # the caller hears of it
    assert result.is_err

    assert len([e for e in stored if _of(task.task_id, TaskStarted)(e)]) == max_deliver
    assert len([e for e in stored if _of(task.task_id, TaskDeadLettered)(e)]) == 1


async def test_sigterm_drains_running_tasks(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    task = await sleep_for.kiq(2.0)
    await events.wait_for(_of(task.task_id, TaskStarted), timeout=30)
    assert await asyncio.to_thread(worker.stop) == 0  # its outbox is flushed before it exits
    stored = await stored_events(client, "events.task.>", since=worker.started_at)
    assert len([e for e in stored if _of(task.task_id, TaskSucceeded)(e)]) == 1
    result = await task.wait_result(timeout=5)
    assert result.return_value == 2.0


async def test_a_stopping_worker_leaves_its_last_events_to_the_next_reader(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """Its "stopping" heartbeat is published after it stops pulling.

    Before, each lane's last pull was still open on the server, which delivered
    that heartbeat to it: nobody read it, and the audit-log durable held it for
    ack_wait (30 s) before anyone else could (seen in bench.tasks on 2026-12-03).
    """
    worker = start_workers(processes=1)
    ids = await worker.ready(events)
    assert await asyncio.to_thread(worker.stop) == 0
    await events.wait_for(
        lambda e: isinstance(e, WorkerHeartbeat) and e.worker_id in ids and e.state == "stopping",
        timeout=30,
    )
    last = (await client.js.stream_info(EVENTS)).state.last_seq
    info = await client.js.consumer_info(EVENTS, "audit-log")
    delivered = info.delivered.stream_seq if info.delivered else 0
    assert (delivered or 0) < last, (
        f"audit-log delivered up to {delivered} with no worker reading; the stream ends at "
        f"{last}, the stopped worker's last heartbeat among them"
    )


async def test_a_listener_that_keeps_failing_leaves_a_dead_letter(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    event = FlakyEvent(correlation_id=uuid.uuid4().hex)
    await publish_event(client, event)

    def given_up(e: BaseEvent) -> bool:
        return isinstance(e, TaskDeadLettered) and e.task_name == "listener.probe-flaky"

    (dead,) = await events.wait_for(
        lambda e: given_up(e) and e.correlation_id == event.correlation_id, timeout=60
    )
    assert isinstance(dead, TaskDeadLettered)
    assert (dead.stream, dead.consumer) == ("EVENTS", "probe-flaky")
    assert dead.deliveries == client.settings.max_deliver
    assert event.event_id in dead.payload
    stored = await client.js.get_msg("EVENTS", dead.stream_seq)  # history keeps the event
    assert event.event_id.encode() in stored.data


async def test_a_worker_puts_back_a_durable_deleted_under_it(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    await client.js.delete_consumer("TASKS", client.settings.tasks_durable)
    task = await sleep_for.kiq(0.01)
    result = await task.wait_result(check_interval=0.05, timeout=60)
    assert result.return_value == 0.01
    names = [c.name for c in await client.js.consumers_info("TASKS")]
    assert client.settings.tasks_durable in names


async def test_a_task_no_worker_runs_gives_its_waiter_an_error_at_once(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """A dead letter is an outcome: a waiter hears of it now, not at the end of its timeout."""
    worker = start_workers()
    await worker.ready(events)
    nobody: AsyncKicker[..., Any] = AsyncKicker("test.nobody_runs_this", client, {})
    task = await nobody.kiq()  # every worker hands it back until the server gives up
    started = time.monotonic()
    result = await await_result(client, task.task_id, timeout=120)
    assert time.monotonic() - started < 60
    assert result.is_err and isinstance(result.error, DeadLetteredError)
    assert result.error.code == "dead_lettered"
    assert f"after {client.settings.max_deliver} deliveries" in str(result.error)
