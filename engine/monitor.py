"""The read-only view of the system: stream and consumer figures, event history, workers.

Nothing here acknowledges, deletes, purges or creates a durable: history is
read through one kind of reader (EventReader: a nameless, ack-less, ephemeral
pull consumer) and figures through stream and consumer info, so a monitoring
user can be locked down to read-only rights. Every function takes the broker
whose connection it uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from engine import storage
from engine.broker import OneManageBroker
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
                continue  # an ephemeral reader (a console, a history read): nobody's backlog
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


def _from(start: datetime | int) -> ConsumerConfig:
    if isinstance(start, int):
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start)
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)


@dataclass(frozen=True)
class Delivered:
    """One stored event as a reader sees it: where it is and how far behind the reader is."""

    seq: int
    pending: int
    subject: str
    data: bytes


_HISTORY_ATTEMPTS = 5  # a history read raises after this many failures in a row
_Outcome = str  # "more", "idle", "lost" (open a new consumer) or "done"


class EventReader:
    """EVENTS from a time or a sequence on, in order: the one reader of the history.

    A history read (``history()``) returns everything stored up to the
    stream's last sequence at the moment of the call, however slow the
    server or the caller: idleness never ends it, only reaching that sequence
    (or a reader that has nothing more to deliver) does. ``follow()`` is the
    same reader going on live.

    It reads through an ephemeral pull consumer made without a name (the
    server refuses a durable on that API subject, so a read-only user can
    have it), with no acks, so the durables' counters stay untouched. It asks
    for ``batch`` messages at a time and asks again only when the caller has
    taken them: the client never holds more than one batch. Messages come in
    on a plain callback subscription (nats-py's fetch() costs a task and a
    timer per message, which capped reading at ~20k/s). When a request comes
    back empty the reader asks the server about its consumer: one that is
    gone (a restarted server, or a caller stalled past its inactivity
    threshold) or that sent more than arrived is replaced by a new one from
    the next sequence, on a new inbox, so nothing is skipped or read twice.
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
        self._until: int | None = None
        self._done = False
        self._pending: list[Delivered] = []
        self._got = 0  # messages from the current consumer, delivered or not
        self._left = 0  # messages still due on the current request
        self._ended = asyncio.Event()
        self._subscription: Subscription | None = None
        self._inbox = ""
        self._generation = 0  # one per consumer: messages for an older one are dropped

    @property
    def buffered(self) -> int:
        """Messages received and not taken yet: never more than one batch."""
        waiting = self._subscription.pending_msgs if self._subscription is not None else 0
        return waiting + len(self._pending)

    async def history(self) -> AsyncIterator[Delivered]:
        """Every stored message from the start up to the stream's last sequence now."""
        try:
            info = await self.broker.js.stream_info(EVENTS)
        except NotFoundError:
            return  # no EVENTS stream: nothing stored
        async for batch in self._batches(until=info.state.last_seq):
            for delivered in batch:
                yield delivered

    async def follow(
        self, on_idle: Callable[[], None] | None = None
    ) -> AsyncIterator[list[Delivered]]:
        """The history, then live messages, a batch at a time, until the caller stops.

        ``on_idle`` is told whenever a request found nothing new to read.
        Connection trouble is waited out, never raised.
        """
        async for batch in self._batches(until=None, on_idle=on_idle):
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
        self, until: int | None, on_idle: Callable[[], None] | None = None
    ) -> AsyncIterator[list[Delivered]]:
        self._until, self._done = until, False
        failures = 0
        while not self._done:
            try:
                name, pending = await self._open()
            except NotFoundError:  # no EVENTS stream yet: a worker creates it at start-up
                if until is not None:
                    return
                await asyncio.sleep(1)
                continue
            except Exception as exc:  # not connected: nats-py is reconnecting
                failures += 1
                if until is not None and failures >= _HISTORY_ATTEMPTS:
                    raise
                logger.debug("event reader: cannot open a consumer (%s)", exc)
                await asyncio.sleep(min(0.5 * failures, 5.0))
                continue
            failures = 0
            try:
                if until is not None and pending == 0:
                    return  # nothing stored from the start on
                while True:
                    batch, outcome = await self._request(name)
                    if batch:
                        yield batch
                    if outcome in ("done", "lost"):
                        break
                    if outcome == "idle" and on_idle is not None:
                        on_idle()
            finally:
                await self._close()

    async def _open(self) -> tuple[str, int]:
        """A new inbox and a new consumer from ``position``: its name and pending count."""
        nc = self.broker.nc
        self._inbox = nc.new_inbox()
        self._generation += 1
        self._got = 0
        on_msg = functools.partial(self._on_msg, self._generation)
        self._subscription = await nc.subscribe(self._inbox, cb=on_msg)
        config = _from(self.position)
        config.ack_policy = AckPolicy.NONE
        config.filter_subject = self.subject
        config.inactive_threshold = 10.0  # the server drops it soon after we are gone
        try:
            info = await self.broker.js.add_consumer(EVENTS, config)
        except BaseException:
            await self._close()
            raise
        return str(info.name), int(info.num_pending or 0)

    async def _close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _on_msg(self, generation: int, msg: Msg) -> None:
        if generation != self._generation:
            return  # a straggler for a consumer this reader has replaced
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None:
            if status != "100":  # 404 nothing left, 408 expired, 409 gone: this request ended
                self._ended.set()
            return
        metadata = msg.metadata
        seq = metadata.sequence.stream
        self._got += 1
        self._left -= 1
        if self._done or (self._until is not None and seq > self._until):
            self._done = True  # stored after the history read began: not part of it
        else:
            self.position = seq + 1
            self.received += 1
            self._pending.append(Delivered(seq, metadata.num_pending, msg.subject, msg.data))
            if self._until is not None and (seq >= self._until or metadata.num_pending == 0):
                self._done = True
        if self._left <= 0 or self._done:
            self._ended.set()

    def _take(self) -> list[Delivered]:
        batch, self._pending = self._pending, []
        return batch

    async def _request(self, name: str) -> tuple[list[Delivered], _Outcome]:
        """Ask consumer ``name`` for a batch and wait for it to end; what came, and what next."""
        nc, js = self.broker.nc, self.broker.js
        self._left = self.batch
        self._ended.clear()
        request = {"batch": self.batch, "expires": int(self.idle * 1e9)}
        try:
            await nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS}.{name}",
                json.dumps(request).encode(),
                reply=self._inbox,
            )
            async with asyncio.timeout(self.idle + 2):
                await self._ended.wait()
        except Exception:  # not connected, or no answer at all: ask the server below
            pass
        batch = self._take()
        if self._done:
            return batch, "done"
        if batch:
            return batch, "more"
        try:
            info = await js.consumer_info(EVENTS, name)
        except Exception:
            return self._take(), "lost"
        batch = self._take()  # what came in while we asked
        if self._done:
            return batch, "done"
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if delivered is not None and delivered > self._got:
            return batch, "lost"  # sent and not here: read it again through a new consumer
        if batch:
            return batch, "more"
        if self._until is not None and not info.num_pending:
            return batch, "done"
        return batch, "idle"


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
        event = parse_event(delivered.data)
        if isinstance(event, BaseEvent):
            events.append(event)
    return events


async def live_workers(broker: OneManageBroker, missed_beats: int = 3) -> list[WorkerHeartbeat]:
    """The last heartbeat of each worker that beat within ``missed_beats`` intervals."""
    latest: dict[str, WorkerHeartbeat] = {}
    for event in await recent_events(broker, timedelta(minutes=2), "events.worker.heartbeat"):
        if isinstance(event, WorkerHeartbeat):
            latest[event.worker_id] = event
    now = datetime.now(UTC)
    return [
        beat
        for beat in latest.values()
        if beat.state == "running"
        and (now - beat.timestamp).total_seconds() <= beat.interval_s * missed_beats
    ]


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
            event = parse_event(delivered.data)
            if isinstance(event, BaseEvent):
                yield event


async def round_trip_ms(broker: OneManageBroker) -> float:
    """The server's round-trip time now, in milliseconds."""
    return await broker.nc.rtt(timeout=2) * 1000


async def artefact(broker: OneManageBroker, key: str) -> bytes:
    """A workflow artefact (preview, layers.json...): read-only access for the console."""
    return await storage.get_artefact(broker, key)
