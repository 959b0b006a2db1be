"""Results cross processes through the KV bucket; a sub-task's exception reaches the caller."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.broker import OneManageBroker
from tests.support.harness import EventCollector, WorkerProcess
from tests.support.tasks import call_failing_child, fail_with, sum_via_child

pytestmark = pytest.mark.slow

WAIT = {"check_interval": 0.02, "timeout": 60}


async def test_a_task_awaits_another_tasks_result(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    task = await sum_via_child.kiq(20, 22)
    result = await task.wait_result(**WAIT)
    assert not result.is_err, result.error
    assert result.return_value == 42


async def test_an_exception_keeps_its_type_and_message(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    direct = await (await fail_with.kiq("KeyError", "no such layer")).wait_result(**WAIT)
    assert direct.is_err
    assert isinstance(direct.error, KeyError)
    assert "no such layer" in str(direct.error)

    nested = await (await call_failing_child.kiq("boom in the child")).wait_result(**WAIT)
    assert nested.is_err
    assert isinstance(nested.error, ValueError)
    assert str(nested.error) == "boom in the child"
