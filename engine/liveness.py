"""Which workers still beat and which workflows still move, read from EVENTS as it grows.

``onemanage check`` makes one and reads a window of history; the worker's
alert evaluator keeps one and each look reads only what was stored since the
last (EventReader from the next sequence), so a look costs the new events,
not the hour. Memory is bounded: a worker is forgotten once gone (only its
id is kept, at most ``MAX_GONE``), a workflow once ended, and at most
``MAX_OPEN`` open workflows are followed (the oldest go first).

A worker that stops beating without a goodbye is lost after ``MISSED_BEATS``
intervals, and gone once silent for longer than the ``worker_gone_after_s``
threshold (engine.alerts): it then leaves the lists and is only counted.
"""

from __future__ import annotations

from collections.abc import Iterable
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
MAX_GONE = 10_000
MISSED_BEATS = 3  # a worker silent this many intervals is lost


@dataclass(frozen=True)
class LostWorker:
    beat: WorkerHeartbeat  # its last
    silent_s: float


def command_of(beat: WorkerHeartbeat) -> str:
    """The worker command a process belongs to: its ``onemanage worker``, else itself."""
    return beat.command or beat.worker_id


@dataclass(frozen=True)
class WorkerGroup:
    """The processes of one ``onemanage worker`` command, with their figures summed."""

    command: str
    beats: tuple[WorkerHeartbeat, ...]

    @property
    def running(self) -> int:
        return sum(beat.running for beat in self.beats)

    @property
    def processed(self) -> int:
        return sum(beat.processed for beat in self.beats)

    @property
    def failed(self) -> int:
        return sum(beat.failed for beat in self.beats)

    def as_dict(self) -> dict[str, object]:
        return {
            "command": self.command,
            "processes": [beat.worker_id for beat in self.beats],
            "running": self.running,
            "processed": self.processed,
            "failed": self.failed,
        }


def group_workers(beats: Iterable[WorkerHeartbeat]) -> list[WorkerGroup]:
    """Processes grouped by their command, commands and processes sorted by id."""
    groups: dict[str, list[WorkerHeartbeat]] = {}
    for beat in beats:
        groups.setdefault(command_of(beat), []).append(beat)
    return [
        WorkerGroup(command, tuple(sorted(members, key=lambda b: b.worker_id)))
        for command, members in sorted(groups.items())
    ]


class Liveness:
    """Last heartbeats by worker and open workflows with their last progress."""

    def __init__(self, beats_since: datetime, workflows_since: datetime) -> None:
        self._positions: dict[str, datetime | int] = {
            HEARTBEATS: beats_since,
            WORKFLOWS: workflows_since,
        }
        self.beats: dict[str, WorkerHeartbeat] = {}
        self.gone: dict[str, datetime] = {}  # worker id -> its last beat, once gone
        self.open: dict[str, datetime] = {}  # workflow id -> its last progress

    async def refresh(self, broker: OneManageBroker, workflows: bool = True) -> None:
        """Read what EVENTS stored since the last refresh (``workflows``: their events too)."""
        for subject in (HEARTBEATS, WORKFLOWS) if workflows else (HEARTBEATS,):
            reader = EventReader(broker, self._positions[subject], subject)
            async for delivered in reader.history():
                event = parse_event(delivered.data, delivered.subject)
                if isinstance(event, WorkerHeartbeat):
                    self.beats[event.worker_id] = event
                    self.gone.pop(event.worker_id, None)  # it beats again
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
                    del self.beats[worker_id]  # gone: forgotten, only counted
                    if beat.state == "running":  # no goodbye
                        self.gone[worker_id] = beat.timestamp
                        while len(self.gone) > MAX_GONE:
                            del self.gone[next(iter(self.gone))]
                continue
            if silent > beat.interval_s * MISSED_BEATS:
                lost.append(LostWorker(beat, silent))
        return lost

    def stuck(self, now: datetime) -> list[tuple[str, float]]:
        """Each open workflow with the seconds since its last progress."""
        return [(wid, (now - at).total_seconds()) for wid, at in self.open.items()]


def _silent(beat: WorkerHeartbeat, now: datetime) -> float:
    return (now - beat.timestamp).total_seconds()


@dataclass(frozen=True)
class Census:
    """Workers as ``onemanage status`` reports them."""

    live: list[WorkerHeartbeat]
    lost: list[LostWorker]
    gone: int  # silent without a goodbye for longer than gone_after_s (of those read)


async def census(broker: OneManageBroker, gone_after_s: float, window_s: float) -> Census:
    """Live, lost and gone workers, from the heartbeats of the last ``window_s``."""
    now = datetime.now(UTC)
    liveness = Liveness(now - timedelta(seconds=max(window_s, gone_after_s, 120.0)), now)
    await liveness.refresh(broker, workflows=False)
    now = datetime.now(UTC)
    lost = liveness.lost(now, gone_after_s)
    return Census(liveness.live(now), lost, len(liveness.gone))


async def live_workers(broker: OneManageBroker) -> list[WorkerHeartbeat]:
    """The last heartbeat of each worker alive now (of the last two minutes' heartbeats)."""
    now = datetime.now(UTC)
    liveness = Liveness(now - timedelta(minutes=2), now)
    await liveness.refresh(broker, workflows=False)
    return liveness.live(datetime.now(UTC))
