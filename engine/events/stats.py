"""Per task type statistics in a KV bucket, so ``onemanage status`` shows them from any host.

The ``task-stats`` listener (engine.builtin) folds each lifecycle event in
with a compare-and-set, so any number of workers can share one bucket; the
events that arrive during a write share the next (StatsFolder). A
redelivered event is folded once: event_listener skips an event its durable
already marked as handled (engine.events.marks).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from pydantic import BaseModel, Field

from engine.broker import OneManageBroker
from engine.direct import KV_OPERATION, TOO_MANY_RESULTS, DirectGetError, direct_all, subject
from engine.errors import TransientError
from engine.events.schemas import (
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
)
from engine.events.windows import Slot, fold
from engine.routing import lane_of
from engine.streams import STATS_BUCKET


class TaskTypeStats(BaseModel):
    """Counts and durations of one task type, across all workers.

    ``lane`` is the lane its tasks run in (engine.routing), as the worker that
    folded its events knew it: engine.counts tells workflows from tasks by it.
    None until a worker that registers the task type folds one of its events.
    """

    task_name: str
    lane: str | None = None
    queued: int = 0
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duration_ms_total: float = 0.0
    duration_ms_max: float = 0.0
    last_event_at: datetime | None = None
    recent: list[Slot] = Field(default_factory=list)  # the last hour, a slot a minute (1.1)

    def apply(self, event: TaskEvent) -> None:
        fold(self.recent, event)
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


async def read_task_stats(broker: OneManageBroker, timeout: float = 5.0) -> list[TaskTypeStats]:
    """Every task type's statistics, by key: each key's latest value, read by direct get.

    One multi_last request reads them all and makes nothing on the server
    (kv.keys() and kv.get() make an ordered consumer), so a read-only user
    can. A key removed (its latest message a delete or purge marker) is left out.
    """
    stream, keys = f"KV_{STATS_BUCKET}", f"$KV.{STATS_BUCKET}.>"
    try:
        latest = await direct_all(broker.nc, stream, {"multi_last": [keys]}, timeout)
    except DirectGetError as exc:
        if exc.status != TOO_MANY_RESULTS:
            raise
        # More keys than one multi_last answers for: read the whole bucket (one value a key).
        every = await direct_all(broker.nc, stream, {"seq": 1, "next_by_subj": keys}, timeout)
        latest = list({subject(msg): msg for msg in every}.values())
    stats = [
        (subject(msg), TaskTypeStats.model_validate_json(msg.data))
        for msg in latest
        if msg.data and not _removed(msg.headers)
    ]
    return [entry for _, entry in sorted(stats, key=lambda pair: pair[0])]


def _removed(headers: dict[str, str] | None) -> bool:
    return (headers or {}).get(KV_OPERATION) in ("DEL", "PURGE")


async def _stored(broker: OneManageBroker, key: str) -> tuple[TaskTypeStats | None, int]:
    """A key's statistics and revision, from the stream leader (0: never stored).

    The bucket allows direct get for the readers, and any replica answers
    that, one a little behind too: a compare-and-set wants the leader's revision.
    """
    try:
        msg = await broker.js.get_last_msg(f"KV_{STATS_BUCKET}", f"$KV.{STATS_BUCKET}.{key}")
    except NotFoundError:
        return None, 0
    if not msg.data or _removed(msg.headers):
        return None, msg.seq or 0
    return TaskTypeStats.model_validate_json(msg.data), msg.seq or 0


def task_lane(broker: OneManageBroker, task_name: str) -> str | None:
    """The lane of a task type this process registers (None: unknown here)."""
    task = broker.find_task(task_name)
    return None if task is None else lane_of(task.labels)


async def fold_task_event(broker: OneManageBroker, event: TaskEvent, attempts: int = 20) -> None:
    """Fold one lifecycle event into its task type's statistics (compare-and-set)."""
    await fold_task_events(broker, [event], attempts)


async def fold_task_events(
    broker: OneManageBroker,
    events: list[TaskEvent],
    attempts: int = 20,
    known: tuple[TaskTypeStats, int] | None = None,
) -> tuple[TaskTypeStats, int]:
    """Fold events of one task type into its statistics with one compare-and-set.

    ``known`` is the value and revision this process wrote last: tried before
    reading, since with one writer per process it is usually still the latest
    (a wrong guess costs the read it saved). Returns what was written, and its
    revision.
    """
    kv = await broker.key_value(STATS_BUCKET)
    name = events[0].task_name
    key = stats_key(name)
    lane = task_lane(broker, name)
    for _ in range(attempts):
        if known is not None:
            stats, revision = known[0].model_copy(deep=True), known[1]
            known = None
        else:
            stored, revision = await _stored(broker, key)
            stats = stored or TaskTypeStats(task_name=name)
        for event in events:
            stats.apply(event)
        stats.lane = lane or stats.lane
        try:
            revision = await kv.update(key, stats.model_dump_json().encode(), last=revision)
        except KeyWrongLastSequenceError:
            continue  # another worker updated it first: read again
        return stats, revision
    raise TransientError(f"statistics of {name} kept changing under us")


class StatsFolder:
    """Group commit of the statistics: the events that arrive while one write is on the
    wire go out together in the next, one compare-and-set per task type.

    Each caller returns only once its event is written (or raises TransientError),
    so an event is acked after its write and a crash loses nothing. One writer
    per process also keeps this worker's folds from racing each other's CAS.
    """

    def __init__(self, broker: OneManageBroker) -> None:
        self.broker = broker
        self._pending: list[tuple[TaskEvent, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._written: dict[str, tuple[TaskTypeStats, int]] = {}  # by key: the last write

    async def fold(self, event: TaskEvent) -> None:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, written))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="task-stats-writer")
        await written

    async def _write_all(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            by_key: dict[str, list[tuple[TaskEvent, asyncio.Future[None]]]] = {}
            for entry in batch:
                by_key.setdefault(stats_key(entry[0].task_name), []).append(entry)
            for key, entries in by_key.items():
                try:
                    self._written[key] = await fold_task_events(
                        self.broker,
                        [event for event, _ in entries],
                        known=self._written.pop(key, None),
                    )
                except Exception as exc:
                    failure = (
                        exc
                        if isinstance(exc, TransientError)
                        else TransientError(f"cannot write the statistics: {exc}")
                    )
                    outcome: BaseException | None = failure
                else:
                    outcome = None
                for _, written in entries:
                    if written.done():
                        continue  # its caller is gone (the worker stops)
                    if outcome is None:
                        written.set_result(None)
                    else:
                        written.set_exception(outcome)
