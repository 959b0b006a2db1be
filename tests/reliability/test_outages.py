"""Outages of the session's one server, and worker crashes, under load: nothing is lost.

The server is SIGKILLed and restarted on the same port and store (the
``nats_server`` fixture); other modules share it, so each test brings it back
before it ends, even when it fails. tests/engine/test_restart.py covers a
restart under 60 sleeping tasks; these are the reliability versions, with
2,000 tasks, workflows through a 12 s outage, and 3 worker crashes under 50
workflows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from taskiq import AsyncTaskiqTask

from engine.broker import OneManageBroker
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from engine.results import await_result
from engine.services.samples import make_demo_psd
from engine.streams import TASKS
from engine.submit import Submission, submit_psd
from tests.conftest import NatsServer
from tests.support.cluster import RetriedPublishes
from tests.support.harness import (
    EventCollector,
    WorkerProcess,
    kill_worker,
    settled,
    stored_events,
)
from tests.support.load import KickLoad
from tests.support.tasks import add, sleep_for
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

TASK_COUNT = 2000
KILL_AFTER = 500  # kicks returned before the server dies
KICKERS = 16
OUTAGE = 12.0  # seconds the server stays down under running workflows (10-30 s asked)
WORKFLOWS_THROUGH_OUTAGE = 8
WORKFLOWS_THROUGH_CRASHES = 50
WORKER_KILLS = 3


def _down(server: NatsServer) -> bool:
    process = server.server.process
    return process is not None and process.poll() is not None


@pytest.fixture
def restored(nats_server: NatsServer) -> Iterator[NatsServer]:
    """The session's server, brought back after the test if the test left it down."""
    try:
        yield nats_server
    finally:
        if _down(nats_server):
            nats_server.restart()


async def _outage(server: NatsServer, client: OneManageBroker, worker: WorkerProcess) -> float:
    """SIGKILL the server, wait until the client saw it, restart; seconds until reconnected."""
    server.kill()
    killed_at = time.monotonic()
    await eventually(lambda: not client.is_connected, 30, "the test's client saw no outage")
    server.restart()  # same port, same store
    await eventually(lambda: client.is_connected, 30, "the test's client did not reconnect")
    assert worker.process.poll() is None, worker.log()
    return time.monotonic() - killed_at


async def _stored_until(
    client: OneManageBroker,
    subject: str,
    since: Any,
    complete: Callable[[list[BaseEvent]], bool],
    what: str,
    timeout: float = 90,
) -> list[BaseEvent]:
    """The stored events on ``subject``, once ``complete`` says they are all there."""
    stored: list[BaseEvent] = []

    async def arrived() -> list[BaseEvent]:
        stored[:] = await stored_events(client, subject, since)
        return list(stored) if complete(stored) else []

    return await eventually(arrived, timeout, lambda: f"{what}: {len(stored)} stored", 0.5)


