"""A listener reads compatible versions, counts and skips the rest, and keeps going."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, WorkerHeartbeat, new_id
from engine.streams import EVENTS
from tests.support.harness import EventCollector, WorkerProcess, settled
from tests.support.tasks import ProbeEvent
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def _probe(run: str, version: str, **extra: object) -> tuple[str, bytes]:
    data = json.loads(ProbeEvent(n=1, correlation_id=run).model_dump_json())
    data.update(event_id=new_id(), event_version=version, **extra)
    return data["event_id"], json.dumps(data).encode()


def _handled(path: Path, run: str) -> dict[str, str]:
    if not path.exists():
        return {}
    lines = path.read_text().splitlines(keepends=True)
    rows = [line.split() for line in lines if line.endswith("\n")]  # not one being written
    return {row[0]: row[1] for row in rows if row[2] == run}


async def test_versions_and_garbage(
    client: OneManageBroker,
    data_dir: Path,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    (worker_id,) = await worker.ready(events)
    run = uuid.uuid4().hex

    async def publish_raw(event_id: str, payload: bytes) -> None:
        await client.publish("events.test.probe", payload, msg_id=event_id)

    newer_minor, newer_payload = _probe(run, "1.9", field_from_the_future={"x": 1})
    new_major, major_payload = _probe(run, "2.0")
    after, after_payload = _probe(run, "1.2")
    await publish_raw(newer_minor, newer_payload)
    await publish_raw(new_major, major_payload)
    await publish_raw(new_id(), b"\x00 this is not json")
    await publish_raw(new_id(), b'{"event_type": "test.probe", "event_version": "1.2"}')
    await publish_raw(after, after_payload)

    probe_a = data_dir / "probe-a.log"
    await eventually(lambda: after in _handled(probe_a, run), 60, "the last probe never handled")

    def counted(event: BaseEvent) -> bool:
        """A heartbeat by which both listeners got through all five messages."""
        if not (isinstance(event, WorkerHeartbeat) and event.worker_id == worker_id):
            return False
        for name in ("probe-a", "probe-b"):
            probe = event.listeners[name]
            skipped = probe.skipped
            if not (
                skipped.get("incompatible_version", 0) >= 1
                and skipped.get("not_json", 0) >= 1
                and skipped.get("invalid", 0) >= 1
                and probe.handled + probe.failed >= 2
            ):
                return False
        return True

    (beat,) = (await events.wait_for(counted, timeout=30))[:1]
    for name in ("probe-a", "probe-b"):  # all five acked: none can come again
        await settled(client, EVENTS, name)
    handled = _handled(probe_a, run)
    assert handled.get(newer_minor) == "1.9"  # a newer minor is handled
    assert after in handled  # the listener kept going after the bad ones
    assert new_major not in handled
    assert isinstance(beat, WorkerHeartbeat)
    probe = beat.listeners["probe-a"]
    assert probe.skipped == {"incompatible_version": 1, "not_json": 1, "invalid": 1}
    assert probe.handled == 2
    assert probe.failed == 0
    # The other listener of the same events counted the same, through its own durable.
    assert beat.listeners["probe-b"].skipped == probe.skipped
    assert (beat.listeners["probe-b"].handled, beat.listeners["probe-b"].failed) == (2, 0)
    assert worker.stop() == 0
