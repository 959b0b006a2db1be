"""The findings of ``onemanage check``: one per fact, each ok, a warning or critical.

A check that meets a fault says what it met in one line (a full store, a
refused publish, a lost listener) instead of raising: a probe or a pager reads
the exit code and the lines, never a traceback. It only reads (the viewer
role, engine.roles): that workers run and pull is what their heartbeats say,
lane by lane, so a check never puts work on the system it looks at.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from engine import monitor
from engine.app import broker
from engine.discards import carried_past_its_own
from engine.events.schemas import WorkerHeartbeat
from engine.redaction import redact_netloc
from engine.streams import EVENTS, TASKS

OK, WARNING, CRITICAL = 0, 1, 2
_LABELS = {OK: "ok  ", WARNING: "WARN", CRITICAL: "CRIT"}


@dataclass(frozen=True)
class Finding:
    level: int
    text: str

    @property
    def label(self) -> str:
        return _LABELS[self.level]


async def _listeners_behind_discards() -> AsyncIterator[Finding]:
    """A listener whose next event EVENTS already discarded is losing events right now."""
    events = await monitor.stream_figures(broker, EVENTS)
    if events is None:
        return
    for consumer in await monitor.consumer_figures(broker):
        if consumer.stream != EVENTS or not consumer.deliveries:
            continue
        gap = events.first_seq - 1 - consumer.delivered
        if gap > 0 and carried_past_its_own(consumer.filter_subject, consumer.pending):
            yield Finding(
                CRITICAL,
                f"listener {consumer.name} is {gap} event(s) behind what EVENTS still holds: "
                "they were discarded at its limits before it read them",
            )


def _workers(workers: list[WorkerHeartbeat]) -> list[Finding]:
    if not workers:
        text = (
            "no live worker (no heartbeat in the last intervals): start `onemanage worker`, "
            "or see its log (a full JetStream store stops every publish, heartbeats too)"
        )
        return [Finding(CRITICAL, text)]
    degraded = [beat for beat in workers if beat.degraded_lanes]
    found = [Finding(OK, f"{len(workers)} live worker(s), {len(degraded)} degraded")]
    for beat in workers:
        if beat.store_error:
            found.append(
                Finding(CRITICAL, f"worker {beat.worker_id} cannot store: {beat.store_error}")
            )
    for beat in degraded:
        lanes = ", ".join(
            f"{name} ({beat.lane_health[name].last_error or 'not pulling'})"
            for name in beat.degraded_lanes
        )
        found.append(Finding(WARNING, f"worker {beat.worker_id} degraded: {lanes}"))
    for durable, count in sorted(monitor.missed_events(workers).items()):
        found.append(
            Finding(
                WARNING,
                f"listener {durable} missed {count} event(s): EVENTS discarded them at its limits "
                "(raise ONEMANAGE_EVENTS_MAX_BYTES, or make the listener faster)",
            )
        )
    return found


async def findings() -> AsyncIterator[Finding]:
    """Everything ``onemanage check`` looks at, in the order a person would."""
    started = time.perf_counter()
    await broker.nc.flush()
    where = redact_netloc(broker.nc.connected_url.netloc) if broker.nc.connected_url else "?"
    rtt = (time.perf_counter() - started) * 1000
    yield Finding(OK, f"connected to {where} (round trip {rtt:.1f} ms)")
    for name in (TASKS, EVENTS):
        if await monitor.stream_figures(broker, name) is None:
            yield Finding(
                CRITICAL, f"stream {name} missing: no worker has started against this server"
            )
        else:
            yield Finding(OK, f"stream {name}")
    async for finding in _listeners_behind_discards():
        yield finding
    for finding in _workers(await monitor.live_workers(broker)):
        yield finding
