"""The read-only view of the system: stream and consumer figures, event history, workers.

Nothing here acknowledges, deletes, purges or creates anything: history is
read through one kind of reader (EventReader: batched direct get, no
consumer) and figures through stream and consumer info, so a monitoring
user can be locked down to read-only rights. Every function takes the broker
whose connection it uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js.api import ConsumerInfo
from nats.js.errors import APIError, NotFoundError

from engine import storage
from engine.broker import OneManageBroker
from engine.direct import (
    NO_RESPONDERS,
    PENDING,
    SEQUENCE,
    SUBJECT,
    Answer,
    DirectGet,
    DirectGetUnavailable,
)
from engine.errors import PermissionDeniedError
from engine.events.schemas import BaseEvent, WorkerHeartbeat, parse_event
from engine.streams import EVENTS, EVENTS_SUBJECTS, TASKS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamFigures:
    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    first_ts: datetime | None
    last_ts: datetime | None
    consumers: int


@dataclass(frozen=True)
class ConsumerFigures:
    stream: str
    name: str
    filter_subject: str | None
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int
    ack_floor: int  # stream sequence below which everything is acknowledged
    delivered: int  # last stream sequence delivered
    deliveries: int  # deliveries so far (consumer sequence)
    acked: int  # acknowledged deliveries so far (ack floor's consumer sequence)
    last_active: datetime | None
    stream_messages: int

    @property
    def impossible(self) -> bool:
        """Figures a server bug can produce (nats-server#4539, #5608): flag, don't trust."""
        return self.pending < 0 or self.pending > self.stream_messages


async def stream_figures(
    broker: OneManageBroker, name: str, timeout: float = 2.0
) -> StreamFigures | None:
    """Figures of one stream; None when it does not exist."""
    # nats-py's StreamState drops first_ts/last_ts, which say how old the stream's
    # ends are, so this reads the raw JSON of the same read-only API call.
    reply = await broker.nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=timeout)
    info = json.loads(reply.data)
    error = info.get("error")
    if error:
        if error.get("code") == 404:
            return None
        raise APIError.from_error(error)
    state = info.get("state", {})
    return StreamFigures(
        name=name,
        messages=int(state.get("messages", 0)),
        bytes=int(state.get("bytes", 0)),
        first_seq=int(state.get("first_seq", 0)),
        last_seq=int(state.get("last_seq", 0)),
        first_ts=_ts(state.get("first_ts")),
        last_ts=_ts(state.get("last_ts")),
        consumers=int(state.get("consumer_count", 0)),
    )


def _ts(value: object) -> datetime | None:
    """A server timestamp (RFC 3339, nanoseconds), or None for the zero time."""
    if not isinstance(value, str) or not value or value.startswith("0001"):
        return None
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if match is None:
        return None
    fraction = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + fraction + zone)


async def consumer_figures(broker: OneManageBroker) -> list[ConsumerFigures]:
    """Figures of every durable on TASKS and EVENTS (ephemeral readers are nobody's backlog)."""
    js = broker.js
    figures = []
    for stream in (TASKS, EVENTS):
        try:
            info = await js.stream_info(stream)
            consumers = await js.consumers_info(stream)
        except NotFoundError:
            continue
        for consumer in consumers:
            if not consumer.config.durable_name:
                continue  # an ephemeral reader (a nats CLI, an ordered consumer): nobody's backlog
            figures.append(
                ConsumerFigures(
                    stream=stream,
                    name=consumer.name,
                    filter_subject=consumer.config.filter_subject,
                    pending=consumer.num_pending or 0,
                    ack_pending=consumer.num_ack_pending or 0,
                    redelivered=consumer.num_redelivered or 0,
                    waiting=consumer.num_waiting or 0,
                    ack_floor=consumer.ack_floor.stream_seq if consumer.ack_floor else 0,
                    delivered=consumer.delivered.stream_seq if consumer.delivered else 0,
                    deliveries=consumer.delivered.consumer_seq if consumer.delivered else 0,
                    acked=consumer.ack_floor.consumer_seq if consumer.ack_floor else 0,
                    last_active=_last_active(consumer),
                    stream_messages=info.state.messages,
                )
            )
    return figures


def _last_active(consumer: ConsumerInfo) -> datetime | None:
    times = [
        seq.last_active
        for seq in (consumer.delivered, consumer.ack_floor)
        if seq is not None and seq.last_active is not None
    ]
    return max(times) if times else None


@dataclass(frozen=True)
class Delivered:
    """One stored event as a reader sees it: where it is and how far behind the reader is."""

    seq: int
    pending: int
    subject: str
    data: bytes


