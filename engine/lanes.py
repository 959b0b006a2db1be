"""Lanes: the durables a worker pulls from, each with its own slots, and their consumer configs.

Commands share one durable per TASKS lane (workers load-balance); each event
task has its own durable on EVENTS (fan-out). Workflows (orchestrators that
wait for their steps) have a lane of their own, so a worker busy with
orchestrators still has slots for the steps they wait for: no deadlock at any
concurrency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from engine.events.schemas import LaneHealth
from engine.routing import (
    DEFAULT_LANE,
    DELIVER_LABEL,
    DURABLE_LABEL,
    FILTER_LABEL,
    WORKFLOW_LANE,
    is_event_task,
    lane_of,
    lane_subjects,
)
from engine.settings import Settings
from engine.streams import EVENTS, EVENTS_SUBJECTS, TASKS


@dataclass
class Health:
    """How one lane's loops fare, for the heartbeat: a lane that stopped pulling must show."""

    restarts: int = 0
    failures: int = 0  # consecutive failed fetches
    last_error: str = ""
    recovering: bool = False  # a loop was restarted and no fetch has succeeded since

    def fetched(self) -> None:
        self.failures = 0
        self.recovering = False

    def fetch_failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = describe(exc)

    def restarted(self, exc: BaseException) -> None:
        self.restarts += 1
        self.recovering = True
        self.last_error = describe(exc)

    @property
    def degraded(self) -> bool:
        return self.failures >= 2 or self.recovering

    def report(self) -> LaneHealth:
        return LaneHealth(
            state="degraded" if self.degraded else "ok",
            restarts=self.restarts,
            failures=self.failures,
            last_error=self.last_error,
        )


def describe(exc: BaseException, limit: int = 500) -> str:
    """``Type: message``, bounded: a validation error can run to pages."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class Lane:
    """One durable consumer this worker pulls from, with its own concurrency.

    ``running`` bounds the messages being run (by taskiq or a listener); ``held`` those
    fetched, ``prefetch`` more, so the next batch is already here when a task
    ends (one fetch round trip per message capped throughput at ~750/s).
    """

    stream: str
    durable: str
    filter_subject: str
    max_in_flight: int
    prefetch: int
    deliver: str = "all"
    listener_task: str | None = None  # set for EVENTS lanes
    health: Health = field(default_factory=Health, repr=False)
    behind: int = 0  # messages still pending for the durable after the last fetch
    held: asyncio.Semaphore = field(init=False, repr=False)
    running: asyncio.Semaphore = field(init=False, repr=False)
    waiting: asyncio.Queue[Delivery] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.held = asyncio.Semaphore(self.max_in_flight + self.prefetch)
        self.running = asyncio.Semaphore(self.max_in_flight)
        self.waiting = asyncio.Queue()


class FetchWatcher(Protocol):
    """Looks at a lane around each of its fetches (engine.discards counts skipped events)."""

    async def before_fetch(self, lane: Lane) -> None: ...

    async def fetched(self, lane: Lane, messages: list[Msg]) -> None: ...


@dataclass(eq=False)
class Delivery:
    """A message fetched and not yet settled (acked or nacked)."""

    msg: Msg
    lane: Lane
    task_id: str
    data: bytes  # what taskiq decodes (commands)
    payload: Any = None  # what the listener gets (events)
    retry_delay: float | None = None
    dispatched: bool = False
    settled: bool = False

    def back_off(self, settings: Settings) -> None:
        """Nack instead of ack, delayed twice as long as the attempt before (up to 60 s)."""
        self.retry_delay = min(settings.retry_delay * 2 ** (self.attempt - 1), 60.0)

    @property
    def attempt(self) -> int:
        try:
            return int(self.msg.metadata.num_delivered)
        except (ValueError, AttributeError, IndexError):
            return 1


def plan_lanes(tasks: Mapping[str, Any], settings: Settings) -> list[Lane]:
    """The lanes for the registered ``tasks`` (name -> taskiq task): TASKS lanes, then listeners."""
    s = settings
    ordered = sorted(tasks.items())
    lanes = [
        Lane(TASKS, s.tasks_durable, lane_subjects(DEFAULT_LANE), s.concurrency, s.fetch_batch)
    ]
    if any(lane_of(task.labels) == WORKFLOW_LANE for _, task in ordered):
        lanes.append(
            Lane(
                TASKS,
                s.workflows_durable,
                lane_subjects(WORKFLOW_LANE),
                s.workflow_concurrency,
                1,  # orchestrators are few and long: no need to hold more
            )
        )
    for name, task in ordered:
        labels = task.labels
        if not is_event_task(labels):
            continue
        lanes.append(
            Lane(
                EVENTS,
                str(labels[DURABLE_LABEL]),
                str(labels.get(FILTER_LABEL, EVENTS_SUBJECTS)),
                s.listener_concurrency,
                s.fetch_batch,
                deliver=str(labels.get(DELIVER_LABEL, "new")),
                listener_task=name,
            )
        )
    durables = [lane.durable for lane in lanes]
    if len(set(durables)) != len(durables):
        raise ValueError(f"two lanes share a durable name: {durables}")
    return lanes


def consumer_config(lane: Lane, settings: Settings) -> ConsumerConfig:
    """The durable of ``lane`` as the settings want it (workers create and update it)."""
    s = settings
    return ConsumerConfig(
        durable_name=lane.durable,
        filter_subject=lane.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=s.ack_wait,
        max_deliver=s.max_deliver,
        max_ack_pending=max(1000, (lane.max_in_flight + lane.prefetch) * 20),
        deliver_policy=DeliverPolicy.ALL if lane.deliver == "all" else DeliverPolicy.NEW,
        description=f"onemanage {lane.listener_task or 'workers'}",
    )
