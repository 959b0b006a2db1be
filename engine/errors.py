"""The engine's error types: few, typed, and each with a reason a person can act on."""

from __future__ import annotations

import asyncio

import nats.errors


class OneManageError(Exception):
    """Base of every error the engine raises on purpose."""


class NotConnectedError(OneManageError):
    """The broker has no NATS connection yet (startup() was not awaited)."""


class PermissionDeniedError(OneManageError):
    """The server refused this user an operation: its role does not allow it (engine.roles).

    The server answers a forbidden request with nothing (the refusal goes to
    the connection's error callback), so the request would just time out;
    this error names what was refused instead.
    """

    code = "permission_denied"

    def __init__(self, what: str) -> None:
        super().__init__(f"permission denied: {what}")
        self.what = what


class PublishError(OneManageError):
    """A message could not be confirmed as stored in JetStream before the deadline.

    ``subject`` and ``msg_id`` say which message, so a caller can retry with the
    same ``msg_id`` and still get exactly one stored copy. ``outcome`` is
    "not_stored" when it certainly was not stored, "unknown" when an attempt
    timed out and it may have been (a kick may then still run).
    """

    def __init__(
        self, message: str, *, subject: str, msg_id: str, outcome: str = "not_stored"
    ) -> None:
        super().__init__(message)
        self.subject = subject
        self.msg_id = msg_id
        self.outcome = outcome


class StoreFullError(PublishError):
    """JetStream refused the message for lack of resources (store full, account limits)."""


class StreamConfigError(OneManageError):
    """An existing stream differs from its spec in a field that cannot be changed."""

    def __init__(self, stream: str, field: str, have: object, want: object) -> None:
        have_text, want_text = (str(getattr(v, "value", v)) for v in (have, want))
        super().__init__(
            f"stream {stream}: {field} is {have_text!r} on the server but {want_text!r} is "
            f"required; {field} cannot be changed in place (delete the stream or fix the settings)"
        )
        self.stream = stream
        self.field = field
        self.have = have
        self.want = want


class DeadLetteredError(OneManageError):
    """The task will not run: the server gave up on it, or a worker refused it.

    Stored as the task's result when it is dead-lettered, so whoever waits
    for it (a workflow step) learns now instead of at its own timeout.
    """

    code = "dead_lettered"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TransientError(OneManageError):
    """Raise from a task when trying again later may succeed.

    The delivery is negatively acknowledged with a back-off instead of being
    acknowledged, until the consumer's max deliver is reached; then the server's
    max-deliveries advisory turns it into a TaskDeadLettered event.
    """


# Failures of the link to the server rather than of the work: worth another try.
_TRANSIENT = (
    TransientError,
    PublishError,
    NotConnectedError,
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
)


def is_transient(exc: BaseException) -> bool:
    """Should the delivery that raised ``exc`` be tried again later?

    Errors that wrap one of these (taskiq's SendTaskError around a
    PublishError, a ResultGetError around a timeout) are classified by their
    cause, so an outage is never mistaken for a failure of the work. One of the
    engine's own errors says what it is: its cause is not looked at.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _TRANSIENT):
            return True
        if isinstance(current, OneManageError):
            return False
        seen.add(id(current))
        current = current.__cause__
    return False
