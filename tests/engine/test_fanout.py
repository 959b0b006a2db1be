"""Event tasks: each listener has its own durable, so every listener gets every event."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from engine.broker import OneManageBroker
from engine.events.audit import audit_path
from engine.events.publisher import publish_event
from tests.support.harness import EventCollector, WorkerProcess
from tests.support.tasks import ProbeEvent

EVENTS = 100


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


async def _until(check: Callable[[], bool], timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)


async def test_every_listener_gets_every_event_once(
    client: OneManageBroker,
    data_dir: Path,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)  # each listener's durable is shared by both
    await worker.ready(events)
    run = uuid.uuid4().hex
    sent = [ProbeEvent(n=n, correlation_id=run) for n in range(EVENTS)]
    for event in sent:
        await publish_event(client, event)
    duplicate = await publish_event(client, sent[0])  # the same event_id again
    assert duplicate.duplicate

    ids = {event.event_id for event in sent}
    probe_a, probe_b = data_dir / "probe-a.log", data_dir / "probe-b.log"
    audit = audit_path(client.settings)
    await _until(
        lambda: (
            len(_lines(probe_a, run)) == EVENTS
            and len(_lines(probe_b, run)) == EVENTS
            and len(_audited(audit, run)) == EVENTS
        )
    )
    await asyncio.sleep(client.settings.ack_wait + 1)  # room for any wrong redelivery
    for seen in (_lines(probe_a, run), _lines(probe_b, run), _audited(audit, run)):
        assert set(seen) == ids
        assert set(seen.values()) == {1}
    assert worker.stop() == 0
