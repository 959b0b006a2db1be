"""The read-only view of the system: stream and consumer figures, event history, workers.

Nothing here acknowledges, deletes, purges or creates a durable: history is
read through ephemeral consumers (ordered ones, or the console's nameless
pull reader) and figures through stream_info and
consumer_info, so a monitoring user can be locked down to read-only rights.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError

from engine.events.schemas import BaseEvent, WorkerHeartbeat, parse_event
from engine.streams import EVENTS, EVENTS_SUBJECTS, TASKS


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


async def stream_figures(nc: Client, name: str, timeout: float = 2.0) -> StreamFigures | None:
    """Figures of one stream; None when it does not exist."""
    # nats-py's StreamState drops first_ts/last_ts, which say how old the stream's
    # ends are, so this reads the raw JSON of the same read-only API call.
    reply = await nc.request(f"$JS.API.STREAM.INFO.{name}", b"", timeout=timeout)
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


async def consumer_figures(js: JetStreamContext) -> list[ConsumerFigures]:
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


async def _stored(
    js: JetStreamContext,
    start: datetime | int,
    subject: str,
    *,
    until_caught_up: bool = False,
    idle: float = 2.0,
    on_idle: Callable[[], None] | None = None,
) -> AsyncIterator[Msg]:
    """EVENTS messages from a time or sequence on, through an ordered (ephemeral) consumer.

    When the server restarts, the ordered consumer is gone and nats-py's own
    reset fails (it keeps the start time next to a start sequence: err 10094),
    so an idle reader checks that its consumer still exists and otherwise
    subscribes again from the next sequence. ``until_caught_up`` stops at the
    newest stored message (or after ``idle`` seconds of nothing); ``on_idle`` is
    told when ``idle`` seconds passed with nothing left to read.
    """
    position = start
    while True:
        try:
            subscription = await js.subscribe(
                subject, stream=EVENTS, ordered_consumer=True, config=_from(position)
            )
        except NotFoundError:
            if until_caught_up:
                return  # no EVENTS stream: nothing stored
            await asyncio.sleep(1)  # a worker creates it at start-up
            continue
        except Exception:
            if until_caught_up:
                raise
            await asyncio.sleep(1)  # not connected: nats-py is reconnecting
            continue
        try:
            while True:
                try:
                    # asyncio.timeout, not next_msg(timeout=): on Python 3.11 the wait_for
                    # inside nats-py can swallow a cancel, and a reader would never stop.
                    async with asyncio.timeout(idle):
                        msg = await subscription.next_msg(timeout=None)
                except TimeoutError:
                    if until_caught_up:
                        return
                    try:
                        await subscription.consumer_info()
                    except Exception:
                        break  # the reader is gone: subscribe again from ``position``
                    if on_idle is not None:
                        on_idle()
                    continue
                metadata = msg.metadata
                position = metadata.sequence.stream + 1
                yield msg
                if until_caught_up and metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


async def read_history(
    js: JetStreamContext, since: timedelta, subject: str = EVENTS_SUBJECTS
) -> AsyncIterator[Msg]:
    """Stored EVENTS messages of the last ``since``, oldest first, then stop.

    An ordered consumer: ephemeral, no acks, the durables' counters untouched.
    """
    start = datetime.now(UTC) - since
    async for msg in _stored(js, start, subject, until_caught_up=True, idle=1.0):
        yield msg


async def recent_events(
    js: JetStreamContext, since: timedelta, subject: str = EVENTS_SUBJECTS
) -> list[BaseEvent]:
    """The parsed events of the last ``since`` (unreadable ones left out)."""
    events = []
    async for msg in read_history(js, since, subject):
        event = parse_event(msg.data)
        if isinstance(event, BaseEvent):
            events.append(event)
    return events


async def live_workers(js: JetStreamContext, missed_beats: int = 3) -> list[WorkerHeartbeat]:
    """The last heartbeat of each worker that beat within ``missed_beats`` intervals."""
    latest: dict[str, WorkerHeartbeat] = {}
    for event in await recent_events(js, timedelta(minutes=2), "events.worker.heartbeat"):
        if isinstance(event, WorkerHeartbeat):
            latest[event.worker_id] = event
    now = datetime.now(UTC)
    return [
        beat
        for beat in latest.values()
        if beat.state == "running"
        and (now - beat.timestamp).total_seconds() <= beat.interval_s * missed_beats
    ]


async def follow(
    js: JetStreamContext, since: datetime, subject: str = EVENTS_SUBJECTS
) -> AsyncIterator[BaseEvent]:
    """Every readable event stored since ``since``, then live ones, until the caller stops.

    It starts from a time, so nothing published between "submitted" and
    "subscribed" is missed, and it survives reconnects and server restarts.
    """
    async for msg in _stored(js, since, subject):
        event = parse_event(msg.data)
        if isinstance(event, BaseEvent):
            yield event


@dataclass(frozen=True)
class Delivered:
    """One stored event as a reader sees it: where it is and how far behind the reader is."""

    seq: int
    pending: int
    data: bytes


class EventTail:
    """EVENTS from a time or a sequence on, history then live, handed to ``deliver`` in order.

    The console's reader, built for rate and bounded memory. An ephemeral pull
    consumer (created without a name: the server refuses a durable on that API
    subject, so a read-only user can have it) is asked for ``batch`` messages
    at a time, and the next request goes out only when a batch is folded: the
    client never holds more than one batch (a push reader let nats-py buffer
    hundreds of thousands of messages ahead of the fold). Messages arrive on a
    plain callback subscription: nats-py's fetch() costs a task and a timer per
    message, which capped reading at ~20k/s. ``deliver`` folds synchronously
    and the event loop gets a turn after every batch. When a request ends
    empty, the reader checks that its consumer still exists (a restarted server
    loses it) and otherwise makes a new one from the next sequence;
    ``on_idle`` is told when nothing is left to read.
    """

    def __init__(
        self,
        js: JetStreamContext,
        nc: Client,
        start: datetime | int,
        deliver: Callable[[Delivered], None],
        on_idle: Callable[[], None] | None = None,
        subject: str = EVENTS_SUBJECTS,
        idle: float = 1.0,
        batch: int = 250,
    ) -> None:
        self.js = js
        self.nc = nc
        self.position = start
        self.deliver = deliver
        self.on_idle = on_idle
        self.subject = subject
        self.idle = idle
        self.batch = batch
        self.received = 0
        self._left = 0  # messages still due on the current request
        self._ended = asyncio.Event()
        self._subscription: Subscription | None = None

    @property
    def buffered(self) -> int:
        """Messages received and not folded yet: never more than one batch."""
        return self._subscription.pending_msgs if self._subscription is not None else 0

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is not None:
            if status != "100":  # 404 nothing left, 408 expired, 409 gone: this request ended
                self._ended.set()
            return
        metadata = msg.metadata
        self.position = metadata.sequence.stream + 1
        self.received += 1
        self._left -= 1
        self.deliver(Delivered(metadata.sequence.stream, metadata.num_pending, msg.data))
        if self._left <= 0:
            self._ended.set()

    async def _consumer(self) -> str:
        config = _from(self.position)
        config.ack_policy = AckPolicy.NONE
        config.filter_subject = self.subject
        config.inactive_threshold = 10.0  # the server drops it soon after we are gone
        return str((await self.js.add_consumer(EVENTS, config)).name)

    async def run(self) -> None:
        """Read until cancelled; connection trouble is waited out, never raised."""
        inbox = self.nc.new_inbox()
        subscription = self._subscription = await self.nc.subscribe(inbox, cb=self._on_msg)
        try:
            while True:
                try:
                    name = await self._consumer()
                except Exception:  # no stream yet, or not connected: try again soon
                    await asyncio.sleep(1)
                    continue
                await self._pull(name, inbox)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _pull(self, name: str, inbox: str) -> None:
        """Request batches from consumer ``name`` until it is lost."""
        request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS}.{name}"
        request = json.dumps({"batch": self.batch, "expires": int(self.idle * 1e9)}).encode()
        while True:
            before = self.received
            self._left = self.batch
            self._ended.clear()
            try:
                await self.nc.publish(request_subject, request, reply=inbox)
                async with asyncio.timeout(self.idle + 2):
                    await self._ended.wait()
            except Exception:  # not connected, or no answer at all
                await asyncio.sleep(0.5)
            if self.received == before:
                try:
                    await self.js.consumer_info(EVENTS, name)
                except Exception:
                    return  # the reader is gone: a new one from ``position``
                if self.on_idle is not None:
                    self.on_idle()
            await asyncio.sleep(0)  # a turn for the screen after every batch


async def round_trip_ms(nc: Client) -> float:
    """The server's round-trip time now, in milliseconds."""
    return await nc.rtt(timeout=2) * 1000


async def artefact(key: str) -> bytes:
    """A workflow artefact (preview, layers.json...): read-only access for the console."""
    from engine.storage import storage

    return await storage.get_artefact(key)
