from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engine.broker import OneManageBroker
from engine.streams import TASKS
from tests.support.harness import EventCollector, WorkerProcess


@pytest.fixture
async def events(client: OneManageBroker) -> AsyncIterator[EventCollector]:
    async with EventCollector(client) as collector:
        yield collector


@pytest.fixture
async def start_workers(
    client: OneManageBroker, tmp_path: Path
) -> AsyncIterator[Callable[..., WorkerProcess]]:
    """Start `onemanage worker` processes; all are stopped (SIGTERM) after the test."""
    await client.js.purge_stream(TASKS)  # nothing left over from an earlier test
    started: list[WorkerProcess] = []

    def start(processes: int = 1, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, processes, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
