"""The findings of ``onemanage check``: one per fact, each ok, a warning or critical.

A check that meets a fault says what it met in one line (a full store, a
refused publish, a lost listener) instead of raising: a probe or a pager reads
the exit code and the lines, never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from engine import monitor
from engine.app import broker
from engine.discards import carried_past_its_own
from engine.errors import PublishError, StoreFullError
from engine.events.schemas import WorkerHeartbeat
from engine.redaction import redact_netloc
from engine.streams import EVENTS, TASKS
from engine.tasks.diagnostics import PING_TASK

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
        text = "no live worker (no heartbeat in the last intervals): start `onemanage worker`"
        return [Finding(CRITICAL, text)]
    degraded = [beat for beat in workers if beat.degraded_lanes]
    found = [Finding(OK, f"{len(workers)} live worker(s), {len(degraded)} degraded")]
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


async def _ping(timeout: float) -> Finding:
    from taskiq.kicker import AsyncKicker

    started = time.perf_counter()
    kicker: AsyncKicker[..., Any] = AsyncKicker(PING_TASK, broker, {})
    try:
        task = await kicker.kiq("check")
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, PublishError) else exc
        what = "the JetStream store is full" if isinstance(cause, StoreFullError) else "refused"
        return Finding(CRITICAL, f"ping task not accepted ({what}): {cause}")
    try:
        result = await task.wait_result(check_interval=0.02, timeout=timeout)
    except Exception as exc:
        return Finding(CRITICAL, f"ping task did not come back within {timeout:.0f}s: {exc}")
    elapsed = (time.perf_counter() - started) * 1000
    where = f"{result.return_value['host']}:{result.return_value['pid']}"
    return Finding(OK, f"ping ran on {where} ({elapsed:.0f} ms round trip)")


async def findings(timeout: float) -> AsyncIterator[Finding]:
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
    workers = await monitor.live_workers(broker)
    for finding in _workers(workers):
        yield finding
    if workers:
        yield await _ping(timeout)
