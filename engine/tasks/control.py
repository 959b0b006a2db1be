"""The replay control task: a dead letter's stored command sent again, by a worker.

An operator may not publish tasks at large nor lifecycle events, so it kicks
``onemanage.replay`` with the dead letter's place in EVENTS; the worker reads
the TaskDeadLettered there itself (only workers publish those, so what it sends
is what a worker recorded, never what the operator says), kicks the stored task
with the new task id the operator chose, on its own subject, with the original's
correlation, and publishes TaskReplayed. A rerun of this task kicks the same task
id and announces the same event id: both are stored once.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from taskiq.kicker import AsyncKicker

from engine.app import broker
from engine.deadletters import stored_task
from engine.errors import OneManageError
from engine.events.publisher import publish_event
from engine.events.schemas import TaskDeadLettered, TaskReplayed, parse_event
from engine.routing import CAUSATION_LABEL, CORRELATION_LABEL, QUEUED_AT_LABEL
from engine.streams import EVENTS
from engine.tasks.names import PROCESS_TASK, REPLAY_TASK

_REPLAYED = uuid.UUID("5e2b7c1a-8d44-4f6e-9b3a-71c0d2e8f519")
_TASK_ID = re.compile(r"^[0-9a-f]{32}$")


class ReplayRefused(OneManageError):
    """This dead letter cannot be sent again; nothing was sent."""

    code = "not_replayable"


def replayed_event_id(new_task_id: str) -> str:
    return uuid.uuid5(_REPLAYED, new_task_id).hex


@broker.task(task_name=REPLAY_TASK)
async def replay_dead_letter(seq: int, dead_letter_id: str, new_task_id: str) -> dict[str, Any]:
    """Send the task of the dead letter stored at ``seq`` in EVENTS again as ``new_task_id``."""
    if not _TASK_ID.match(new_task_id):
        raise ReplayRefused(f"new task id {new_task_id!r} is not 32 hex digits")
    stored = await broker.js.get_msg(EVENTS, seq)
    event = parse_event(stored.data or b"", stored.subject)
    if not isinstance(event, TaskDeadLettered) or event.event_id != dead_letter_id:
        raise ReplayRefused(f"EVENTS #{seq} is not dead letter {dead_letter_id}")
    if event.task_name == PROCESS_TASK:
        raise ReplayRefused("a workflow is retried, not replayed (engine.actions)")
    try:
        message = stored_task(event)
    except ValueError as exc:
        raise ReplayRefused(str(exc)) from exc
    labels = {k: v for k, v in message.labels.items() if k not in (QUEUED_AT_LABEL,)}
    labels[CORRELATION_LABEL] = labels.get(CORRELATION_LABEL) or event.task_id
    labels[CAUSATION_LABEL] = event.event_id
    kicker: AsyncKicker[..., Any] = AsyncKicker(message.task_name, broker, labels)
    await kicker.with_task_id(new_task_id).kiq(*message.args, **message.kwargs)
    await publish_event(
        broker,
        TaskReplayed(
            event_id=replayed_event_id(new_task_id),
            replay_of=event.task_id,
            dead_letter_id=event.event_id,
            new_task_id=new_task_id,
            task_name=event.task_name,
            correlation_id=labels[CORRELATION_LABEL],
            causation_id=event.event_id,
        ),
    )
    return {"replay_of": event.task_id, "new_task_id": new_task_id}
