"""The last hour of a task type, minute by minute: counts and duration histograms.

Each task type's statistics (engine.events.stats) keep one slot per minute
for the last ``WINDOW_SLOTS`` minutes, so "the last hour" and "the last 15
minutes" are sums of slots: bounded memory (at most 61 slots, each a handful
of counts and two sparse histograms, engine.percentiles) however many tasks
run. An event lands in the minute of its own timestamp, so a late or
redelivered event counts where it happened; one older than the window is
left out of it (the totals still count it).

Queue wait is queued -> started (TaskStarted.queued_at, 1.1); run time is
started -> finished, every attempt's (TaskSucceeded / TaskFailed.duration_ms).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from engine import percentiles
from engine.events.schemas import (
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
)
from engine.percentiles import Histogram

SLOT_S = 60
WINDOW_SLOTS = 60  # the last hour is kept
QUANTILES = (50, 95, 99)


class Slot(BaseModel):
    """One minute of one task type."""

    minute: int  # the slot's start, in minutes since the epoch
    queued: int = 0
    succeeded: int = 0
    failed: int = 0  # final failures only
    retried: int = 0  # failed attempts that will run again
    dead_lettered: int = 0
    wait: Histogram = Field(default_factory=dict)
    run: Histogram = Field(default_factory=dict)


def minute_of(moment: datetime) -> int:
    return int(moment.timestamp() // SLOT_S)


def fold(slots: list[Slot], event: TaskEvent) -> None:
    """Count ``event`` in its minute's slot (made if new) and drop slots out of the window."""
    minute = minute_of(event.timestamp)
    newest = max((slot.minute for slot in slots), default=minute)
    if minute <= newest - WINDOW_SLOTS:
        return  # older than what is kept
    slot = next((s for s in slots if s.minute == minute), None)
    if slot is None:
        slot = Slot(minute=minute)
        slots.append(slot)
        slots.sort(key=lambda s: s.minute)
        oldest = max(minute, newest) - WINDOW_SLOTS
        slots[:] = [s for s in slots if s.minute > oldest]
    if isinstance(event, TaskQueued):
        slot.queued += 1
    elif isinstance(event, TaskStarted):
        if event.queued_at is not None:
            waited = (event.timestamp - event.queued_at).total_seconds() * 1000
            percentiles.add(slot.wait, waited)
    elif isinstance(event, TaskSucceeded):
        slot.succeeded += 1
        percentiles.add(slot.run, event.duration_ms)
    elif isinstance(event, TaskFailed):
        if event.will_retry:
            slot.retried += 1
        else:
            slot.failed += 1
        percentiles.add(slot.run, event.duration_ms)
    elif isinstance(event, TaskDeadLettered):
        slot.dead_lettered += 1


@dataclass
class WindowFigures:
    """One task type over the last ``seconds``: counts and the two histograms."""

    seconds: float
    queued: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    wait: Histogram = field(default_factory=dict)
    run: Histogram = field(default_factory=dict)

    def wait_ms(self, q: float) -> float | None:
        return percentiles.quantile(self.wait, q)

    def run_ms(self, q: float) -> float | None:
        return percentiles.quantile(self.run, q)

    def as_dict(self) -> dict[str, Any]:
        def summary(histogram: Histogram) -> dict[str, Any]:
            shown: dict[str, Any] = {"n": sum(histogram.values())}
            for q in QUANTILES:
                shown[f"p{q}"] = percentiles.quantile(histogram, q)
            return shown

        return {
            "window_s": self.seconds,
            "queued": self.queued,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
            "queue_wait_ms": summary(self.wait),
            "run_ms": summary(self.run),
        }


def window(slots: Iterable[Slot], now: datetime, seconds: float = 3600.0) -> WindowFigures:
    """The sum of the slots within the last ``seconds`` (whole minutes, the current one too)."""
    first = minute_of(now) - max(1, round(seconds / SLOT_S)) + 1
    kept = [slot for slot in slots if slot.minute >= first]
    return WindowFigures(
        seconds=seconds,
        queued=sum(s.queued for s in kept),
        succeeded=sum(s.succeeded for s in kept),
        failed=sum(s.failed for s in kept),
        retried=sum(s.retried for s in kept),
        dead_lettered=sum(s.dead_lettered for s in kept),
        wait=percentiles.merged(s.wait for s in kept),
        run=percentiles.merged(s.run for s in kept),
    )
