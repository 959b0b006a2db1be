"""Which workers still beat and which workflows still move, read from EVENTS as it grows.

``onemanage check`` makes one and reads a window of history; the worker's
alert evaluator keeps one and each look reads only what was stored since the
last (EventReader from the next sequence), so a look costs the new events,
not the hour. Memory is bounded: a worker is forgotten once gone, a workflow
once ended, and at most ``MAX_OPEN`` open workflows are followed (the oldest
go first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.broker import OneManageBroker
from engine.events.schemas import (
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowEvent,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    WorkerHeartbeat,
    parse_event,
)
from engine.monitor import EventReader

HEARTBEATS = "events.worker.heartbeat"
WORKFLOWS = "events.psd.>"
MAX_OPEN = 10_000
MISSED_BEATS = 3  # a worker silent this many intervals is lost


@dataclass(frozen=True)
class LostWorker:
    beat: WorkerHeartbeat  # its last
    silent_s: float


class Liveness:
    """Last heartbeats by worker and open workflows with their last progress."""

    def __init__(self, beats_since: datetime, workflows_since: datetime) -> None:
        self._positions: dict[str, datetime | int] = {
            HEARTBEATS: beats_since,
            WORKFLOWS: workflows_since,
        }
        self.beats: dict[str, WorkerHeartbeat] = {}
        self.open: dict[str, datetime] = {}  # workflow id -> its last progress

    async def refresh(self, broker: OneManageBroker, workflows: bool = True) -> None:
        """Read what EVENTS stored since the last refresh (``workflows``: their events too)."""
        for subject in (HEARTBEATS, WORKFLOWS) if workflows else (HEARTBEATS,):
            reader = EventReader(broker, self._positions[subject], subject)
            async for delivered in reader.history():
                event = parse_event(delivered.data, delivered.subject)
                if isinstance(event, WorkerHeartbeat):
                    self.beats[event.worker_id] = event
                elif isinstance(event, PsdWorkflowEvent):
                    self.take(event)
            self._positions[subject] = reader.position

    def take(self, event: PsdWorkflowEvent) -> None:
        """One workflow event, read here or by another reader (the console folds its own)."""
        if isinstance(event, PsdWorkflowCompleted | PsdWorkflowFailed):
            self.open.pop(event.workflow_id, None)
        elif isinstance(event, PsdWorkflowSubmitted | PsdStepCompleted):
            self.open.pop(event.workflow_id, None)  # re-inserted: newest progress last
            self.open[event.workflow_id] = event.timestamp
            while len(self.open) > MAX_OPEN:
                del self.open[next(iter(self.open))]

    def live(self, now: datetime) -> list[WorkerHeartbeat]:
        """Workers whose last heartbeat says running and came within 3 intervals."""
        return [
            beat
            for beat in self.beats.values()
            if beat.state == "running" and _silent(beat, now) <= beat.interval_s * MISSED_BEATS
        ]

    def lost(self, now: datetime, gone_after_s: float) -> list[LostWorker]:
        """Workers that stopped beating without a goodbye, until they count as gone."""
        lost = []
        for worker_id, beat in list(self.beats.items()):
            silent = _silent(beat, now)
            if beat.state != "running" or silent > gone_after_s:
                if silent > max(gone_after_s, beat.interval_s * MISSED_BEATS):
                    del self.beats[worker_id]  # gone: forgotten
                continue
            if silent > beat.interval_s * MISSED_BEATS:
                lost.append(LostWorker(beat, silent))
        return lost

    def stuck(self, now: datetime) -> list[tuple[str, float]]:
        """Each open workflow with the seconds since its last progress."""
        return [(wid, (now - at).total_seconds()) for wid, at in self.open.items()]


def _silent(beat: WorkerHeartbeat, now: datetime) -> float:
    return (now - beat.timestamp).total_seconds()


async def live_workers(broker: OneManageBroker) -> list[WorkerHeartbeat]:
    """The last heartbeat of each worker alive now (of the last two minutes' heartbeats)."""
    now = datetime.now(UTC)
    liveness = Liveness(now - timedelta(minutes=2), now)
    await liveness.refresh(broker, workflows=False)
    return liveness.live(datetime.now(UTC))
