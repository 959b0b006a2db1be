"""Reruns: a redelivered workflow or listener event does not make its events or effects twice.

Against the session server and real worker processes. A worker is killed with
SIGKILL (its whole process group) where a crash would hit: mid-workflow, and
after listeners handled events whose acks never reached the server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest

from engine.broker import OneManageBroker
from engine.events.audit import audit_path
from engine.events.marks import mark_key
from engine.events.publisher import publish_event
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    TaskEvent,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
)
from engine.events.stats import TaskTypeStats, read_task_stats
from engine.streams import EVENTS, MARKS_BUCKET, TASKS
from engine.submit import submit_psd
from engine.tasks.workflow import STEPS, step_task_id
from tests.support.harness import (
    EventCollector,
    WorkerProcess,
    kill_worker,
    settled,
    stored_events,
)
from tests.support.psd_factory import slow_to_render
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

STEP_TASKS = {
    "validate": "psd.validate",
    "parse": "psd.parse",
    "preview": "psd.preview",
    "export": "psd.export_layers",
}
LISTENERS = ("audit-log", "task-stats")
# The durables' ack wait while the listener test runs (its workers set it; the next test's
# workers set it back): room for a loaded machine to handle the events before the crash,
# so that the first worker never gets their redeliveries itself.
SLOW_ACK = {"ONEMANAGE_ACK_WAIT": "6"}


class AckDropper:
    """A TCP relay to the server that drops the client's acks of EVENTS deliveries.

    What a worker whose acks are lost on the way looks like to the server: its
    listeners ran and their marks were stored, yet every delivery is pending.
    Everything else (pulls, publishes, KV writes) is relayed unchanged.
    """

    def __init__(self, server_url: str) -> None:
        target = urlparse(server_url)
        self.host, self.port = target.hostname or "127.0.0.1", target.port or 4222
        self.dropped: set[tuple[str, int]] = set()  # (durable, stream sequence) of each ack
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> AckDropper:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        self._writers += [client_w, server_w]
        await asyncio.gather(
            self._copy(server_r, client_w), self._filter(client_r, server_w), return_exceptions=True
        )
        for writer in (client_w, server_w):
            writer.close()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()

    async def _filter(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay the client's protocol, frame by frame, without ``PUB $JS.ACK.EVENTS.*``."""
        pending = b""
        while chunk := await reader.read(65536):
            pending += chunk
            out = bytearray()
            while (end := pending.find(b"\r\n")) >= 0:
                line = pending[:end]
                parts = line.split()
                frame = end + 2
                if parts and parts[0].upper() in (b"PUB", b"HPUB"):
                    frame += int(parts[-1]) + 2  # the payload and its CRLF
                    if len(pending) < frame:
                        break  # the rest of the payload is still on its way
                    if self._drop(parts[1].decode()):
                        pending = pending[frame:]
                        continue
                out += pending[:frame]
                pending = pending[frame:]
            writer.write(bytes(out))
            await writer.drain()

    def _drop(self, subject: str) -> bool:
        """Whether ``subject`` acks an EVENTS delivery (either ack subject format); notes which."""
        tokens = subject.split(".")
        if tokens[:2] != ["$JS", "ACK"] or len(tokens) < 9:
            return False
        # $JS.ACK.<stream>.<durable>.<delivered>.<seq>...; with two more tokens (domain, account
        # hash) after ACK in the newer format.
        first = 4 if len(tokens) >= 12 else 2
        stream, durable, sequence = tokens[first], tokens[first + 1], tokens[first + 3]
        if stream != EVENTS:
            return False
        self.dropped.add((durable, int(sequence)))
        return True


# -- a workflow whose orchestrator is redelivered ----------------------------------------


def _of(workflow_id: str) -> Callable[[BaseEvent], bool]:
    return lambda e: e.correlation_id == workflow_id


