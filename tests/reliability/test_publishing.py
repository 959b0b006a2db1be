"""Publishing survives elections and outages, and says what it knows when it cannot.

During an election JetStream answers "no response from stream" at once;
here a stream that does not exist yet plays that part on the session's one
server (the cluster runs are in test_cluster.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.js.api import StreamConfig
from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker

from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.errors import PublishError, TransientError, is_transient
from engine.publishing import publish
from engine.results import await_result
from engine.settings import Settings
from engine.streams import TASKS
from engine.tasks.workflow import WorkflowStepError
from tests.conftest import NatsServer
from tests.support.harness import EventCollector, WorkerProcess
from tests.support.waiting import eventually


class _FirstRetry(logging.Handler):
    """Sets an event when the publisher logs that it will try again."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "not stored yet" in record.getMessage():
            self.seen.set()


async def test_a_publish_waits_out_a_stream_without_a_leader(client: OneManageBroker) -> None:
    """Landed main: NoStreamResponseError failed the kick at once (30 of 783 lost events)."""
    name = f"ELECT_{uuid.uuid4().hex[:8]}"
    retrying = _FirstRetry()
    logging.getLogger("engine.publishing").addHandler(retrying)
    try:
        sent = asyncio.create_task(
            publish(client.nc, f"{name.lower()}.x", b"kept", msg_id="elect-1", deadline=30)
        )
        await asyncio.wait_for(retrying.seen.wait(), 10)  # it met "no response" and goes on
        await client.js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
        ack = await asyncio.wait_for(sent, 30)
        assert ack.stream == name and not ack.duplicate
        assert (await client.js.stream_info(name)).state.messages == 1
    finally:
        logging.getLogger("engine.publishing").removeHandler(retrying)
        await client.js.delete_stream(name)


async def test_after_the_deadline_a_refused_publish_says_it_was_not_stored(
    client: OneManageBroker,
) -> None:
    with pytest.raises(PublishError) as failed:
        await publish(client.nc, f"nowhere.{uuid.uuid4().hex}", b"x", msg_id="n-1", deadline=0.5)
    assert failed.value.outcome == "not_stored"
    assert "it was not stored" in str(failed.value)
    assert isinstance(failed.value.__cause__, nats.js.errors.NoStreamResponseError)


async def test_a_publish_that_timed_out_says_its_outcome_is_unknown(
    client: OneManageBroker,
) -> None:
    """A request that got no answer may have been stored: the error must not say "failed"."""
    subject = f"silent.{uuid.uuid4().hex}"
    silent = await client.nc.subscribe(subject)  # takes the request, never answers
    try:
        with pytest.raises(PublishError) as failed:
            await publish(client.nc, subject, b"x", msg_id="s-1", deadline=1.0, timeout=0.3)
    finally:
        await silent.unsubscribe()
    assert failed.value.outcome == "unknown"
    assert "outcome is unknown" in str(failed.value)


async def test_tasks_outside_a_lane_are_refused_by_the_server(client: OneManageBroker) -> None:
    """Landed main: a message on tasks.foo was stored in TASKS, read by no durable."""
    before = (await client.js.stream_info(TASKS)).state.last_seq
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await client.js.publish("tasks.foo", b"{}")
    assert (await client.js.stream_info(TASKS)).state.last_seq == before


def _raised(outer: type[Exception], inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as cause:
            raise outer() from cause
    except Exception as wrapped:
        return wrapped


def test_errors_that_wrap_an_outage_are_classified_by_their_cause() -> None:
    """Landed main: taskiq's SendTaskError around a PublishError failed workflows for good."""
    lost = PublishError("not stored", subject="tasks.default.x", msg_id="m")
    assert is_transient(_raised(SendTaskError, lost))
    assert is_transient(_raised(SendTaskError, TransientError("later")))
    assert not is_transient(_raised(SendTaskError, ValueError("a bug")))
    # One of the engine's own errors says what it is, whatever caused it.
    timed_out = WorkflowStepError("parse", "step_timeout", "no result")
    timed_out.__cause__ = TimeoutError()
    assert not is_transient(timed_out)


async def test_a_kick_cut_off_by_an_outage_says_it_may_still_run(
    nats_server: NatsServer, client: OneManageBroker, tmp_path: Path
) -> None:
    """Landed main: a kick that reported failure to its caller after an outage ran anyway."""
    worker = WorkerProcess(tmp_path)
    impatient = create_broker(Settings(nats_url=[nats_server.url], publish_deadline=1.5))
    await impatient.startup()
    try:
        async with EventCollector(client) as events:
            await worker.ready(events)
        nats_server.kill()
        await eventually(lambda: not impatient.is_connected, 30, "no outage seen")
        kicker: AsyncKicker[..., Any] = AsyncKicker("test.add", impatient, {})
        with pytest.raises(SendTaskError) as raised:
            await kicker.with_task_id(task_id := uuid.uuid4().hex).kiq(2, 3)
        cause = raised.value.__cause__
        assert isinstance(cause, PublishError) and cause.outcome == "unknown", cause
        assert task_id in str(cause) and "may have been stored" in str(cause)
        nats_server.restart()
        # The client held the message while reconnecting and sent it: it runs, as it said.
        result = await await_result(client, task_id, 60)
        assert result.return_value == 5
    finally:
        if not nats_server.server.healthy():
            nats_server.restart()
        await impatient.shutdown()
        worker.stop()