_HISTORY_ATTEMPTS = 5  # a history read raises after this many failures in a row
_POLL = 0.1  # seconds a caught-up reader waits before it asks again
_BATCH_BYTES = 4 * 1024**2  # a batch stops short of this (one message is always sent)
_SETTLE_LIMIT = 10.0  # seconds a history read waits at most for lagging replicas


class EventReader:
    """EVENTS from a time or a sequence on, in order: the one reader of the history.

    A history read (``history()``) returns everything stored up to the
    stream's last sequence at the moment of the call, however slow the
    server or the caller: idleness never ends it, only reaching that sequence
    (or a server that has nothing more to deliver) does. ``follow()`` is the
    same reader going on live.

    It reads by batched direct get (engine.direct), not through a consumer:
    nothing is made on the server, so nothing has to expire, a reader that
    vanished leaves nothing behind, and a read-only user needs no right to
    create consumers (which permissions cannot bound: such a user could make
    one that never expires, or pull from a worker's durable). What it takes:
    publish to ``$JS.API.DIRECT.GET.EVENTS``, subscribe to its inbox. It asks
    for ``batch`` messages from the next sequence, and again only when the
    caller has taken them: the client never holds more than one batch.
    Answers come in on a plain callback subscription (nats-py's fetch()
    costs a task and a timer per message). A caught-up reader asks again
    every ``_POLL`` seconds; a request unanswered for ``idle`` + 2 seconds
    (no connection) is asked again.

    In a cluster any replica answers, one a little behind the leader too, so
    a short answer ends a history read only from a single server, or once
    the stream info showed every replica caught up before it was asked.
    """

    def __init__(
        self,
        broker: OneManageBroker,
        start: datetime | int,
        subject: str = EVENTS_SUBJECTS,
        *,
        batch: int = 250,
        idle: float = 1.0,
    ) -> None:
        self.broker = broker
        self.position = start  # a time until the first message, then the next sequence
        self.subject = subject
        self.batch = batch
        self.idle = idle
        self.received = 0
        self._get: DirectGet | None = None

    @property
    def buffered(self) -> int:
        """Messages received and not taken yet: never more than one batch."""
        return self._get.buffered if self._get is not None else 0

    async def history(self) -> AsyncIterator[Delivered]:
        """Every stored message from the start up to the stream's last sequence now."""
        try:
            info = await self.broker.js.stream_info(EVENTS)
        except NotFoundError:
            return  # no EVENTS stream: nothing stored
        if not info.state.messages:
            return
        if isinstance(self.position, int) and self.position > info.state.last_seq:
            return
        if not info.config.allow_direct:  # a worker of this version turns it on at start-up
            raise DirectGetUnavailable(EVENTS, NO_RESPONDERS, "EVENTS does not allow direct get")
        replicated = bool(info.cluster and info.cluster.replicas)
        async for batch in self._batches(info.state.last_seq, replicated=replicated):
            for delivered in batch:
                yield delivered

    async def follow(
        self, on_idle: Callable[[], None] | None = None
    ) -> AsyncIterator[list[Delivered]]:
        """The history, then live messages, a batch at a time, until the caller stops.

        ``on_idle`` is told whenever a request found nothing new to read.
        Connection trouble is waited out, never raised.
        """
        async for batch in self._batches(None, on_idle=on_idle):
            yield batch

    async def run(
        self, deliver: Callable[[Delivered], None], on_idle: Callable[[], None] | None = None
    ) -> None:
        """``follow()`` handing each message to ``deliver``, with a turn for the loop per batch."""
        async for batch in self.follow(on_idle):
            for delivered in batch:
                deliver(delivered)
            await asyncio.sleep(0)

    async def _batches(
        self,
        until: int | None,
        on_idle: Callable[[], None] | None = None,
        replicated: bool = False,
    ) -> AsyncIterator[list[Delivered]]:
        """Batches up to sequence ``until`` (None: on and on), each asked for once taken."""
        get = self._get = DirectGet(self.broker.nc, EVENTS)
        failures = 0
        trusted = False  # every replica was caught up before the last request went out
        short_since: float | None = None
        try:
            while True:
                try:
                    answer = await get.ask(self._request(), self.idle + 2)
                except PermissionDeniedError:
                    raise  # this user may not read EVENTS: waiting will not change that
                except Exception as exc:  # no answer, no connection, no EVENTS (yet)
                    failures += 1
                    if until is not None and failures >= _HISTORY_ATTEMPTS:
                        raise
                    logger.debug("event reader: no batch (%s)", exc)
                    await asyncio.sleep(min(0.5 * failures, 2.0))
                    continue
                failures = 0
                batch, done = self._take(answer, until)
                if batch:
                    yield batch
                if done:
                    return
                if answer.pending > 0:
                    continue  # more stored: ask again at once
                if until is not None:
                    if batch or short_since is None:
                        short_since = time.monotonic()
                    if not replicated or trusted:
                        return  # the server that answered had everything up to ``until``
                    if time.monotonic() - short_since > _SETTLE_LIMIT:
                        logger.warning("event reader: replicas still behind, history ends here")
                        return
                    trusted = await self._caught_up(until)
                elif not batch and on_idle is not None:
                    on_idle()
                await asyncio.sleep(_POLL)
        finally:
            self._get = None
            await get.close()

    def _request(self) -> dict[str, Any]:
        request: dict[str, Any] = {
            "batch": self.batch,
            "max_bytes": _BATCH_BYTES,
            "next_by_subj": self.subject,
        }
        if isinstance(self.position, datetime):
            request["start_time"] = self.position.astimezone(UTC).isoformat()
        else:
            request["seq"] = max(self.position, 1)
        return request

    def _take(self, answer: Answer, until: int | None) -> tuple[list[Delivered], bool]:
        """The answer's messages up to ``until``, and whether the history read is complete."""
        batch = []
        done = False
        for msg in answer.messages:
            headers = msg.headers or {}
            seq = int(headers[SEQUENCE])
            if until is not None and seq > until:
                done = True  # stored after the history read began: not part of it
                break
            batch.append(Delivered(seq, int(headers[PENDING]), headers[SUBJECT], msg.data))
        if batch:
            self.position = batch[-1].seq + 1
            self.received += len(batch)
            done = done or (until is not None and batch[-1].seq >= until)
        return batch, done

    async def _caught_up(self, until: int) -> bool:
        """Whether any replica's answer from now on is the whole truth up to ``until``.

        True when every replica still up has the leader's log (it applies it
        within the poll wait), or when nothing up to ``until`` is left to read.
        """
        try:
            info = await self.broker.js.stream_info(EVENTS)
        except Exception:
            return False
        if info.state.first_seq > until:
            return True  # expired or purged since the read began
        peers = info.cluster.replicas if info.cluster is not None else None
        return all(peer.offline or (peer.current and not peer.lag) for peer in peers or [])


