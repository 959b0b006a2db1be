"""Which task goes where: label names, headers, subjects and lanes (pure functions).

A command task (no ``stream`` label, or ``stream="TASKS"``) is published to
``tasks.<lane>.<task_name>`` and pulled through its lane's one shared durable;
an event task (``stream="EVENTS"`` with a ``durable``) gets every matching
event through its own durable. Every name a label, a header or a subject uses
is spelled here once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from engine.streams import DEFAULT_LANE as DEFAULT_LANE
from engine.streams import EVENTS, EVENTS_SUBJECTS, TASK_LANES, TASKS
from engine.streams import WORKFLOW_LANE as WORKFLOW_LANE
from engine.streams import lane_subjects as lane_subjects

# Labels a task carries: its route ...
STREAM_LABEL = "stream"
DURABLE_LABEL = "durable"
FILTER_LABEL = "filter_subject"
DELIVER_LABEL = "deliver"
LANE_LABEL = "lane"
# ... and its story (set when it is kicked, inherited by what it kicks).
CORRELATION_LABEL = "correlation_id"
CAUSATION_LABEL = "causation_id"
QUEUED_AT_LABEL = "queued_at"

TASK_ID_HEADER = "Onemanage-Task-Id"
MSG_ID_HEADER = "Nats-Msg-Id"

LANES = frozenset(TASK_LANES)  # a lane without a durable would never run

Deliver = Literal["new", "all"]

_FORBIDDEN_SUBJECT_CHARS = frozenset(" \t\r\n*>")


def task_subject(task_name: str, lane: str = DEFAULT_LANE) -> str:
    """The TASKS subject of a command task: ``tasks.<lane>.<task_name>``."""
    return f"tasks.{lane}.{task_name}"


def task_name_of(subject: str) -> str:
    """The task name in a TASKS subject."""
    parts = subject.split(".", 2)
    return parts[2] if len(parts) == 3 else subject


def lane_of(labels: Mapping[str, Any]) -> str:
    return str(labels.get(LANE_LABEL, DEFAULT_LANE))


def is_event_task(labels: Mapping[str, Any]) -> bool:
    return bool(labels.get(STREAM_LABEL, TASKS) == EVENTS)


def listener(
    durable: str, subject: str = EVENTS_SUBJECTS, deliver: Deliver = "new"
) -> dict[str, str]:
    """Labels of an event task: its own durable on EVENTS, filtered by ``subject``.

    ``deliver="all"`` makes a new durable start from the oldest stored event.
    """
    return {
        STREAM_LABEL: EVENTS,
        DURABLE_LABEL: durable,
        FILTER_LABEL: subject,
        DELIVER_LABEL: deliver,
    }


def check_task(task_name: str, labels: Mapping[str, Any]) -> None:
    """Refuse, at registration, a task no worker could ever be handed."""
    if _FORBIDDEN_SUBJECT_CHARS & set(task_name):
        raise ValueError(f"task name {task_name!r} cannot be used in a NATS subject")
    if is_event_task(labels):
        if not labels.get(DURABLE_LABEL):
            raise ValueError(f"event task {task_name} needs a '{DURABLE_LABEL}' label")
        return
    lane = lane_of(labels)
    if lane not in LANES:
        raise ValueError(f"task {task_name}: lane {lane!r} is not one of {sorted(LANES)}")
