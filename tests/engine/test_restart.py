"""Kill the nats-server under a running worker; on restart the worker finishes every task."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from engine.broker import OneManageBroker
from engine.events.schemas import TaskSucceeded
from tests.conftest import NatsServer
from tests.support.harness import EventCollector, WorkerProcess
from tests.support.tasks import sleep_for
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TASKS = 60


async def test_the_worker_resumes_after_a_server_restart(
    nats_server: NatsServer,
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1, env={"ONEMANAGE_CONCURRENCY": "4"})
    await worker.ready(events)
    kicked = [await sleep_for.kiq(0.1) for _ in range(TASKS)]
    task_ids = {task.task_id for task in kicked}
    await events.wait_for(lambda e: isinstance(e, TaskSucceeded) and e.task_id in task_ids, 30)

    nats_server.kill()  # as a crash would: no goodbye to anyone
    # The outage is real once the worker says it lost the server (and this process saw it).
    await eventually(lambda: "disconnected" in worker.log(), 30, worker.log)
    await eventually(lambda: not client.is_connected, 30, "the test's client saw no outage")
    nats_server.restart()  # same port, same store
    await eventually(lambda: client.is_connected, 30, "the test's client did not reconnect")

    results = await asyncio.gather(
        *(task.wait_result(check_interval=0.1, timeout=90) for task in kicked)
    )
    assert all(not r.is_err and r.return_value == 0.1 for r in results)
    assert worker.process.poll() is None  # it rode out the outage
    assert worker.stop() == 0
