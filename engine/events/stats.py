"""Per task type statistics in a KV bucket, so ``onemanage status`` shows them from any host.

The ``task-stats`` listener (engine.builtin) folds each lifecycle event in
with a compare-and-set, so any number of workers can share one bucket. A
redelivered event is folded once: event_listener skips an event its durable
already marked as handled (engine.events.marks).
"""

from __future__ import annotations

import re
from datetime import datetime

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from pydantic import BaseModel

from engine.broker import OneManageBroker
from engine.errors import TransientError
from engine.events.schemas import (
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
)
from engine.streams import STATS_BUCKET


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


async def read_task_stats(broker: OneManageBroker) -> list[TaskTypeStats]:
    """Every task type's statistics, by name."""
    kv = await broker.key_value(STATS_BUCKET)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    stats = []
    for key in sorted(keys):
        entry = await kv.get(key)
        if entry.value:
            stats.append(TaskTypeStats.model_validate_json(entry.value))
    return stats


async def fold_task_event(broker: OneManageBroker, event: TaskEvent, attempts: int = 20) -> None:
    """Fold one lifecycle event into its task type's statistics (compare-and-set)."""
    kv = await broker.key_value(STATS_BUCKET)
    key = stats_key(event.task_name)
    for _ in range(attempts):
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