async def test_a_redelivered_workflow_runs_no_finished_step_again(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    first = start_workers()
    await first.ready(events)
    submission = await submit_psd(client, slow_to_render(), "slow.psd")  # seconds of preview
    workflow_id = submission.workflow_id
    mine = _of(workflow_id)

    def task(cls: type[TaskEvent], name: str) -> Callable[[BaseEvent], bool]:
        return lambda e: isinstance(e, cls) and mine(e) and e.task_name == name

    # Crash once validate and parse are done and told, while preview renders.
    await events.wait_for(
        lambda e: isinstance(e, PsdStepCompleted) and mine(e) and e.step == "parse"
    )
    await events.wait_for(task(TaskSucceeded, "psd.parse"))
    await events.wait_for(task(TaskStarted, "psd.preview"))
    kill_worker(first)

    def is_outcome(e: BaseEvent) -> bool:
        return isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed) and mine(e)

    assert not events.matching(is_outcome), "the workflow ended before the crash: nothing to rerun"
    start_workers()
    (outcome,) = await events.wait_for(is_outcome, timeout=240)
    assert isinstance(outcome, PsdWorkflowCompleted), outcome
    # Nothing left that could run the orchestrator or a step again: the stream is final once
    # the orchestrator's own success (from the second worker's outbox) is stored.
    await settled(client, TASKS, client.settings.workflows_durable)
    await settled(client, TASKS, client.settings.tasks_durable)
    story: list[BaseEvent] = []

    async def whole() -> list[BaseEvent]:
        story[:] = [e for e in await stored_events(client, "events.>", first.started_at) if mine(e)]
        return story if any(task(TaskSucceeded, "psd.process")(e) for e in story) else []

    await eventually(whole, 60, lambda: f"stored: {[e.event_type for e in story]}")

    outcomes = [e for e in story if is_outcome(e)]
    assert len(outcomes) == 1
    steps = Counter(e.step for e in story if isinstance(e, PsdStepCompleted))
    assert steps == Counter(STEPS)  # one announcement each, though the orchestrator ran twice
    orchestrator = sorted(
        e.attempt for e in story if isinstance(e, TaskStarted) and e.task_name == "psd.process"
    )
    assert orchestrator == [1, 2]  # it really was redelivered
    for step, name in STEP_TASKS.items():
        mentioned = {e.task_id for e in story if isinstance(e, TaskEvent) and e.task_name == name}
        assert mentioned == {step_task_id(workflow_id, step)}, (step, mentioned)
        assert len([e for e in story if task(TaskQueued, name)(e)]) == 1, step
        # Started once per delivery that really ran it: a crashed preview twice, no more.
        attempts = sorted(
            e.attempt for e in story if isinstance(e, TaskStarted) and e.task_name == name
        )
        assert attempts == list(range(1, len(attempts) + 1)), (step, attempts)
        assert [e for e in story if task(TaskSucceeded, name)(e)], step
    for step in ("validate", "parse"):  # done before the crash: never run again
        assert len([e for e in story if task(TaskStarted, STEP_TASKS[step])(e)]) == 1, step


# -- listener events redelivered after their handlers ran --------------------------------


def _audited(path: Path, run: str) -> Counter[str]:
    """Event ids of ``run`` in the audit log; a line still being written is not counted."""
    seen: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            record = json.loads(line)
            if record.get("correlation_id") == run:
                seen[record["event_id"]] += 1
    return seen


async def _stats(client: OneManageBroker, task_name: str) -> TaskTypeStats | None:
    return next((s for s in await read_task_stats(client) if s.task_name == task_name), None)


async def test_a_listener_event_redelivered_after_its_handler_ran_is_not_handled_again(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    run = uuid.uuid4().hex
    name = f"test.rerun.{run[:12]}"  # its own statistics: the true counts are what we sent
    sent: list[TaskEvent] = []
    for n in range(10):
        task_id = f"{run}-{n}"
        sent += [
            TaskQueued(task_id=task_id, task_name=name, correlation_id=run),
            TaskStarted(task_id=task_id, task_name=name, worker_id="w", correlation_id=run),
            TaskSucceeded(
                task_id=task_id, task_name=name, worker_id="w", duration_ms=n, correlation_id=run
            ),
        ]
    ids = {e.event_id for e in sent}
    audit = audit_path(client.settings)
    marks = await client.key_value(MARKS_BUCKET)

    def counts_right(stats: TaskTypeStats | None) -> bool:
        return stats is not None and (stats.queued, stats.started, stats.succeeded) == (10, 10, 10)

    async with AckDropper(client.settings.nats_url[0]) as relay:
        first = start_workers(env={"ONEMANAGE_NATS_URL": relay.url, **SLOW_ACK})
        crashed = await first.ready(events)
        acks = [await publish_event(client, event) for event in sent]
        last = max(ack.seq for ack in acks)

        async def handled_once() -> TaskTypeStats | None:
            stats = await _stats(client, name)
            return stats if set(_audited(audit, run)) == ids and counts_right(stats) else None

        await eventually(handled_once, 60, lambda: f"audited {len(_audited(audit, run))}")
        # Handled, and each ack (sent after the handler's end) stopped here: whatever the
        # listener wrote before it is on the server. Crash within the ack wait, so the server
        # has every one of these deliveries as pending, none redelivered yet.
        wanted = {(durable, ack.seq) for durable in LISTENERS for ack in acks}
        await eventually(lambda: wanted <= relay.dropped, 30, "acks of every event dropped")
        kill_worker(first)
    for durable in LISTENERS:
        info = await client.js.consumer_info(EVENTS, durable)
        assert info.ack_floor is not None and (info.ack_floor.stream_seq or 0) < last, durable

    second = start_workers(env=SLOW_ACK)
    await second.ready(events)
    for durable in LISTENERS:
        await settled(client, EVENTS, durable, through=last)
    # Every redelivery settled, and none was handled again.
    audited = _audited(audit, run)
    assert set(audited) == ids
    assert set(audited.values()) == {1}
    stats = await _stats(client, name)
    assert counts_right(stats), stats

    def duplicates_told(e: BaseEvent) -> bool:
        return (
            isinstance(e, WorkerHeartbeat)
            and e.worker_id not in crashed  # the second worker's count
            and all(e.listeners.get(d) and e.listeners[d].duplicates > 0 for d in LISTENERS)
        )

    await events.wait_for(duplicates_told, timeout=30)
    assert await asyncio.to_thread(second.stop) == 0  # nothing is being handled any more
    assert set(_audited(audit, run).values()) == {1}
    stats = await _stats(client, name)
    assert counts_right(stats), stats
    assert stats is not None and stats.duration_ms_total == sum(range(10))
    for event in sent:  # what made the difference
        for durable in LISTENERS:
            assert (await marks.get(mark_key(durable, event.event_id))).value
