"""Storing one message in JetStream: retried through elections and outages, never twice.

Every failure that means "not stored yet" is retried with the same
``Nats-Msg-Id`` and a bounded back-off until ``publish_deadline``: a timeout
(it may have been stored: the stream's duplicate window makes the retry a
no-op), no responders or no stream response (a stream leader is being elected,
a node is recovering), a 503 during recovery, a full outbound buffer while
reconnecting. What cannot get better by waiting (a message over the size cap,
a full store, a write-once subject already written, a closed connection)
fails at once. Either way the caller gets one error type, PublishError, which
says whether the message may have been stored after all (``outcome``
"unknown") or certainly was not ("not_stored").
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import PubAck

from engine.errors import NotConnectedError, PublishError, StoreFullError
from engine.pubacks import pub_acks
from engine.routing import MSG_ID_HEADER

logger = logging.getLogger(__name__)

# JetStream's "insufficient resources" (a full store or account limit): waiting does not help.
INSUFFICIENT_RESOURCES = 10023
MESSAGE_TOO_LARGE = 10054  # over the stream's max_msg_size
# "maximum messages per subject exceeded": a write-once subject (discard new per subject)
# already holds its message. A 503 like an election, but it stays true.
SUBJECT_TAKEN = 10077
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 1.0

# The message may have reached the stream: only the duplicate window makes a retry safe.
_MAYBE_STORED = (TimeoutError, nats.errors.TimeoutError, nats.errors.StaleConnectionError)
# Certainly not stored, and worth another try.
_NOT_STORED = (
    nats.js.errors.NoStreamResponseError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
)


# What a publish can fail with; anything else is a bug and shows as itself.
_KNOWN = (nats.errors.Error, nats.js.errors.Error, NotConnectedError, TimeoutError)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _MAYBE_STORED + _NOT_STORED):
        return True
    return isinstance(exc, nats.js.errors.ServiceUnavailableError) and exc.err_code not in (
        INSUFFICIENT_RESOURCES,
        SUBJECT_TAKEN,
    )


def subject_taken(exc: BaseException) -> bool:
    """Was this publish refused because its write-once subject holds a message already?"""
    cause = exc.__cause__ if isinstance(exc, PublishError) else exc
    return isinstance(cause, nats.js.errors.APIError) and cause.err_code == SUBJECT_TAKEN


async def publish(
    nc: Client,
    subject: str,
    payload: bytes,
    *,
    msg_id: str,
    headers: dict[str, str] | None = None,
    deadline: float = 30.0,
    timeout: float = 2.0,
) -> PubAck:
    """Store ``payload`` on ``subject``; retry "not stored yet" for ``deadline`` seconds."""
    acks = pub_acks(nc)
    all_headers = {MSG_ID_HEADER: msg_id, **(headers or {})}
    give_up = time.monotonic() + max(deadline, 0.0)
    maybe_stored = False
    attempt = 0
    while True:
        attempt += 1
        left = give_up - time.monotonic()
        try:
            return await acks.publish(
                subject, payload, all_headers, timeout=max(min(timeout, left), 0.05)
            )
        except _KNOWN as exc:
            maybe_stored = maybe_stored or isinstance(exc, _MAYBE_STORED)
            left = give_up - time.monotonic()
            if not _retryable(exc) or left <= 0:
                raise _failure(exc, subject, msg_id, attempt, maybe_stored, len(payload)) from exc
            if attempt == 1 or attempt % 10 == 0:
                logger.warning(
                    "publish to %s not stored yet (%s, attempt %d, msg id %s): retrying",
                    subject, type(exc).__name__, attempt, msg_id,
                )  # fmt: skip
            await asyncio.sleep(min(BACKOFF_FIRST * 2 ** (attempt - 1), BACKOFF_MAX, left))


def _failure(
    exc: Exception, subject: str, msg_id: str, attempts: int, maybe_stored: bool, size: int
) -> PublishError:
    reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, nats.js.errors.APIError) and exc.err_code == MESSAGE_TOO_LARGE:
        return PublishError(
            f"cannot publish to {subject}: the message is {size} bytes, more than the stream "
            f"stores in one message (max_msg_size); it was not stored",
            subject=subject,
            msg_id=msg_id,
        )
    if subject_taken(exc):
        return PublishError(
            f"cannot publish to {subject}: it holds its one message already and the stream "
            f"refuses to replace it (write-once); it was not stored",
            subject=subject,
            msg_id=msg_id,
        )
    if isinstance(exc, nats.js.errors.ServiceUnavailableError) and not _retryable(exc):
        return StoreFullError(
            f"cannot publish to {subject}: the JetStream store is full or over its account "
            f"limits ({reason}); free space, raise the limits or shorten the retention",
            subject=subject,
            msg_id=msg_id,
        )
    outcome = "unknown" if maybe_stored else "not_stored"
    what = (
        "the outcome is unknown: it may have been stored (retrying with the same msg id is safe)"
        if maybe_stored
        else "it was not stored"
    )
    return PublishError(
        f"cannot publish {msg_id} to {subject} after {attempts} attempt(s) ({reason}): {what}",
        subject=subject,
        msg_id=msg_id,
        outcome=outcome,
    )
