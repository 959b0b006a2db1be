"""Event tasks: each listener has its own durable on EVENTS, so each gets every event.

``event_listener`` is the thin layer over ``@broker.task`` that every listener
shares: it parses the raw payload with parse_event (which checks the version
with is_version_compatible), counts and logs what it skips, and keeps going
after a handler error, and makes every listener idempotent per event id under
redelivery (engine.events.marks): a redelivered event its durable already
handled is counted as a duplicate, not handled again. Its counters travel in
the worker heartbeat. User code takes the short form bound to the process's
broker: ``engine.app.event_listener``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from taskiq import AsyncTaskiqDecoratedTask

from engine.broker import OneManageBroker
from engine.errors import is_transient
from engine.events.marks import mark_handled, was_handled
from engine.events.schemas import BaseEvent, ListenerCounters, UnparsedEvent, parse_event
from engine.routing import Deliver, listener
from engine.streams import EVENTS_SUBJECTS

logger = logging.getLogger(__name__)

Handler = Callable[[BaseEvent], Awaitable[None]]
ListenerTask = AsyncTaskiqDecoratedTask[[Any], Coroutine[Any, Any, None]]


def event_listener(
    broker: OneManageBroker,
    durable: str,
    subject: str = EVENTS_SUBJECTS,
    *,
    deliver: Deliver = "new",
) -> Callable[[Handler], ListenerTask]:
    """Register a handler on ``broker`` as the event task ``listener.<durable>``."""

    def decorate(handler: Handler) -> ListenerTask:
        counters = broker.listener_counters.setdefault(durable, ListenerCounters())

        async def receive(payload: Any) -> None:
            event = parse_event(payload)
            if isinstance(event, UnparsedEvent):
                counters.skipped[event.reason] = counters.skipped.get(event.reason, 0) + 1
                logger.warning(
                    "listener %s skipped an event: %s (%s)",
                    durable, event.reason, event.detail,
                    extra={"event_type": event.event_type, "event_id": event.event_id},
                )  # fmt: skip
                return
            delivery = broker.delivery(f"{durable}:{event.event_id}")
            if (
                delivery is not None
                and delivery.attempt > 1
                and await was_handled(broker, durable, event.event_id)
            ):
                counters.duplicates += 1
                logger.info("listener %s already handled %s", durable, event.event_id)
                return
            try:
                await handler(event)
            except Exception as exc:
                counters.failed += 1
                if is_transient(exc):
                    raise  # redelivered with back-off
                logger.exception("listener %s failed on %s", durable, event.event_id)
                return  # a bug in a listener must not block the events behind it
            counters.handled += 1
            await mark_handled(broker, durable, event.event_id)

        receive.__name__ = handler.__name__
        receive.__doc__ = handler.__doc__
        task: ListenerTask = broker.task(
            task_name=f"listener.{durable}", **listener(durable, subject, deliver)
        )(receive)
        return task

    return decorate
