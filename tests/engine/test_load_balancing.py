"""Command tasks: one shared durable, so worker processes share the work, each task once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, TaskStarted, TaskSucceeded
from tests.support.harness import EventCollector, WorkerProcess, stored_events
from tests.support.tasks import whoami

TASKS = 200


async def test_two_workers_share_200_tasks_each_run_once(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    worker_ids = await worker.ready(events)
    assert len(worker_ids) == 2

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

    await asyncio.sleep(client.settings.ack_wait + 1)  # a redelivery would show by now
    stored = await stored_events(client, "events.task.>")
    started = Counter(
        e.task_id for e in stored if isinstance(e, TaskStarted) and e.task_id in task_ids
    )
    done = Counter(e.task_id for e in stored if succeeded(e))
    assert set(started.values()) == {1}
    assert set(done.values()) == {1}
    assert len(done) == TASKS
    assert worker.stop() == 0
