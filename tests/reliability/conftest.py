"""Fixtures of the fault tests: a 3-node cluster, workers, and event collection."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from engine.broker import OneManageBroker
from engine.streams import TASKS
from tests.support.cluster import Cluster
from tests.support.harness import EventCollector, WorkerProcess


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three nats-servers on loopback, each with its own store; stopped by pid at the end."""
    base = Path(tempfile.mkdtemp(prefix="onemanage-cluster-"))
    nodes = Cluster(base)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def events(client: OneManageBroker) -> AsyncIterator[EventCollector]:
    async with EventCollector(client) as collector:
        yield collector


@pytest.fixture
async def start_workers(
    client: OneManageBroker, tmp_path: Path
) -> AsyncIterator[Callable[..., WorkerProcess]]:
    """Start `onemanage worker` processes on the session's server; all stopped after the test."""
    await client.js.purge_stream(TASKS)  # nothing left over from an earlier test
    started: list[WorkerProcess] = []

    def start(processes: int = 1, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, processes, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
