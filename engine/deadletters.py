"""Dead letters: a delivery the server gave up on becomes a TaskDeadLettered event.

When a message reaches a durable's max deliver, the server stops delivering
it and emits a max-deliveries advisory. Every worker listens for those of
TASKS and EVENTS in one queue group, so exactly one of them records it as a
TaskDeadLettered event (deduplicated by an id derived from stream and
sequence). A command is then deleted from the TASKS work queue (the event
keeps its payload); an event stays in EVENTS, the history, and the record
says which listener gave up on it. A worker that crashed on the message
cannot do this itself, which is why it comes from the server's advisory.

A worker also refuses a command taskiq could not decode (it would ack and
drop it) or whose body names another task than its subject: record_refused
makes it a dead letter with its reason before the worker acks it.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError
from taskiq.message import TaskiqMessage

from engine.broker import OneManageBroker
from engine.errors import PublishError
from engine.events.publisher import publish_event
from engine.events.schemas import DeadLetterReason, TaskDeadLettered
from engine.results import store_dead_letter
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


def dead_letter(
    stream: str,
    consumer: str,
    seq: int,
    deliveries: int,
    subject: str,
    headers: dict[str, str] | None,
    data: bytes,
    reason: DeadLetterReason = "max_deliveries",
    error: str = "",
) -> TaskDeadLettered:
    """The record of one stored message no worker will run, its payload kept."""
    try:
        decoded = json.loads(data)
    except Exception:  # ValueError, RecursionError: the raw bytes are kept anyway
        decoded = None
    fields = decoded if isinstance(decoded, dict) else {}
    if stream == EVENTS:  # a listener gave up on an event
        task_name = f"listener.{consumer}"
        task_id = f"{consumer}:{fields.get('event_id') or seq}"
        correlation_id = fields.get("correlation_id")  # the event's own field
    else:
        task_name = task_name_of(subject)
        task_id = (headers or {}).get(TASK_ID_HEADER) or f"{stream}-{seq}"
        labels = fields.get("labels")
        correlation_id = labels.get(CORRELATION_LABEL) if isinstance(labels, dict) else None
    return TaskDeadLettered(
        event_id=dead_letter_event_id(stream, seq, consumer),
        task_id=task_id,
        task_name=task_name,
        stream=stream,
        consumer=consumer,
        stream_seq=seq,
        deliveries=deliveries,
        payload=data[:PAYLOAD_LIMIT].decode("utf-8", "replace"),
        payload_truncated=len(data) > PAYLOAD_LIMIT,
        correlation_id=correlation_id if isinstance(correlation_id, str) else task_id,
        reason=reason,
        error=error,
    )


def stored_task(event: TaskDeadLettered) -> TaskiqMessage:
    """The command a dead letter kept, decoded; ValueError saying why it cannot be sent again.

    An event a listener gave up on is still in EVENTS (nothing to send again); a
    payload cut at PAYLOAD_LIMIT, or one no worker could decode, is not the task.
    """
    if event.stream != TASKS:
        raise ValueError(
            f"{event.task_name} gave up on an event, which is still in {event.stream}: "
            "nothing to send again"
        )
    if event.payload_truncated:
        raise ValueError(f"its payload was cut at {PAYLOAD_LIMIT:,} bytes when it was recorded")
    if event.reason != "max_deliveries":
        raise ValueError(f"a worker refused it ({event.reason}): {event.error}")
    try:
        message = TaskiqMessage.model_validate_json(event.payload)
        message.parse_labels()
    except Exception as exc:  # ValidationError, ValueError: not a task message
        raise ValueError(f"its payload is not a task message: {type(exc).__name__}") from exc
    if message.task_name != event.task_name:
        raise ValueError(f"its payload names {message.task_name}, not {event.task_name}")
    return message


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
    event = dead_letter(
        stream, consumer, seq, deliveries, stored.subject or "", stored.headers, stored.data or b""
    )
    await publish_event(broker, event)
    if stream == TASKS:
        await store_dead_letter(
            broker, event.task_id, f"the server gave up after {deliveries} deliveries"
        )
        await broker.js.delete_msg(stream, seq)
    logger.warning(
        "dead letter: %s (%s) after %d deliveries, stored as event %s",
        event.task_name, event.task_id, deliveries, event.event_id,
    )  # fmt: skip


async def record_refused(
    broker: OneManageBroker, msg: Msg, reason: DeadLetterReason, error: str
) -> None:
    """Record a command a worker refused (undecodable, wrong subject) as a dead letter.

    The id is the one an advisory for the same message would get, so a
    redelivery refused again, or a later max-deliveries, is stored once.
    The caller acks the message once this returns.
    """
    meta = msg.metadata
    event = dead_letter(
        meta.stream,
        meta.consumer or "",
        meta.sequence.stream,
        meta.num_delivered or 1,
        msg.subject,
        msg.headers,
        msg.data or b"",
        reason,
        error,
    )
    await publish_event(broker, event)
    await store_dead_letter(broker, event.task_id, f"refused by a worker ({reason}): {error}")
    logger.warning(
        "dead letter: %s (%s) refused, %s: %s; stored as event %s",
        event.task_name, event.task_id, reason, error, event.event_id,
    )  # fmt: skip


async def watch_dead_letters(broker: OneManageBroker) -> list[Subscription]:
    """Subscribe this worker to the max-deliveries advisories of TASKS and EVENTS, and
    have its lanes record the commands they refuse (engine.consuming)."""
    broker.record_refused = functools.partial(record_refused, broker)

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
