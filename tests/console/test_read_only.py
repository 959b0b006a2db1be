"""The console works as a user the server forbids to create durables, ack, delete or purge.

House rule 6, proved: a server with permissions, an admin that plays the
workers, and a watcher user that can only read stream and consumer figures
and create and pull ephemeral (nameless, ack-less) readers on EVENTS.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import nats.errors
import pytest
from nats.js.api import ConsumerConfig

from console.app import ConsoleApp, ConsoleOptions
from engine import embedded
from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.events.schemas import TaskQueued, TaskStarted, TaskSucceeded, WorkerHeartbeat
from engine.identity import utc_now
from engine.lanes import Lane
from engine.settings import Settings
from engine.streams import EVENTS, TASKS
from tests.console.test_app import SIZE
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.slow  # a nats-server of its own, with users and permissions

CONFIG = """
accounts {
  APP {
    jetstream: enabled
    users: [
      { user: admin, password: admin }
      { user: watcher, password: watcher, permissions: {
          publish: { allow: [
            "$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.NAMES",
            "$JS.API.CONSUMER.LIST.*", "$JS.API.CONSUMER.NAMES.*", "$JS.API.CONSUMER.INFO.*.*",
            "$JS.API.CONSUMER.CREATE.EVENTS", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.*"
          ] }
          subscribe: { allow: ["_INBOX.>"] }
      } }
    ]
  }
}
"""


def _connection(url: str, user: str, data_dir: Path) -> OneManageBroker:
    """Another process's connection, as the given user."""
    return create_broker(
        Settings(
            nats_url=[url], nats_user=user, nats_password=user, data_dir=data_dir, publish_timeout=1
        )
    )


@pytest.fixture
async def locked_server(tmp_path: Path) -> AsyncIterator[tuple[str, OneManageBroker]]:
    config = tmp_path / "server.conf"
    config.write_text(CONFIG)
    server = embedded.start(tmp_path / "server", detach=False, config=config)
    admin = _connection(server.url, "admin", tmp_path)
    await admin.startup()
    await admin.ensure_streams()
    yield server.url, admin
    await admin.shutdown()
    server.stop()


async def test_the_console_needs_no_more_than_reading(
    locked_server: tuple[str, OneManageBroker], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, admin = locked_server
    correlation = uuid.uuid4().hex
    lane = Lane(TASKS, "workers", "tasks.default.>", 4, 1)
    await admin.ensure_consumer(lane)  # a worker's durable, so lag has something to show
    for n in range(5):
        common = {"task_id": f"{correlation}-{n}", "task_name": "t", "correlation_id": correlation}
        for event in (
            TaskQueued(**common),
            TaskStarted(**common, worker_id="w:1"),
            TaskSucceeded(**common, worker_id="w:1", duration_ms=3),
        ):
            await admin.publish(event.subject, event.model_dump_json().encode(), event.event_id)
    beat = WorkerHeartbeat(worker_id="w:1", host="w", pid=1, started_at=utc_now(), interval_s=60)
    await admin.publish(beat.subject, beat.model_dump_json().encode(), beat.event_id)

    watcher = _connection(url, "watcher", tmp_path)
    caplog.set_level(logging.WARNING, logger="engine.connection")
    app = ConsoleApp(ConsoleOptions(since=timedelta(minutes=5)), connection=watcher)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len([r for r in app.state.rows.values()
                                         if r.correlation_id == correlation]) == 5)  # fmt: skip
        await until(pilot, lambda: app.state.streams and app.state.consumers and app.state.workers)
        assert {r.state for r in app.state.rows.values()} == {"succeeded"}
        assert "TASKS/workers" in app.state.consumers
        assert app.state.connection.connected

        # The lock holds: a durable, a purge or a delete are refused. The server answers a
        # request it forbids with an error to the connection (the error callback logs it),
        # and the request itself with nothing: it times out.
        def refused(subject: str) -> bool:
            return any(
                f'permissions violation for publish to "{subject}"' in r.getMessage()
                for r in caplog.records
            )

        denied = [
            ("$js.api.consumer.durable.create.events.sneaky",
             lambda: watcher.js.add_consumer(EVENTS, ConsumerConfig(durable_name="sneaky"))),
            ("$js.api.stream.purge.events", lambda: watcher.js.purge_stream(EVENTS)),
            ("$js.api.stream.msg.delete.events", lambda: watcher.js.delete_msg(EVENTS, 1)),
        ]  # fmt: skip
        for subject, call in denied:
            with pytest.raises(nats.errors.TimeoutError):
                await call()
            await eventually(lambda: refused(subject), 10, f"no denial of {subject} logged")  # noqa: B023
        caplog.clear()  # the three denials above are ours; the console made none

        # More polls and reads as the locked-down user: two full polls of the figures, and
        # one more event read from the history.
        polls: set[object] = set()

        def polled_twice() -> bool:
            if EVENTS in app.state.streams:
                polls.add(app.state.streams[EVENTS].seen_at)
            return len(polls) >= 3

        late = TaskQueued(task_id=f"{correlation}-late", task_name="t", correlation_id=correlation)
        await admin.publish(late.subject, late.model_dump_json().encode(), late.event_id)
        await until(pilot, lambda: late.task_id in app.state.rows, 30)
        await until(pilot, polled_twice, 30)
    denials = [r for r in caplog.records if "ermission" in r.getMessage()]
    assert denials == [], [r.getMessage() for r in denials]
    info = await admin.js.stream_info(EVENTS)
    assert info.state.messages == 17  # nothing purged or deleted (16 before, the late one)
    assert [c.name for c in await admin.js.consumers_info(TASKS)] == ["workers"]
    durables = [c for c in await admin.js.consumers_info(EVENTS) if c.config.durable_name]
    assert durables == []
