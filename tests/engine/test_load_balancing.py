"""Command tasks: one shared durable, so worker processes share the work, each task once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, TaskStarted, TaskSucceeded
from engine.streams import TASKS as STREAM
from tests.support.harness import (
    EventCollector,
    WorkerProcess,
    deliveries,
    settled,
    started_again,
    stored_events,
)
from tests.support.tasks import whoami
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TASKS = 200


async def test_two_workers_share_200_tasks_each_run_once(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    worker_ids = await worker.ready(events)
    assert len(worker_ids) == 2
    durable = client.settings.tasks_durable
    before = deliveries(await settled(client, STREAM, durable))

    kicked = await asyncio.gather(*(whoami.kiq(n) for n in range(TASKS)))
    task_ids = {task.task_id for task in kicked}

    def succeeded(event: BaseEvent) -> bool:
        return isinstance(event, TaskSucceeded) and event.task_id in task_ids

    await events.wait_for(succeeded, TASKS, timeout=120)
    results = await asyncio.gather(
        *(t.wait_result(check_interval=0.05, timeout=30) for t in kicked)
    )

    assert sorted(r.return_value["n"] for r in results) == list(range(TASKS))
    ran_on = Counter(r.return_value["worker"] for r in results)
    assert set(ran_on) == worker_ids, ran_on  # both processes got a share
    assert min(ran_on.values()) > 0

    # One delivery per task, and none left to come: no task ran twice, none can.
    delta = deliveries(await settled(client, STREAM, durable)) - before
    assert delta == TASKS, await started_again(client, worker.started_at)
    started: Counter[str] = Counter()
    done: Counter[str] = Counter()

    async def all_stored() -> bool:  # lifecycle events come through the workers' outboxes
        stored = await stored_events(client, "events.task.>", since=worker.started_at)
        started.clear()
        started.update(
            e.task_id for e in stored if isinstance(e, TaskStarted) and e.task_id in task_ids
        )
        done.clear()
        done.update(e.task_id for e in stored if succeeded(e))
        return len(started) == len(done) == TASKS

    await eventually(all_stored, 60, lambda: f"stored {len(started)} started, {len(done)} done")
    assert set(started.values()) == {1}
    assert set(done.values()) == {1}
    assert len(done) == TASKS
    assert worker.stop() == 0
