"""The findings of ``onemanage check``: one per fact, each ok, a warning or critical.

A check that meets a fault says what it met in one line (a full store, a
refused publish, a lost listener) instead of raising: a probe or a pager reads
the exit code and the lines, never a traceback. It only reads (the viewer
role, engine.roles): that workers run and pull is what their heartbeats say,
lane by lane, so a check never puts work on the system it looks at.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from engine import alertbook, alerts, counts, monitor
from engine.app import broker
from engine.direct import DirectGetError
from engine.discards import carried_past_its_own
from engine.events import windows
from engine.events.schemas import WorkerHeartbeat
from engine.events.stats import read_task_stats
from engine.liveness import Liveness, LostWorker
from engine.redaction import redact_netloc
from engine.streams import (
    EVENTS,
    IMMUTABLE_FIELDS,
    MUTABLE_FIELDS,
    TASKS,
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
    """One fact. ``rule`` and ``about`` name it for the alert evaluator (engine.alerting):
    a finding with a rule is an alert while it is not ok."""

    level: int
    text: str
    rule: str = ""
    about: str = ""
    quiet: bool = False  # an ok figure among many: in --json and to the evaluator, not a line

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.about}"

    @property
    def label(self) -> str:
        return _LABELS[self.level]

    def as_dict(self) -> dict[str, str | int]:
        shown: dict[str, str | int] = {"level": NAMES[self.level], "code": self.level}
        if self.rule:
            shown |= {"rule": self.rule, "about": self.about}
        return shown | {"text": self.text}


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


async def _jetstream(t: alerts.Thresholds) -> Finding:
    """JetStream answers for this account, and how much of its storage is left."""
    reply = await broker.nc.request("$JS.API.INFO", b"", timeout=broker.settings.publish_timeout)
    info = json.loads(reply.data)
    if "error" in info:
        why = info["error"].get("description", info["error"])
        return Finding(CRITICAL, f"JetStream not available to this account: {why}", "jetstream")
    limit = int(info.get("limits", {}).get("max_storage", -1))
    used, reserved = int(info.get("storage", 0)), int(info.get("reserved_storage", 0))
    level, text = alerts.storage_used(used, limit, reserved, t)
    return Finding(level, text, "jetstream")


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
                CRITICAL,
                f"stream {name} missing: no worker has started against this server",
                "stream",
                name,
            )
            continue
        target = target_of(have)
        fixed = drift(have, target, IMMUTABLE_FIELDS)
        if fixed:
            yield Finding(
                CRITICAL,
                f"stream {name}: {_shown(fixed)}; a worker will not start on it "
                "(docs/troubleshooting.md)",
                "stream",
                name,
            )
        changed = drift(have, target, MUTABLE_FIELDS)
        if changed:
            yield Finding(
                WARNING,
                f"stream {name} drifted: {_shown(changed)}; the next worker to start puts it back",
                "stream",
                name,
            )
        if not fixed and not changed:
            yield Finding(OK, f"stream {name} as configured", "stream", name)


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
                "listener_behind",
                consumer.name,
            )


def _workers(
    workers: list[WorkerHeartbeat], lost: list[LostWorker], t: alerts.Thresholds
) -> list[Finding]:
    found = []
    if not workers:
        text = (
            "no live worker (no heartbeat in the last intervals): start `onemanage worker`, "
            "or see its log (a full JetStream store stops every publish, heartbeats too)"
        )
        found.append(Finding(CRITICAL, text, "workers"))
    else:
        degraded = [beat for beat in workers if beat.degraded_lanes]
        text = f"{len(workers)} live worker(s), {len(degraded)} degraded, {len(lost)} lost"
        found.append(Finding(OK, text, "workers"))
    for beat in workers:
        wid = beat.worker_id
        if beat.store_error:
            text = f"worker {wid} cannot store: {beat.store_error}"
            found.append(Finding(CRITICAL, text, "worker_store", wid))
        else:
            found.append(Finding(OK, f"worker {wid} can store", "worker_store", wid, True))
        if beat.degraded_lanes:
            lanes = ", ".join(
                f"{name} ({beat.lane_health[name].last_error or 'not pulling'})"
                for name in beat.degraded_lanes
            )
            text = f"worker {wid} degraded: {lanes}"
            found.append(Finding(WARNING, text, "worker_degraded", wid))
        else:
            text = f"worker {wid}: every lane pulls"
            found.append(Finding(OK, text, "worker_degraded", wid, True))
        text = f"worker {wid} beats (every {beat.interval_s:g} s)"
        found.append(Finding(OK, text, "worker_lost", wid, True))
    for gone in lost:
        level, text = alerts.worker_lost(gone.beat.worker_id, gone.silent_s, t)
        found.append(Finding(level, text, "worker_lost", gone.beat.worker_id))
    for durable, count in sorted(monitor.missed_events(workers).items()):
        text = (
            f"listener {durable} missed {count} event(s): EVENTS discarded them at its limits "
            "(raise ONEMANAGE_EVENTS_MAX_BYTES, or make the listener faster)"
        )
        found.append(Finding(WARNING, text, "missed_events", durable))
    return found


async def _against_thresholds(t: alerts.Thresholds, liveness: Liveness) -> AsyncIterator[Finding]:
    """Each key figure against its threshold: the ones not ok, then how many are."""
    judged: list[Finding] = []

    def judge(rule: str, about: str, outcome: tuple[int, str]) -> None:
        judged.append(Finding(outcome[0], outcome[1], rule, about))

    for c in await monitor.consumer_figures(broker):
        durable = f"{c.stream}/{c.name}"
        judge("consumer_lag", durable, alerts.consumer_lag(durable, c.pending, t))
        judge("redelivered", durable, alerts.redelivered(durable, c.redelivered, t))
    now = datetime.now(UTC)
    tasks = await monitor.stream_figures(broker, TASKS)
    if tasks is not None and tasks.messages and tasks.first_ts is not None:
        age = max((now - tasks.first_ts).total_seconds(), 0.0)
        judge("oldest_pending", TASKS, alerts.oldest_pending(age, t))
    elif tasks is not None:
        judge("oldest_pending", TASKS, (OK, "no task waiting or running"))
    stats = await read_task_stats(broker)
    hours = {s.task_name: windows.window(s.recent, now, t.window_s) for s in stats}
    dead = sum(hour.dead_lettered for hour in hours.values())
    judge("dead_letters", "", alerts.dead_letters(dead, t))
    for s in stats:
        hour = hours[s.task_name]
        if hour.succeeded or hour.failed:
            outcome = alerts.failure_rate(s.task_name, hour.failed, hour.succeeded, t)
            judge("failure_rate", s.task_name, outcome)
        recent = windows.window(s.recent, now, t.percentile_window_s)
        runs = sum(recent.run.values())
        if runs:
            outcome = alerts.run_p95(s.task_name, recent.run_ms(95), runs, t)
            judge("run_p95", s.task_name, outcome)
    judge("stuck_workflows", "", alerts.stuck_workflows(liveness.stuck(now), t))
    for finding in judged:
        if finding.level != OK:
            yield finding
    # The all-time counts (engine.counts), the figures status and the console show: a
    # line of their own only when a threshold tripped, to read the failures beside.
    tripped = any(finding.level != OK for finding in judged)
    yield Finding(OK, f"counts: {counts.counts(stats).line()}", quiet=not tripped)
    calm = len([1 for finding in judged if finding.level == OK])
    yield Finding(OK, f"{calm} of {len(judged)} figures within their thresholds")
    for finding in judged:
        if finding.level == OK:
            yield dataclasses.replace(finding, quiet=True)


async def _evaluator(t: alerts.Thresholds) -> AsyncIterator[Finding]:
    """Whether a worker process still evaluates alerts: its book is written every look."""
    try:
        book, written = await alertbook.read_book(broker)
    except DirectGetError as exc:
        yield Finding(WARNING, f"alert evaluator's book unreadable: {exc}", "evaluator")
        return
    raised = len(book.raised())
    if written is None:
        yield Finding(OK, "alert evaluator: no look yet", "evaluator")
        return
    silent = max((datetime.now(UTC) - written).total_seconds(), 0.0)
    if silent > alertbook.lease_s(t.evaluate_every_s):
        text = (
            f"alert evaluator silent for {silent:.0f} s (last {book.evaluator}): no worker "
            f"process raises or clears alerts; {raised} were raised then"
        )
        yield Finding(WARNING, text, "evaluator")
        return
    text = f"alert evaluator {book.evaluator}: last look {silent:.0f} s ago, {raised} raised"
    yield Finding(OK, text, "evaluator")


def fresh_liveness(t: alerts.Thresholds) -> Liveness:
    """What one check reads: heartbeats until gone, workflows of the last window."""
    now = datetime.now(UTC)
    beats = now - timedelta(seconds=max(t.worker_gone_after_s, 120.0))
    return Liveness(beats, now - timedelta(seconds=t.window_s))


async def findings(
    limits: alerts.Thresholds | None = None, liveness: Liveness | None = None
) -> AsyncIterator[Finding]:
    """Everything ``onemanage check`` looks at, in the order a person would.

    ``limits`` None reads the thresholds file; one it cannot use is an
    unknown finding, and the figures are then not judged. The evaluator
    passes its own ``liveness`` so each look reads only what is new.
    """
    problem = None
    if limits is None:
        try:
            limits = alerts.load_thresholds(broker.settings)
        except alerts.ThresholdsError as exc:
            problem = exc
    t = limits or alerts.Thresholds()
    live = liveness or fresh_liveness(t)
    started = time.perf_counter()
    await broker.nc.flush()
    where = redact_netloc(broker.nc.connected_url.netloc) if broker.nc.connected_url else "?"
    rtt = (time.perf_counter() - started) * 1000
    yield Finding(OK, f"connected to {where} (round trip {rtt:.1f} ms)")
    yield await _jetstream(t)
    async for finding in _configuration():
        yield finding
    async for finding in _listeners_behind_discards():
        yield finding
    await live.refresh(broker)
    now = datetime.now(UTC)
    workers = live.live(now)
    for finding in _workers(workers, live.lost(now, t.worker_gone_after_s), t):
        yield finding
    if workers:  # none: that is critical already, and nothing can evaluate
        async for finding in _evaluator(t):
            yield finding
    if problem is not None:
        yield Finding(UNKNOWN, f"thresholds not read: {problem}")
        return
    async for finding in _against_thresholds(t, live):
        yield finding
