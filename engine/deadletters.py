"""Dead letters: a delivery the server gave up on becomes a TaskDeadLettered event.

When a message reaches a durable's max deliver, the server stops delivering
it and emits a max-deliveries advisory. Every worker listens for those of
TASKS and EVENTS in one queue group, so exactly one of them records it as a
TaskDeadLettered event (deduplicated by an id derived from stream and
sequence). A command is then deleted from the TASKS work queue (the event
keeps its payload); an event stays in EVENTS, the history, and the record
says which listener gave up on it. A worker that crashed on the message
cannot do this itself, which is why it comes from the server's advisory.
"""

from __future__ import annotations

import json
import logging
import uuid

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from engine.broker import OneManageBroker
from engine.errors import PublishError
from engine.events.publisher import publish_event
from engine.events.schemas import TaskDeadLettered
from engine.routing import CORRELATION_LABEL, TASK_ID_HEADER, task_name_of
from engine.streams import EVENTS, TASKS

logger = logging.getLogger(__name__)

ADVISORY_SUBJECTS = tuple(
    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*" for stream in (TASKS, EVENTS)
)
QUEUE_GROUP = "onemanage-dead-letters"
PAYLOAD_LIMIT = 64 * 1024
_NAMESPACE = uuid.UUID("1f0e5b8e-5a7e-4c43-9d8e-3c1d2a7b9f10")


def dead_letter_event_id(stream: str, stream_seq: int, consumer: str) -> str:
    """The same id in every worker, so a double handling is stored once."""
    return uuid.uuid5(_NAMESPACE, f"{stream}:{stream_seq}:{consumer}").hex


async def handle_advisory(broker: OneManageBroker, advisory: dict[str, object]) -> None:
    """Record one max-deliveries advisory as a TaskDeadLettered event."""
    stream = str(advisory.get("stream", TASKS))
    consumer = str(advisory.get("consumer", ""))
    seq = int(str(advisory.get("stream_seq", 0)))
    deliveries = int(str(advisory.get("deliveries", 0)))
    try:
        stored = await broker.js.get_msg(stream, seq)
    except NotFoundError:
        logger.info("dead letter %s #%d already handled", stream, seq)
        return
    data = stored.data or b""
    try:
        decoded = json.loads(data)
    except ValueError:
        decoded = None
    fields = decoded if isinstance(decoded, dict) else {}
    if stream == EVENTS:  # a listener gave up on an event
        task_name = f"listener.{consumer}"
        task_id = f"{consumer}:{fields.get('event_id') or seq}"
        correlation_id = fields.get("correlation_id")  # the event's own field
    else:
        task_name = task_name_of(stored.subject or "")
        task_id = (stored.headers or {}).get(TASK_ID_HEADER) or f"{stream}-{seq}"
        labels = fields.get("labels")
        correlation_id = labels.get(CORRELATION_LABEL) if isinstance(labels, dict) else None
    event = TaskDeadLettered(
        event_id=dead_letter_event_id(stream, seq, consumer),
        task_id=task_id,
        task_name=task_name,
        stream=stream,
        consumer=consumer,
        stream_seq=seq,
        deliveries=deliveries,
        payload=data[:PAYLOAD_LIMIT].decode("utf-8", "replace"),
        payload_truncated=len(data) > PAYLOAD_LIMIT,
        correlation_id=correlation_id or task_id,
    )
    await publish_event(broker, event)
    if stream == TASKS:
        await broker.js.delete_msg(stream, seq)
    logger.warning(
        "dead letter: %s (%s) after %d deliveries, stored as event %s",
        task_name, task_id, deliveries, event.event_id,
    )  # fmt: skip


async def watch_dead_letters(broker: OneManageBroker) -> list[Subscription]:
    """Subscribe this worker to the max-deliveries advisories of TASKS and EVENTS."""

    async def on_advisory(msg: Msg) -> None:
        try:
            await handle_advisory(broker, json.loads(msg.data))
        except (ValueError, PublishError) as exc:
            logger.error("dead-letter advisory not recorded: %s", exc)
        except Exception:
            logger.exception("dead-letter advisory not recorded")

    return [
        await broker.nc.subscribe(subject, queue=QUEUE_GROUP, cb=on_advisory)
        for subject in ADVISORY_SUBJECTS
    ]
