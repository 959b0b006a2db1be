"""A worker runs what it is told: the named modules, or the built-in application."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from taskiq.kicker import AsyncKicker

from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.events.schemas import WorkerHeartbeat
from engine.settings import Settings
from engine.tasks.diagnostics import NOOP_TASK, PING_TASK
from tests.support.harness import ROOT, EventCollector, WorkerProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TEST_LANES = ["workers", "probe-a", "probe-b", "probe-flaky"]
BUILTIN_LANES = ["workers", "workflows", "audit-log", "task-stats", "workflow-dead-letters"]


def test_a_broker_registers_nothing_by_itself() -> None:
    assert OneManageBroker(Settings()).get_all_tasks() == {}
    assert set(create_broker(Settings()).get_all_tasks()) == {PING_TASK, NOOP_TASK}


async def _lanes_of(worker: WorkerProcess, events: EventCollector) -> list[str]:
    try:
        (worker_id,) = await worker.ready(events)
        (beat, *_) = events.matching(
            lambda e: isinstance(e, WorkerHeartbeat) and e.worker_id == worker_id
        )
        assert isinstance(beat, WorkerHeartbeat)
        return beat.lanes
    except BaseException:
        worker.stop()
        raise


@pytest.mark.parametrize(
    ("modules", "lanes"),
    [
        (("tests.support.tasks",), TEST_LANES),
        ((), BUILTIN_LANES),
        (("tests.support.tasks", "engine.builtin"), [*BUILTIN_LANES, *TEST_LANES[1:]]),
    ],
    ids=["only the named module", "no module: the built-in application", "both"],
)
async def test_a_worker_pulls_exactly_the_lanes_of_what_it_runs(
    client: OneManageBroker,
    events: EventCollector,
    tmp_path: Path,
    modules: tuple[str, ...],
    lanes: list[str],
) -> None:
    worker = WorkerProcess(tmp_path, modules=modules)
    try:
        assert sorted(await _lanes_of(worker, events)) == sorted(lanes)
        # Whatever it runs, it answers the health check's ping.
        ping: AsyncKicker[..., Any] = AsyncKicker(PING_TASK, client, {})
        result = await (await ping.kiq("assembly")).wait_result(timeout=60)
        assert result.return_value["payload"] == "assembly"
    finally:
        assert worker.stop() == 0


@pytest.mark.parametrize(
    ("module", "says"),
    [
        ("myapp.typo", "cannot import myapp.typo: ModuleNotFoundError"),
        (
            "tests.support.broken_tasks",
            "cannot import tests.support.broken_tasks: ZeroDivisionError",
        ),
    ],
)
def test_a_worker_that_cannot_import_a_module_it_was_given_does_not_start(
    tmp_path: Path, module: str, says: str
) -> None:
    """taskiq alone would log a warning and run without it: its tasks would dead-letter."""
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "worker", "-p", "1", module],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert says in done.stderr, done.stderr
    assert "pulling from" not in done.stdout + done.stderr  # no worker was started


async def test_lifecycle_events_off_runs_tasks_and_publishes_no_transition(
    client: OneManageBroker, events: EventCollector, tmp_path: Path
) -> None:
    """ONEMANAGE_LIFECYCLE_EVENTS=false (the benchmarks' "engine alone"): results, no events."""
    worker = WorkerProcess(tmp_path, env={"ONEMANAGE_LIFECYCLE_EVENTS": "false"})
    try:
        await worker.ready(events)
        noop: AsyncKicker[..., Any] = AsyncKicker(NOOP_TASK, client, {})
        task = await noop.kiq()
        assert (await task.wait_result(timeout=60)).return_value is None

        def processed() -> list[WorkerHeartbeat]:
            beats = [e for e in events.events if isinstance(e, WorkerHeartbeat) and e.processed]
            return beats if len(beats) >= 2 else []  # one more beat after: its outbox is empty

        await eventually(processed, 60, "no heartbeat counted the task")
        said = {e.event_type for e in events.events if getattr(e, "task_id", None) == task.task_id}
        assert said == {"task.queued"}, said  # queued by this client, which has them on
    finally:
        assert worker.stop() == 0
