"""Event tasks: each listener has its own durable, so every listener gets every event."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.broker import OneManageBroker
from engine.events.audit import audit_path
from engine.events.publisher import publish_event
from engine.streams import EVENTS as STREAM
from tests.support.harness import EventCollector, WorkerProcess, deliveries, settled
from tests.support.tasks import ProbeEvent
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

EVENTS = 100
PROBES = ("probe-a", "probe-b")  # the test listeners of events.test.>: only this test's events


def _lines(path: Path, run: str) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line.endswith(run))


def _audited(path: Path, run: str) -> Counter[str]:
    """Event ids of ``run`` in the audit log; a line still being written is not counted yet."""
    seen: Counter[str] = Counter()
    if path.exists():
        for line in path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # a worker is appending it right now
            record = json.loads(line)
            if record.get("correlation_id") == run:
                seen[record["event_id"]] += 1
    return seen


async def test_every_listener_gets_every_event_once(
    client: OneManageBroker,
    data_dir: Path,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)  # each listener's durable is shared by both
    await worker.ready(events)
    before = {probe: deliveries(await settled(client, STREAM, probe)) for probe in PROBES}
    run = uuid.uuid4().hex
    sent = [ProbeEvent(n=n, correlation_id=run) for n in range(EVENTS)]
    acks = [await publish_event(client, event) for event in sent]
    duplicate = await publish_event(client, sent[0])  # the same event_id again
    assert duplicate.duplicate
    last = max(ack.seq for ack in acks)

    ids = {event.event_id for event in sent}
    probe_a, probe_b = data_dir / "probe-a.log", data_dir / "probe-b.log"
    audit = audit_path(client.settings)

    def counts() -> tuple[int, int, int]:
        return len(_lines(probe_a, run)), len(_lines(probe_b, run)), len(_audited(audit, run))

    await eventually(
        lambda: counts() == (EVENTS, EVENTS, EVENTS), 240, lambda: f"handled {counts()}"
    )  # audit-log may first work through what earlier tests stored while no worker ran
    # Every delivery acked, and each probe delivered each event once: none came twice...
    for probe in PROBES:
        assert deliveries(await settled(client, STREAM, probe)) - before[probe] == EVENTS
    await settled(client, STREAM, "audit-log", through=last)
    # ...and none is being handled still: with the workers gone the files are final.
    assert await asyncio.to_thread(worker.stop) == 0
    for seen in (_lines(probe_a, run), _lines(probe_b, run), _audited(audit, run)):
        assert set(seen) == ids
        assert set(seen.values()) == {1}
