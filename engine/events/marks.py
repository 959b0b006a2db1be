"""Listener marks: which events a listener has handled, so a redelivery is not handled twice.

EVENTS delivers at least once: an event whose handler ran but whose ack never
reached the server (the worker died, the link dropped) comes back. Each
listener writes ``<durable>.<event_id>`` to the MARKS_BUCKET after its handler
succeeded, and looks the mark up only for a redelivery (attempt > 1), so a
first delivery never pays a round trip. Marks expire after ``marks_ttl``.
"""

from __future__ import annotations

import hashlib
import logging
import re

from nats.js.errors import BucketNotFoundError, KeyNotFoundError

from engine.broker import OneManageBroker
from engine.errors import TransientError
from engine.streams import MARKS_BUCKET

logger = logging.getLogger(__name__)

MARK = b"1"
_PLAIN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _token(text: str) -> str:
    """``text`` as one key token: itself when plain, else ``=`` and a digest (never plain)."""
    if _PLAIN.match(text):
        return text
    return "=" + hashlib.sha256(text.encode()).hexdigest()


def mark_key(durable: str, event_id: str) -> str:
    """The key of ``event_id`` handled by ``durable``; safe for any text, no two collide."""
    return f"{_token(durable)}.{_token(event_id)}"


async def was_handled(broker: OneManageBroker, durable: str, event_id: str) -> bool:
    """Whether ``durable`` marked ``event_id`` as handled.

    A lookup that fails is a TransientError: the delivery comes back later,
    instead of being handled again (or dropped) on a guess.
    """
    try:
        kv = await broker.key_value(MARKS_BUCKET)
        await kv.get(mark_key(durable, event_id))
    except (KeyNotFoundError, BucketNotFoundError):
        return False  # deleted or expired marks are KeyNotFoundError too
    except Exception as exc:
        raise TransientError(f"cannot look up the mark of {event_id} for {durable}: {exc}") from exc
    return True


async def mark_handled(broker: OneManageBroker, durable: str, event_id: str) -> None:
    """Mark ``event_id`` as handled by ``durable`` with a core publish, never waiting.

    A JetStream publish would put a round trip on every event of every listener
    to guard a rare case. The KV stream stores a core publish to its subject all
    the same, and the mark goes out on the same connection ahead of the
    delivery's ack, so it is lost only with the ack, between the handler's end
    and the next flush (a confirmed mark has that window too, until its ack).
    What it gives up is a confirmation: a mark the marks stream dropped (an
    election, a full store) means a later redelivery is handled again, as
    before marks (at least once).
    """
    try:
        await broker.nc.publish(f"$KV.{MARKS_BUCKET}.{mark_key(durable, event_id)}", MARK)
    except Exception as exc:  # the handler ran: failing now would only run it again
        logger.warning("listener %s could not mark %s: %s", durable, event_id, exc)
