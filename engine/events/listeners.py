"""Event tasks: each listener has its own durable on EVENTS, so each gets every event.

``event_listener`` is the thin layer over ``@broker.task`` that every listener
shares: it parses the raw payload with parse_event (which checks the version
with is_version_compatible), counts and logs what it skips, and keeps going
after a handler error. Its counters travel in the worker heartbeat.

Two real listeners read the same events:
* ``audit_log`` appends every event as a JSON line to <data_dir>/audit/events.jsonl;
* ``task_stats`` keeps per-task-type counts and durations in a KV bucket, so
  ``onemanage status`` shows them from any host.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel
from taskiq import AsyncTaskiqDecoratedTask

from engine.broker import broker, listener
from engine.errors import TransientError, is_transient
from engine.events.schemas import (
    BaseEvent,
    ListenerCounters,
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
    UnparsedEvent,
    parse_event,
)
from engine.middleware import LISTENER_COUNTERS
from engine.streams import STATS_BUCKET

logger = logging.getLogger(__name__)

Handler = Callable[[BaseEvent], Awaitable[None]]


def event_listener(
    durable: str, subject: str = "events.>", *, deliver: str = "new"
) -> Callable[[Handler], AsyncTaskiqDecoratedTask[[Any], Any]]:
    """Register ``handler`` as the event task ``listener.<durable>``."""

    def decorate(handler: Handler) -> AsyncTaskiqDecoratedTask[[Any], Any]:
        counters = LISTENER_COUNTERS.setdefault(durable, ListenerCounters())

        async def receive(payload: Any) -> None:
            event = parse_event(payload)
            if isinstance(event, UnparsedEvent):
                counters.skipped[event.reason] = counters.skipped.get(event.reason, 0) + 1
                logger.warning(
                    "listener %s skipped an event: %s (%s)",
                    durable, event.reason, event.detail,
                    extra={"event_type": event.event_type, "event_id": event.event_id},
                )  # fmt: skip
                return
            try:
                await handler(event)
            except Exception as exc:
                counters.failed += 1
                if is_transient(exc):
                    raise  # redelivered with back-off
                logger.exception("listener %s failed on %s", durable, event.event_id)
                return  # a bug in a listener must not block the events behind it
            counters.handled += 1

        receive.__name__ = handler.__name__
        receive.__doc__ = handler.__doc__
        return broker.task(task_name=f"listener.{durable}", **listener(durable, subject, deliver))(
            receive
        )

    return decorate


# -- audit log ------------------------------------------------------------------------

_audit_file: IO[str] | None = None


def audit_path() -> Path:
    return broker.settings.data_dir / "audit" / "events.jsonl"


@event_listener("audit-log")
async def audit_log(event: BaseEvent) -> None:
    """Append every event, whole, as one JSON line (one write: safe for O_APPEND)."""
    global _audit_file
    if _audit_file is None or _audit_file.closed:
        audit_path().parent.mkdir(parents=True, exist_ok=True)
        _audit_file = open(audit_path(), "a", encoding="utf-8")  # noqa: SIM115, ASYNC230 (once)
    _audit_file.write(event.model_dump_json() + "\n")
    _audit_file.flush()


# -- per task type statistics -------------------------------------------------------


class TaskTypeStats(BaseModel):
    """Counts and durations of one task type, across all workers."""

    task_name: str
    queued: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duration_ms_total: float = 0.0
    duration_ms_max: float = 0.0
    last_event_at: datetime | None = None

    def apply(self, event: TaskEvent) -> None:
        if isinstance(event, TaskQueued):
            self.queued += 1
        elif isinstance(event, TaskStarted):
            self.started += 1
        elif isinstance(event, TaskSucceeded):
            self.succeeded += 1
            self.duration_ms_total += event.duration_ms
            self.duration_ms_max = max(self.duration_ms_max, event.duration_ms)
        elif isinstance(event, TaskFailed):
            if event.will_retry:
                self.retried += 1
            else:
                self.failed += 1
        elif isinstance(event, TaskDeadLettered):
            self.dead_lettered += 1
        self.last_event_at = event.timestamp


_KEY_UNSAFE = re.compile(r"[^-/_=.a-zA-Z0-9]")


def stats_key(task_name: str) -> str:
    return _KEY_UNSAFE.sub("_", task_name) or "_"


_stats_kv: KeyValue | None = None


async def stats_bucket() -> KeyValue:
    """The statistics bucket, bound once (binding costs a stream-info round trip)."""
    global _stats_kv
    if _stats_kv is None or _stats_kv._js is not broker.js:
        _stats_kv = await broker.js.key_value(STATS_BUCKET)
    return _stats_kv


async def read_task_stats() -> list[TaskTypeStats]:
    """Every task type's statistics, by name."""
    kv = await stats_bucket()
    try:
        keys = await kv.keys()
    except Exception:  # nats-py raises NoKeysError (not exported everywhere) when empty
        return []
    stats = []
    for key in sorted(keys):
        entry = await kv.get(key)
        if entry.value:
            stats.append(TaskTypeStats.model_validate_json(entry.value))
    return stats


@event_listener("task-stats", "events.task.>")
async def task_stats(event: BaseEvent) -> None:
    """Fold one lifecycle event into its task type's statistics (compare-and-set)."""
    if not isinstance(event, TaskEvent):
        return
    kv = await stats_bucket()
    key = stats_key(event.task_name)
    for _ in range(20):
        try:
            entry = await kv.get(key)
            stats = TaskTypeStats.model_validate_json(entry.value or b"{}")
            revision = entry.revision or 0
        except KeyNotFoundError:
            stats, revision = TaskTypeStats(task_name=event.task_name), 0
        stats.apply(event)
        try:
            await kv.update(key, stats.model_dump_json().encode(), last=revision)
            return
        except KeyWrongLastSequenceError:
            continue  # another worker updated it first: read again
    raise TransientError(f"statistics of {event.task_name} kept changing under us")
