"""The findings of ``onemanage check``: one per fact, each ok, a warning or critical.

A check that meets a fault says what it met in one line (a full store, a
refused publish, a lost listener) instead of raising: a probe or a pager reads
the exit code and the lines, never a traceback. It only reads (the viewer
role, engine.roles): that workers run and pull is what their heartbeats say,
lane by lane, so a check never puts work on the system it looks at.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from engine import alerts, monitor
from engine.app import broker
from engine.discards import carried_past_its_own
from engine.events.schemas import TaskDeadLettered, TaskFailed, TaskSucceeded, WorkerHeartbeat
from engine.redaction import redact_netloc
from engine.streams import (
    EVENTS,
    IMMUTABLE_FIELDS,
    MUTABLE_FIELDS,
    bucket_config,
    drift,
    wanted_buckets,
    wanted_streams,
)

# Nagios plugin levels, which are also the exit codes of ``onemanage check``.
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
_LABELS = {OK: "ok  ", WARNING: "WARN", CRITICAL: "CRIT", UNKNOWN: "UNKN"}
NAMES = {OK: "ok", WARNING: "warning", CRITICAL: "critical", UNKNOWN: "unknown"}


@dataclass(frozen=True)
class Finding:
    level: int
    text: str

    @property
    def label(self) -> str:
        return _LABELS[self.level]

    def as_dict(self) -> dict[str, str | int]:
        return {"level": NAMES[self.level], "code": self.level, "text": self.text}


def worst(findings: list[Finding]) -> int:
    """The exit code of a check: critical over unknown over warning over ok (Nagios)."""
    levels = {finding.level for finding in findings}
    for level in (CRITICAL, UNKNOWN, WARNING):
        if level in levels:
            return level
    return OK


def _shown(changes: dict[str, tuple[object, object]]) -> str:
    return ", ".join(
        f"{field} {have!r} (configured: {want!r})" for field, (have, want) in changes.items()
    )


def _as_is(want: StreamConfig, have: StreamConfig) -> StreamConfig:
    return want


async def _configuration() -> AsyncIterator[Finding]:
    """Each stream and bucket present, with the configuration this process has, field by field.

    A worker puts drifted limits back when it starts (engine.streams); retention
    and storage it refuses to change, so drift there is critical.
    """
    settings = broker.settings
    targets: list[tuple[str, Callable[[StreamConfig], StreamConfig]]] = [
        (str(want.name), functools.partial(_as_is, want)) for want in wanted_streams(settings)
    ]
    for bucket, ttl, direct in wanted_buckets(settings):
        spec = functools.partial(bucket_config, ttl=ttl, direct=direct, settings=settings)
        targets.append((f"KV_{bucket}", spec))
    for name, target_of in targets:
        try:
            have = (await broker.js.stream_info(name)).config
        except NotFoundError:
            yield Finding(
                CRITICAL, f"stream {name} missing: no worker has started against this server"
            )
            continue
        target = target_of(have)
        fixed = drift(have, target, IMMUTABLE_FIELDS)
        if fixed:
            yield Finding(
                CRITICAL,
                f"stream {name}: {_shown(fixed)}; a worker will not start on it "
                "(docs/troubleshooting.md)",
            )
        changed = drift(have, target, MUTABLE_FIELDS)
        if changed:
            yield Finding(
                WARNING,
                f"stream {name} drifted: {_shown(changed)}; the next worker to start puts it back",
            )
        if not fixed and not changed:
            yield Finding(OK, f"stream {name} as configured")


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


async def _against_thresholds() -> AsyncIterator[Finding]:
    """Lag, redeliveries, dead letters and failure rates, each against its threshold."""
    try:
        limits = alerts.load_thresholds(broker.settings)
    except alerts.ThresholdsError as exc:
        yield Finding(UNKNOWN, f"thresholds not read: {exc}")
        return
    judged: list[tuple[int, str]] = []
    for c in await monitor.consumer_figures(broker):
        durable = f"{c.stream}/{c.name}"
        judged.append(alerts.consumer_lag(durable, c.pending, limits))
        judged.append(alerts.redelivered(durable, c.redelivered, limits))
    window = timedelta(seconds=limits.window_s)
    dead = await monitor.recent_events(broker, window, "events.task.dead_lettered")
    judged.append(
        alerts.dead_letters(len([e for e in dead if isinstance(e, TaskDeadLettered)]), limits)
    )
    finished: dict[str, list[int]] = {}
    for subject in ("events.task.succeeded", "events.task.failed"):
        for event in await monitor.recent_events(broker, window, subject):
            if isinstance(event, TaskSucceeded):
                finished.setdefault(event.task_name, [0, 0])[1] += 1
            elif isinstance(event, TaskFailed) and not event.will_retry:
                finished.setdefault(event.task_name, [0, 0])[0] += 1
    for name, (failed, succeeded) in sorted(finished.items()):
        judged.append(alerts.failure_rate(name, failed, succeeded, limits))
    for level, text in judged:
        if level != OK:
            yield Finding(level, text)
    calm = len([1 for level, _ in judged if level == OK])
    yield Finding(OK, f"{calm} of {len(judged)} figures within their thresholds")


async def findings() -> AsyncIterator[Finding]:
    """Everything ``onemanage check`` looks at, in the order a person would."""
    started = time.perf_counter()
    await broker.nc.flush()
    where = redact_netloc(broker.nc.connected_url.netloc) if broker.nc.connected_url else "?"
    rtt = (time.perf_counter() - started) * 1000
    yield Finding(OK, f"connected to {where} (round trip {rtt:.1f} ms)")
    async for finding in _configuration():
        yield finding
    async for finding in _listeners_behind_discards():
        yield finding
    for finding in _workers(await monitor.live_workers(broker)):
        yield finding
    async for finding in _against_thresholds():
        yield finding