async def test_a_server_crash_under_2000_tasks_loses_and_repeats_nothing(
    restored: NatsServer,
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    began = time.monotonic()
    load = KickLoad(lambda n: add.kiq(n, 1), TASK_COUNT, KICKERS, KILL_AFTER)
    with RetriedPublishes("tasks.") as retried:
        kicking = asyncio.create_task(load.run())
        try:
            await load.accepted.wait()
            reconnected_s = await _outage(restored, client, worker)
        finally:
            await kicking
    kicked, refused, latencies = load.kicked, load.refused, load.latencies
    lost: list[str] = []
    wrong: list[str] = []

    async def outcome(n: int, task: AsyncTaskiqTask[int]) -> None:
        try:
            result = await await_result(client, task.task_id, timeout=90)
        except TimeoutError:
            lost.append(task.task_id)
            return
        if result.is_err or result.return_value != n + 1:
            wrong.append(f"{task.task_id}: {result.error!r} {result.return_value!r}")

    await asyncio.gather(*(outcome(n, task) for n, task in kicked.items()))
    results_s = time.monotonic() - began
    ids = {task.task_id for task in kicked.values()}

    def succeeded_all(stored: list[BaseEvent]) -> bool:
        done = {e.task_id for e in stored if isinstance(e, TaskSucceeded) and e.task_id in ids}
        return done == ids

    stored = await _stored_until(
        client, "events.task.>", worker.started_at, succeeded_all, "not every success stored"
    )
    mine = [e for e in stored if isinstance(e, TaskEvent) and e.task_id in ids]
    seen = Counter((e.task_id, e.event_type, getattr(e, "attempt", None)) for e in mine)
    duplicated = {key: n for key, n in seen.items() if n > 1}
    failed = [e for e in mine if isinstance(e, TaskFailed | TaskDeadLettered)]
    reruns = sum(1 for e in mine if isinstance(e, TaskStarted) and e.attempt > 1)
    print(
        f"FIGURES server crash: tasks {TASK_COUNT}, faults 1 (SIGKILL + restart), refused "
        f"{len(refused)}, kicks retried {len(retried.msg_ids)}, max kick {max(latencies):.2f}s, "
        f"client reconnected {reconnected_s:.2f}s after the kill, lost {len(lost)}, wrong "
        f"{len(wrong)}, failed {len(failed)}, re-runs (attempt > 1) {reruns}, duplicated "
        f"lifecycle events {sum(n - 1 for n in duplicated.values())} of {len(mine)} stored, "
        f"all results {results_s:.1f}s after the first kick"
    )
    assert refused == [], refused[:5]
    assert lost == [], f"{len(lost)} accepted tasks lost, e.g. {lost[:5]}"
    assert wrong == [], wrong[:5]
    assert failed == [], failed[:5]
    assert duplicated == {}, f"{len(duplicated)} duplicated, e.g. {list(duplicated.items())[:5]}"
    assert worker.process.poll() is None, worker.log()


def _outcome_of(ids: set[str]) -> Callable[[BaseEvent], bool]:
    return lambda e: (
        isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed) and (e.workflow_id in ids)
    )


async def _submit(client: OneManageBroker, count: int, prefix: str) -> list[Submission]:
    """``count`` workflows over a few distinct documents (each is built in ~0.16 s)."""
    files = await asyncio.to_thread(lambda: [make_demo_psd(seed=n) for n in range(5)])
    return [
        await submit_psd(client, files[n % len(files)], f"{prefix}-{n}.psd") for n in range(count)
    ]


async def _outcomes(
    client: OneManageBroker, ids: set[str], since: Any, timeout: float = 180
) -> Counter[tuple[str, str]]:
    """(workflow id, outcome type) counts as stored, once every workflow has one and the
    lanes have nothing left that could run an orchestrator again (the counts are final)."""
    is_outcome = _outcome_of(ids)

    def all_ended(stored: list[BaseEvent]) -> bool:
        return {getattr(e, "workflow_id", None) for e in stored if is_outcome(e)} == ids

    await _stored_until(client, "events.psd.>", since, all_ended, "not every outcome", timeout)
    for durable in (client.settings.workflows_durable, client.settings.tasks_durable):
        await settled(client, TASKS, durable)
    stored = await stored_events(client, "events.psd.>", since)
    return Counter((getattr(e, "workflow_id", ""), e.event_type) for e in stored if is_outcome(e))


