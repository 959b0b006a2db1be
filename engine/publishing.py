"""Storing one message in JetStream, retried safely.

A publish that timed out may still have been stored; with the same
``Nats-Msg-Id`` the stream's duplicate window turns the retry into a no-op,
so retrying is safe. Every other failure becomes one error type, PublishError.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from engine.errors import NotConnectedError, PublishError
from engine.routing import MSG_ID_HEADER

logger = logging.getLogger(__name__)


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    headers: dict[str, str] | None = None,
    attempts: int = 3,
) -> PubAck:
    """Store ``payload`` on ``subject``, retrying a timeout with the same Nats-Msg-Id."""
    all_headers = {MSG_ID_HEADER: msg_id, **(headers or {})}
    attempts = max(1, attempts)
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return await js.publish(subject, payload, headers=all_headers)
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            last = exc
            logger.warning(
                "publish to %s timed out (attempt %d/%d, msg id %s)",
                subject, attempt, attempts, msg_id,
            )  # fmt: skip
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        except (nats.errors.Error, nats.js.errors.Error, NotConnectedError) as exc:
            raise PublishError(
                f"cannot publish to {subject}: {type(exc).__name__}: {exc}",
                subject=subject,
                msg_id=msg_id,
            ) from exc
    raise PublishError(
        f"cannot publish to {subject}: no acknowledgement after {attempts} attempts",
        subject=subject,
        msg_id=msg_id,
    ) from last
