"""The console works as a user the server forbids to create durables, ack, delete or purge.

House rule 6, proved: a server with permissions, an admin that plays the
workers, and a watcher user that can only read stream and consumer figures
and read EVENTS and the task statistics by direct get: it may create no
consumer at all, so it cannot leave one behind nor pull from a worker's.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from nats.js.api import ConsumerConfig

from console.app import ConsoleApp, ConsoleOptions
from engine import embedded
from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.errors import PermissionDeniedError
from engine.events.schemas import TaskQueued, TaskStarted, TaskSucceeded, WorkerHeartbeat
from engine.events.stats import fold_task_event, read_task_stats
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
            "$JS.API.DIRECT.GET.EVENTS", "$JS.API.DIRECT.GET.KV_onemanage_task_stats"
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

        # The lock holds: a consumer (durable or not), a pull from a worker's durable, a purge
        # or a delete are refused. The server answers a request it forbids with an error to
        # the connection (the error callback logs it), and the request itself with nothing:
        # the engine's connection names the refusal when it times out.
        def refused(subject: str) -> bool:
            return any(
                f'permissions violation for publish to "{subject}"' in r.getMessage()
                for r in caplog.records
            )

        pull = json.dumps({"batch": 1, "expires": 500_000_000}).encode()
        denied = [
            ("$js.api.consumer.durable.create.events.sneaky",
             lambda: watcher.js.add_consumer(EVENTS, ConsumerConfig(durable_name="sneaky"))),
            ("$js.api.consumer.create.events",
             lambda: watcher.js.add_consumer(EVENTS, ConsumerConfig())),
            ("$js.api.consumer.msg.next.tasks.workers",
             lambda: watcher.nc.request(
                 f"$JS.API.CONSUMER.MSG.NEXT.{TASKS}.workers", pull, timeout=1)),
            ("$js.api.consumer.msg.next.events.task-stats",
             lambda: watcher.nc.request(
                 f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS}.task-stats", pull, timeout=1)),
            ("$js.api.stream.purge.events", lambda: watcher.js.purge_stream(EVENTS)),
            ("$js.api.stream.msg.delete.events", lambda: watcher.js.delete_msg(EVENTS, 1)),
        ]  # fmt: skip
        for subject, call in denied:
            with pytest.raises(PermissionDeniedError):
                await call()
            await eventually(lambda: refused(subject), 10, f"no denial of {subject} logged")  # noqa: B023
        caplog.clear()  # the denials above are ours; the console made none

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

        # The task statistics (``onemanage status``) are read by direct get as well.
        await fold_task_event(admin, late)
        assert [s.task_name for s in await read_task_stats(watcher)] == ["t"]
    denials = [r for r in caplog.records if "ermission" in r.getMessage()]
    assert denials == [], [r.getMessage() for r in denials]
    info = await admin.js.stream_info(EVENTS)
    assert info.state.messages == 17  # nothing purged or deleted (16 before, the late one)
    assert [c.name for c in await admin.js.consumers_info(TASKS)] == ["workers"]
    assert await admin.js.consumers_info(EVENTS) == []  # the console read it with none