async def read_history(
    broker: OneManageBroker, start: datetime | int, subject: str = EVENTS_SUBJECTS
) -> AsyncIterator[Delivered]:
    """Stored EVENTS messages from ``start`` (a time or a sequence) up to now, oldest first."""
    async for delivered in EventReader(broker, start, subject).history():
        yield delivered


async def recent_events(
    broker: OneManageBroker, since: timedelta, subject: str = EVENTS_SUBJECTS
) -> list[BaseEvent]:
    """The parsed events of the last ``since`` (unreadable ones left out)."""
    events = []
    async for delivered in read_history(broker, datetime.now(UTC) - since, subject):
        event = parse_event(delivered.data, delivered.subject)
        if isinstance(event, BaseEvent):
            events.append(event)
    return events


def missed_events(workers: Iterable[WorkerHeartbeat]) -> dict[str, int]:
    """Events each listener durable missed to discard-old, as its workers report them.

    Every process of a durable sees the same gap, so this is the largest
    count per durable, not the sum.
    """
    missed: dict[str, int] = {}
    for beat in workers:
        for durable, counters in beat.listeners.items():
            if counters.missed:
                missed[durable] = max(missed.get(durable, 0), counters.missed)
    return missed


async def follow(
    broker: OneManageBroker, since: datetime, subject: str = EVENTS_SUBJECTS
) -> AsyncIterator[BaseEvent]:
    """Every readable event stored since ``since``, then live ones, until the caller stops.

    It starts from a time, so nothing published between "submitted" and
    "subscribed" is missed, and it survives reconnects and server restarts.
    """
    async for batch in EventReader(broker, since, subject).follow():
        for delivered in batch:
            event = parse_event(delivered.data, delivered.subject)
            if isinstance(event, BaseEvent):
                yield event


async def round_trip_ms(broker: OneManageBroker) -> float:
    """The server's round-trip time now, in milliseconds."""
    return await broker.nc.rtt(timeout=2) * 1000


async def artefact(broker: OneManageBroker, key: str) -> bytes:
    """A workflow artefact (preview, layers.json...): read-only access for the console."""
    return await storage.get_artefact(broker, key)
