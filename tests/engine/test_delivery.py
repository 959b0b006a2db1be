"""Ack wait, max deliver, dead letters, and draining on SIGTERM, with real workers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.js.errors import NotFoundError

from engine.broker import OneManageBroker
from engine.events.schemas import (
    BaseEvent,
    TaskDeadLettered,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from engine.streams import TASKS
from tests.support.harness import EventCollector, WorkerProcess
from tests.support.tasks import always_transient, sleep_for


def _of(task_id: str, kind: type[BaseEvent]) -> Callable[[BaseEvent], bool]:
    return lambda event: isinstance(event, kind) and getattr(event, "task_id", None) == task_id


async def test_a_task_longer_than_ack_wait_runs_once(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    seconds = client.settings.ack_wait * 2.5
    task = await sleep_for.kiq(seconds)
    result = await task.wait_result(check_interval=0.05, timeout=60)
    assert result.return_value == seconds
    await asyncio.sleep(client.settings.ack_wait + 1)
    assert len(events.matching(_of(task.task_id, TaskStarted))) == 1
    assert len(events.matching(_of(task.task_id, TaskSucceeded))) == 1


async def test_a_transient_failure_ends_as_a_dead_letter(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    max_deliver = client.settings.max_deliver
    task = await always_transient.kiq()

    (dead,) = await events.wait_for(_of(task.task_id, TaskDeadLettered), timeout=60)
    assert isinstance(dead, TaskDeadLettered)
    assert dead.task_name == "test.always_transient"
    assert dead.deliveries == max_deliver
    assert dead.correlation_id == task.task_id
    assert task.task_id in dead.payload  # the original message, kept for later

    failures = [
        e for e in events.matching(_of(task.task_id, TaskFailed)) if isinstance(e, TaskFailed)
    ]
    assert [f.attempt for f in failures] == list(range(1, max_deliver + 1))
    assert [f.will_retry for f in failures] == [True] * (max_deliver - 1) + [False]
    assert {f.error_type for f in failures} == {"TransientError"}

    result = await task.wait_result(check_interval=0.05, timeout=10)  # the caller hears of it
    assert result.is_err

    await asyncio.sleep(client.settings.ack_wait * 2)  # nothing more comes
    assert len(events.matching(_of(task.task_id, TaskStarted))) == max_deliver
    assert len(events.matching(_of(task.task_id, TaskDeadLettered))) == 1
    try:
        await client.js.get_msg(TASKS, dead.stream_seq)
        raise AssertionError("the dead letter is still in TASKS")
    except NotFoundError:
        pass


async def test_sigterm_drains_running_tasks(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    task = await sleep_for.kiq(2.0)
    await events.wait_for(_of(task.task_id, TaskStarted), timeout=30)
    assert await asyncio.to_thread(worker.stop) == 0
    assert len(events.matching(_of(task.task_id, TaskSucceeded))) == 1
    result = await task.wait_result(timeout=5)
    assert result.return_value == 2.0
