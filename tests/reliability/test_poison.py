"""Poison stays with its message: a deep event, garbage on a task subject, a task on
another task's subject, a loop that dies, a task delivered twice to one process.

Real workers on the session's server for the first three; the last two run a real
Consumption in this process on a private work-queue stream, so what its loops do
can be looked at directly.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from rich.console import Console
from taskiq.message import TaskiqMessage
from textual.app import App
from textual.widget import Widget

from console.state import ConsoleState
from console.widgets.workers import Workers
from engine.broker import OneManageBroker
from engine.consuming import Consumption
from engine.errors import DeadLetteredError
from engine.events.audit import audit_path
from engine.events.publisher import publish_event
from engine.events.schemas import (
    BaseEvent,
    LaneHealth,
    PsdWorkflowFailed,
    TaskDeadLettered,
    TaskQueued,
    TaskStarted,
    WorkerHeartbeat,
)
from engine.events.stats import read_task_stats
from engine.identity import utc_now
from engine.lanes import Delivery, Lane, consumer_config
from engine.results import await_result
from engine.routing import TASK_ID_HEADER
from engine.streams import TASKS
from tests.support.harness import EventCollector, WorkerProcess, deliveries, stored_events
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

DEPTH = 1000  # json.loads raises RecursionError near here


def _deep_event(event_id: str) -> bytes:
    """A valid event but for one value nested DEPTH levels deep (about 6 KB)."""
    deep = '{"d":' * DEPTH + "1" + "}" * DEPTH
    return (
        f'{{"event_type":"task.queued","event_version":"1.0","event_id":"{event_id}",'
        f'"task_id":"{event_id}","task_name":"probe.deep","x":{deep}}}'
    ).encode()


def _task_body(task_name: str, task_id: str) -> bytes:
    message = TaskiqMessage(task_id=task_id, task_name=task_name, labels={}, args=[], kwargs={})
    return message.model_dump_json().encode()


def _dead_letter_of(seq: int) -> Callable[[BaseEvent], bool]:
    return lambda e: isinstance(e, TaskDeadLettered) and e.stream == TASKS and e.stream_seq == seq


async def _gone(client: OneManageBroker, stream: str, seq: int) -> bool:
    try:
        await client.js.get_msg(stream, seq)
    except NotFoundError:
        return True
    return False


async def test_a_deep_event_is_skipped_and_the_listeners_go_on(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    (worker_id,) = await worker.ready(events)
    deep_id = uuid.uuid4().hex
    # On events.task.>: both built-in listeners (audit-log, task-stats) get it.
    await client.publish("events.task.queued", _deep_event(deep_id), msg_id=deep_id)
    later = TaskQueued(task_id=uuid.uuid4().hex, task_name=f"probe.after-deep-{deep_id}")
    await publish_event(client, later)

    audit = audit_path(client.settings)

    def audited() -> bool:
        return audit.exists() and later.event_id in audit.read_text(errors="replace")

    async def counted() -> bool:
        return any(s.task_name == later.task_name for s in await read_task_stats(client))

    await eventually(audited, 120, "audit-log did not append the event after the deep one")
    await eventually(counted, 60, "task-stats did not fold the event after the deep one")

    def reported(e: BaseEvent) -> bool:
        if not isinstance(e, WorkerHeartbeat) or e.worker_id != worker_id:
            return False
        skipped = [e.listeners.get(d) for d in ("audit-log", "task-stats")]
        return all(c is not None and c.skipped.get("too_deep", 0) >= 1 for c in skipped)

    (beat,) = await events.wait_for(reported, timeout=30)
    assert isinstance(beat, WorkerHeartbeat)
    assert set(beat.lane_health) == set(beat.lanes)
    assert beat.degraded_lanes == []
    assert {h.restarts for h in beat.lane_health.values()} == {0}  # no loop died
    assert "Task exception was never retrieved" not in worker.log()


async def test_garbage_on_a_task_subject_is_a_dead_letter(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    garbage = b"\x00\xff not a taskiq message {"
    ack = await client.publish("tasks.default.test.add", garbage, msg_id=uuid.uuid4().hex)

    (dead,) = await events.wait_for(_dead_letter_of(ack.seq), timeout=60)
    assert isinstance(dead, TaskDeadLettered)
    assert (dead.reason, dead.task_name) == ("undecodable", "test.add")
    assert dead.payload == garbage.decode("utf-8", "replace")
    assert not dead.payload_truncated
    assert dead.error  # what taskiq's formatter said
    assert (dead.consumer, dead.deliveries) == (client.settings.tasks_durable, 1)
    await eventually(lambda: _gone(client, TASKS, ack.seq), 30, "still in TASKS")
    stored = await stored_events(client, "events.task.dead_lettered", worker.started_at)
    assert len([e for e in stored if _dead_letter_of(ack.seq)(e)]) == 1


async def test_a_task_on_another_tasks_subject_is_refused(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    task_id = uuid.uuid4().hex
    ack = await client.publish(
        "tasks.workflow.psd.process",
        _task_body("diag.ping", task_id),
        msg_id=task_id,
        headers={TASK_ID_HEADER: task_id},
    )

    (dead,) = await events.wait_for(_dead_letter_of(ack.seq), timeout=60)
    assert isinstance(dead, TaskDeadLettered)
    assert (dead.reason, dead.task_name, dead.task_id) == ("wrong_subject", "psd.process", task_id)
    assert "diag.ping" in dead.error
    await eventually(lambda: _gone(client, TASKS, ack.seq), 30, "still in TASKS")
    result = await await_result(client, task_id, 30)  # diag.ping did not run: a dead letter
    assert result.is_err and isinstance(result.error, DeadLetteredError)
    stored = await stored_events(client, "events.task.>", worker.started_at)
    assert not [e for e in stored if isinstance(e, TaskStarted) and e.task_id == task_id]
    # It came as the PSD workflow: that workflow ends, failed, once.
    (failed,) = await events.wait_for(
        lambda e: isinstance(e, PsdWorkflowFailed) and e.workflow_id == task_id, timeout=30
    )
    assert isinstance(failed, PsdWorkflowFailed)
    assert (failed.step, failed.error_code) == ("orchestrator", "dead_lettered")


# -- a real Consumption in this process -------------------------------------------------


@pytest.fixture
async def private_lane(client: OneManageBroker) -> AsyncIterator[Lane]:
    """One lane on a work-queue stream of its own (the workers' durables never see it)."""
    name = f"POISON_{uuid.uuid4().hex[:8].upper()}"
    subject = f"poison.{name.lower()}"
    await client.js.add_stream(
        StreamConfig(
            name=name,
            subjects=[f"{subject}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.MEMORY,
        )
    )
    yield Lane(name, "poison-test", f"{subject}.>", max_in_flight=1, prefetch=1)
    await client.js.delete_stream(name)


async def _no_listener(*_: object) -> None:
    raise AssertionError("no listener lane here")


def _consumption(
    client: OneManageBroker, knows: Callable[[str], bool], ack_wait: float | None = None
) -> Consumption:
    async def record_refused(*_: object) -> None:
        raise AssertionError("nothing is refused here")

    async def repair(lane: Lane) -> None:
        await client.js.add_consumer(lane.stream, consumer_config(lane, client.settings))

    settings = client.settings
    if ack_wait is not None:
        settings = settings.model_copy(update={"ack_wait": ack_wait})
    return Consumption(
        client.connection,
        settings,
        knows=knows,
        run_listener=_no_listener,
        decode_task=client.formatter.loads,
        record_refused=record_refused,
        count_unreadable=lambda *_: None,
        repair=repair,
    )


async def _publish_task(client: OneManageBroker, lane: Lane, task_id: str) -> None:
    subject = lane.filter_subject.replace(">", "test.add")
    body = _task_body("test.add", task_id)
    await client.publish(subject, body, msg_id=task_id, headers={TASK_ID_HEADER: task_id})


async def test_a_pull_loop_that_dies_is_restarted_and_reported(
    client: OneManageBroker, private_lane: Lane
) -> None:
    lane = private_lane
    await client.js.add_consumer(lane.stream, consumer_config(lane, client.settings))
    calls: list[str] = []

    def knows(task_name: str) -> bool:
        """A bug no guard around one message covers: the first call kills the pull loop."""
        calls.append(task_name)
        if len(calls) == 1:
            raise RuntimeError("a bug in the task registry")
        return True

    consumption = _consumption(client, knows)
    consumption.start([lane])
    try:
        task_id = uuid.uuid4().hex
        await _publish_task(client, lane, task_id)
        health = await eventually(
            lambda: lane.health.report() if lane.health.restarts else None, 30
        )
        assert health.restarts == 1
        assert "a bug in the task registry" in health.last_error
        # Started again: the message comes back after ack wait and is handed out.
        delivery: Delivery = await eventually(
            lambda: consumption.in_flight.get(task_id), 30, "the restarted loop took nothing"
        )
        await eventually(lambda: lane.health.report().state == "ok", 30)
        await consumption.settle(delivery)
        assert lane.health.report().restarts == 1
    finally:
        await consumption.stop()


async def test_a_task_delivered_again_to_its_holder_runs_once(
    client: OneManageBroker, private_lane: Lane
) -> None:
    lane = private_lane
    # The server waits 1 s for an ack; this process would send in-progress only every 200 s.
    quick = client.settings.model_copy(update={"ack_wait": 1.0, "max_deliver": 20})
    await client.js.add_consumer(lane.stream, consumer_config(lane, quick))
    consumption = _consumption(client, lambda _: True, ack_wait=600)
    consumption.start([lane])
    try:
        task_id = uuid.uuid4().hex
        await _publish_task(client, lane, task_id)
        first: Delivery = await eventually(lambda: consumption.in_flight.get(task_id), 30)

        async def thrice() -> bool:
            return deliveries(await client.js.consumer_info(lane.stream, lane.durable)) >= 3

        # Lane slots: 2. A third delivery means the second copy's slot was given back.
        await eventually(thrice, 30, "no third delivery")
        assert consumption.in_flight[task_id] is first
        assert consumption.inbox.qsize() == 1  # only the first was handed to taskiq
        assert consumption.inbox.get_nowait() is first
        await consumption.settle(first)  # settles the message, whichever copy came last

        async def acked() -> bool:
            info = await client.js.consumer_info(lane.stream, lane.durable)
            stream = await client.js.stream_info(lane.stream)
            return not info.num_ack_pending and not info.num_pending and not stream.state.messages

        await eventually(acked, 30, "the message is still in the stream")
        assert consumption.inbox.empty()
    finally:
        await consumption.stop()


# -- the console ------------------------------------------------------------------------


async def test_the_workers_panel_shows_degraded_lanes() -> None:
    state = ConsoleState()
    health = {"workers": LaneHealth(), "audit-log": LaneHealth(state="degraded", restarts=1)}
    beat = WorkerHeartbeat(
        worker_id="host:1", host="host", pid=1, started_at=utc_now(), interval_s=1,
        lanes=list(health), lane_health=health,
    )  # fmt: skip
    state.fold(beat)

    class Host(App[None]):
        def compose(self) -> Iterator[Widget]:
            yield Workers(state)

    app = Host()
    async with app.run_test() as pilot:
        panel = app.query_one(Workers)
        panel.update_view()
        await pilot.pause()
        out = io.StringIO()
        Console(file=out, width=120).print(panel.content)
    assert "DEGRADED audit-log" in out.getvalue()
    assert "alive" not in out.getvalue()