async def test_a_server_outage_under_running_workflows_fails_none(
    restored: NatsServer,
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    submissions = await _submit(client, WORKFLOWS_THROUGH_OUTAGE, "outage")
    ids = {s.workflow_id for s in submissions}
    # Under way: a step of one of them is done, so the outage cuts into running workflows.
    await events.wait_for(lambda e: isinstance(e, PsdStepCompleted) and e.workflow_id in ids)
    ended_before = len(events.matching(_outcome_of(ids)))

    restored.kill()
    killed_at = time.monotonic()
    await eventually(lambda: not client.is_connected, 30, "the test's client saw no outage")
    # The outage lasts OUTAGE seconds; meanwhile the test checks the worker rides it out.
    while time.monotonic() - killed_at < OUTAGE:
        assert worker.process.poll() is None, worker.log()
        assert not client.is_connected
        await asyncio.sleep(0.2)
    restored.restart()
    down_s = time.monotonic() - killed_at
    await eventually(lambda: client.is_connected, 30, "the test's client did not reconnect")
    resumed_s = time.monotonic() - killed_at

    began = time.monotonic()
    outcomes = await _outcomes(client, ids, worker.started_at)
    completed = {wid for (wid, kind), _ in outcomes.items() if kind == "psd.workflow.completed"}
    failed = {wid: kind for (wid, kind) in outcomes if kind != "psd.workflow.completed"}
    print(
        f"FIGURES server outage: workflows {len(ids)}, {ended_before} ended before the kill, "
        f"server down {down_s:.1f}s, client reconnected {resumed_s:.1f}s after the kill, "
        f"completed {len(completed)}, failed {len(failed)}, outcome events "
        f"{sum(outcomes.values())}, all ended {time.monotonic() - began:.1f}s after reconnecting"
    )
    assert failed == {}, failed
    assert completed == ids
    assert set(outcomes.values()) == {1}, {k: n for k, n in outcomes.items() if n > 1}
    assert worker.process.poll() is None, worker.log()


class _Logged(logging.Handler):
    """Sets ``seen`` when a record with ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_waiting_for_a_result_rides_out_an_outage(
    restored: NatsServer,
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """Landed main: a result read that failed in an outage ended the wait (step_timeout 2 s in)."""
    worker = start_workers()
    await worker.ready(events)
    task = await sleep_for.kiq(1.0)
    unreadable = _Logged("cannot read the result of")
    logging.getLogger("engine.results").addHandler(unreadable)
    try:
        restored.kill()
        await eventually(lambda: not client.is_connected, 30, "the test's client saw no outage")
        waiting = asyncio.create_task(await_result(client, task.task_id, 60))
        await asyncio.wait_for(unreadable.seen.wait(), 30)  # where the landed main gave up
        assert not waiting.done()
        restored.restart()
        result = await asyncio.wait_for(waiting, 60)
    finally:
        logging.getLogger("engine.results").removeHandler(unreadable)
    assert result.return_value == 1.0


def _started_by(workers: set[str], workflows: set[str]) -> Callable[[BaseEvent], bool]:
    return lambda e: (
        isinstance(e, TaskStarted) and e.worker_id in workers and e.correlation_id in workflows
    )


async def test_worker_crashes_under_50_workflows_leave_one_outcome_each(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    survivor = start_workers(processes=1)
    victim = start_workers(processes=1)
    await survivor.ready(events)
    victim_ids = await victim.ready(events)
    since = survivor.started_at
    submissions = await _submit(client, WORKFLOWS_THROUGH_CRASHES, "crash")
    ids = {s.workflow_id for s in submissions}
    ended_at_kill: list[int] = []
    for kill in range(WORKER_KILLS):
        # In the middle of work: the victim has just started a task of these workflows.
        await events.wait_for(_started_by(victim_ids, ids), timeout=120)
        kill_worker(victim)
        ended = {getattr(e, "workflow_id", "") for e in events.matching(_outcome_of(ids))}
        ended_at_kill.append(len(ended))
        if kill < WORKER_KILLS - 1:
            victim = start_workers(processes=1)
            victim_ids = await victim.ready(events)
    assert ended_at_kill[0] < len(ids), "every workflow ended before the first crash"

    began = time.monotonic()
    outcomes = await _outcomes(client, ids, since, timeout=240)
    per_workflow = Counter(wid for wid, _ in outcomes.elements())
    kinds = Counter(kind for _, kind in outcomes.elements())
    print(
        f"FIGURES worker crashes: workflows {len(ids)}, worker SIGKILLs {WORKER_KILLS} (outcomes "
        f"stored by then: {ended_at_kill}), outcome events {sum(outcomes.values())} {dict(kinds)}, "
        f"workflows with more than one: {sum(1 for n in per_workflow.values() if n > 1)}, "
        f"all ended {time.monotonic() - began:.1f}s after the last crash"
    )
    assert set(per_workflow) == ids
    assert set(per_workflow.values()) == {1}, {w: n for w, n in per_workflow.items() if n > 1}
    assert survivor.process.poll() is None, survivor.log()
