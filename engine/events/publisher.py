"""publish_event(): the one way an event reaches EVENTS.

It uses the broker's shared connection, publishes to ``events.<event_type>``
with ``Nats-Msg-Id = event_id`` (so a retried publish is stored once), fills
in the correlation and causation ids of the task that is running, and reports
every failure as one error type, PublishError, after logging it once.
"""

from __future__ import annotations

import logging
from typing import TypeVar

from nats.js.api import PubAck

from engine import metrics
from engine.broker import OneManageBroker
from engine.context import current_task
from engine.errors import PublishError
from engine.events.schemas import BaseEvent

logger = logging.getLogger(__name__)

EventT = TypeVar("EventT", bound=BaseEvent)

__all__ = ["PublishError", "publish_event", "with_task_context"]


def with_task_context(event: EventT) -> EventT:
    """The event with correlation/causation ids of the running task, where unset."""
    task = current_task.get()
    if task is None or (event.correlation_id and event.causation_id):
        return event
    return event.model_copy(
        update={
            "correlation_id": event.correlation_id or task.correlation_id,
            "causation_id": event.causation_id or task.task_id,
        }
    )


async def publish_event(broker: OneManageBroker, event: BaseEvent) -> PubAck:
    """Store ``event`` on EVENTS; raises PublishError (already logged) when it cannot."""
    event = with_task_context(event)
    try:
        ack = await broker.publish(event.subject, event.model_dump_json().encode(), event.event_id)
    except PublishError as exc:
        metrics.published(event.event_type, stored=False)
        logger.error(
            "event not published: %s",
            exc,
            extra={
                "event_type": event.event_type,
                "event_id": event.event_id,
                "correlation_id": event.correlation_id,
            },
        )
        raise
    metrics.published(event.event_type, stored=True)
    logger.debug(
        "published %s %s (seq %s%s)",
        event.event_type,
        event.event_id,
        ack.seq,
        ", duplicate" if ack.duplicate else "",
    )
    return ack
