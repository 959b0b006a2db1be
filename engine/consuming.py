"""Consuming: the pull, dispatch, settle and in-progress loops of a worker's lanes.

Workers fetch with a finite timeout (they resume after a server restart,
nats.py#504), send in-progress acks while a task runs (taskiq-nats#16), and
negatively acknowledge a delivery whose task asked for a retry, so a poison
message ends at max deliver instead of looping (taskiq#322). A message holds
its lane's slot from fetch to ack or nack.

Poison stays with its message: an event no listener can be handed is counted
and acked, a command taskiq cannot decode or that came on another task's
subject becomes a dead letter, and a loop that dies anyway is started again
(each lane's Health says so in the heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from taskiq.message import TaskiqMessage

from engine.connection import Connection
from engine.errors import is_transient
from engine.events.schemas import DeadLetterReason, too_deep
from engine.lanes import Delivery, Lane, describe
from engine.routing import TASK_ID_HEADER, task_name_of
from engine.settings import Settings

logger = logging.getLogger(__name__)

RunListener = Callable[[Lane, Any], Awaitable[None]]  # (lane, event payload): one listener run
DecodeTask = Callable[[bytes], TaskiqMessage]  # what taskiq's receiver will make of the body
RecordRefused = Callable[[Msg, DeadLetterReason, str], Awaitable[None]]  # a dead letter
CountUnreadable = Callable[[Lane, str], None]  # (listener lane, reason)

RESTART_BACKOFF = 0.2  # seconds per consecutive death of a loop, up to 5 s


@dataclass(frozen=True, slots=True)
class Unreadable:
    """An event payload no listener can be handed, and why."""

    reason: str
    detail: str


def decode_payload(data: bytes) -> Any:
    """The JSON value of an event, its text when it is not JSON (parse_event says why),
    or Unreadable: never raises, since one message must not end a pull loop."""
    try:
        value = json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")
    except RecursionError:
        return Unreadable("too_deep", "nested too deeply to decode")
    except Exception as exc:  # MemoryError and the like: this payload only
        return Unreadable("undecodable", describe(exc))
    if too_deep(value):
        return Unreadable("too_deep", "nested too deeply for a listener")
    return value


def _pending_after(messages: list[Msg]) -> int:
    """How many more the durable holds for its readers, as the last message says."""
    try:
        return int(messages[-1].metadata.num_pending) if messages else 0
    except (AttributeError, ValueError, IndexError):
        return 0


class Consumption:
    """Every lane of one worker process: what was fetched, handed out, and not yet settled."""

    def __init__(
        self,
        connection: Connection,
        settings: Settings,
        *,
        knows: Callable[[str], bool],
        run_listener: RunListener,
        decode_task: DecodeTask,
        record_refused: RecordRefused,
        count_unreadable: CountUnreadable,
        repair: Callable[[Lane], Awaitable[None]],
        before_fetch: Callable[[Lane], Awaitable[None]] | None = None,
        fetched: Callable[[Lane, list[Msg]], Awaitable[None]] | None = None,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.lanes: list[Lane] = []
        self.inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self.in_flight: dict[str, Delivery] = {}
        self.stopping = False
        self._knows = knows
        self._run_listener = run_listener
        self._decode_task = decode_task
        self._record_refused = record_refused
        self._count_unreadable = count_unreadable
        self._repair = repair
        self._before_fetch = before_fetch
        self._fetched = fetched
        self._loops: set[asyncio.Task[None]] = set()

    @property
    def js(self) -> JetStreamContext:
        return self.connection.js

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` until stop(); keeps a reference to it."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._loops.add(task)
        task.add_done_callback(self._loops.discard)
        return task

    def start(self, lanes: list[Lane]) -> None:
        self.stopping = False
        self.lanes = lanes
        for lane in lanes:
            pull, dispatch = f"pull-{lane.durable}", f"dispatch-{lane.durable}"
            self.spawn(self._supervise(pull, functools.partial(self._pull, lane), lane), pull)
            self.spawn(
                self._supervise(dispatch, functools.partial(self._dispatch, lane), lane), dispatch
            )
        self.spawn(self._supervise("in-progress", self._keep_in_progress), "in-progress")

    async def _supervise(
        self, name: str, loop: Callable[[], Awaitable[None]], lane: Lane | None = None
    ) -> None:
        """Start ``loop`` again whenever it dies: a loop that ended for good would leave
        its lane silent while heartbeats stay green."""
        deaths = 0
        while not self.stopping:
            try:
                await loop()
                return
            except Exception as exc:
                deaths += 1
                if lane is not None:
                    lane.health.restarted(exc)
                logger.exception("loop %s died (restart %d): starting it again", name, deaths)
            await asyncio.sleep(min(RESTART_BACKOFF * deaths, 5.0))

    async def stop(self) -> None:
        """Stop pulling; hand back what was fetched and not settled, if still connected."""
        self.stopping = True
        for task in list(self._loops):
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        if self.connection.is_connected:
            for delivery in list(self.in_flight.values()):
                delivery.retry_delay = 0
                await self.settle(delivery)

    async def _pull(self, lane: Lane) -> None:
        """Fetch while this lane may hold more; never a fetch without a timeout."""
        s = self.settings
        subscription: JetStreamContext.PullSubscription | None = None
        while not self.stopping:
            await lane.held.acquire()
            wanted = 1
            while wanted < s.fetch_batch and not lane.held.locked():
                await lane.held.acquire()
                wanted += 1
            messages: list[Msg] = []
            try:
                if subscription is None:
                    subscription = await self.js.pull_subscribe_bind(
                        durable=lane.durable, stream=lane.stream
                    )
                if self._before_fetch is not None:
                    await self._before_fetch(lane)
                messages = await subscription.fetch(wanted, timeout=s.fetch_timeout)
                lane.health.fetched()
                if self._fetched is not None:
                    await self._fetched(lane, messages)
                lane.behind = _pending_after(messages)
            except (TimeoutError, nats.errors.TimeoutError):
                if self.connection.is_connected:
                    lane.health.fetched()  # the server answered: nothing to deliver
            except asyncio.CancelledError:
                for _ in range(wanted):
                    lane.held.release()
                if subscription is not None:
                    # The server would still answer the pull we gave up, with messages
                    # nobody reads: they wait out ack_wait (30 s) before anyone else gets
                    # them. It delivers to no pull whose inbox has no interest.
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
                raise
            except Exception as exc:  # a dead server, a lost store, a deleted durable
                lane.health.fetch_failed(exc)
                failures = lane.health.failures
                logger.warning(
                    "pull from %s failed (%s: %s)", lane.durable, type(exc).__name__, exc
                )
                if failures >= 2 or isinstance(exc, NotFoundError):
                    # A server back without its store answers 503, not 404: whatever the
                    # error, put streams and durable back (idempotent) and bind again.
                    with contextlib.suppress(Exception):
                        await self._repair(lane)
                    subscription = None
                await asyncio.sleep(min(0.25 * failures, 5.0))
            for _ in range(wanted - len(messages)):
                lane.held.release()
            await self._accept_all(lane, messages)

    async def _accept_all(self, lane: Lane, messages: list[Msg]) -> None:
        """Accept each; if accepting dies, free the slots of those not accepted (the
        server delivers them again after ack wait) before the loop is restarted."""
        for index, msg in enumerate(messages):
            try:
                await self._accept(lane, msg)
            except BaseException:
                for _ in messages[index:]:
                    lane.held.release()
                raise

    async def _dispatch(self, lane: Lane) -> None:
        """Hand fetched messages on as the lane's running slots free up: commands to
        taskiq, events straight to their listener."""
        while True:
            delivery = await lane.waiting.get()
            await lane.running.acquire()
            if delivery.settled:
                lane.running.release()
                continue
            delivery.dispatched = True
            if lane.listener_task is None:
                self.inbox.put_nowait(delivery)
            else:
                self.spawn(self._listen(delivery), f"listen-{delivery.task_id}")

    async def _listen(self, delivery: Delivery) -> None:
        """One listener run, then its settlement: a transient failure comes back later.

        Events do not go through taskiq's receiver: a listener needs none of its
        per-message machinery (formatter, middlewares, result backend), and six
        runs of it per task were most of a worker's time (docs/adr/0003).
        """
        try:
            await self._run_listener(delivery.lane, delivery.payload)
        except Exception as exc:
            if is_transient(exc):
                delivery.back_off(self.settings)
            else:  # event_listener catches handler bugs; this is one of a raw listener
                logger.error("listener %s failed on %s: %s", delivery.lane.durable,
                             delivery.task_id, describe(exc))  # fmt: skip
        await self.settle(delivery)

    async def _accept(self, lane: Lane, msg: Msg) -> None:
        """Turn a NATS message into a taskiq delivery, or settle it here and now."""
        if lane.listener_task is None:
            delivery = await self._task_delivery(lane, msg)
        else:
            delivery = await self._event_delivery(lane, msg)
        if delivery is None:
            return
        first = self.in_flight.get(delivery.task_id)
        if first is not None and not first.settled:
            await self._duplicate(first, delivery)
            return
        self.in_flight[delivery.task_id] = delivery
        lane.waiting.put_nowait(delivery)

    async def _task_delivery(self, lane: Lane, msg: Msg) -> Delivery | None:
        """A command as taskiq will run it; one taskiq cannot decode, or that came on
        another task's subject, is refused here (taskiq would drop or run it)."""
        task_name = task_name_of(msg.subject)
        try:
            message = self._decode_task(msg.data)
        except Exception as exc:  # RecursionError and MemoryError included
            await self._refuse(lane, msg, "undecodable", describe(exc))
            return None
        if message.task_name != task_name:
            error = f"the body names {message.task_name!r}, the subject {msg.subject!r}"
            await self._refuse(lane, msg, "wrong_subject", error)
            return None
        delivery = Delivery(msg, lane, message.task_id, msg.data)
        if not self._knows(task_name):
            # Another worker may know it; if none does it ends as a dead letter.
            logger.warning("unknown task %s: handing it back to other workers", task_name)
            delivery.retry_delay = self.settings.retry_delay
            await self.settle(delivery)
            return None
        return delivery

    async def _event_delivery(self, lane: Lane, msg: Msg) -> Delivery | None:
        """An event as its listener's delivery; one that cannot be is counted, acked."""
        payload = decode_payload(msg.data)
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        task_id = f"{lane.durable}:{event_id or msg.reply}"
        claimed = payload.get("event_type") if isinstance(payload, dict) else None
        if isinstance(claimed, str) and msg.subject != f"events.{claimed}":  # see parse_event
            payload = Unreadable("wrong_subject", f"a {claimed} event stored on {msg.subject}")
        if isinstance(payload, Unreadable):
            await self._skip(lane, msg, task_id, payload)
            return None
        return Delivery(msg, lane, task_id, b"", payload=payload)

    async def _skip(self, lane: Lane, msg: Msg, task_id: str, why: Unreadable) -> None:
        self._count_unreadable(lane, why.reason)
        logger.warning(
            "listener %s skipped an unreadable event: %s (%s)", lane.durable, why.reason, why.detail
        )
        await self.settle(Delivery(msg, lane, task_id, b""))

    async def _refuse(self, lane: Lane, msg: Msg, reason: DeadLetterReason, error: str) -> None:
        """Record a command no worker should run as a dead letter, then ack it; nack it
        (with a delay) if the record could not be made: nothing is dropped unrecorded."""
        task_id = (msg.headers or {}).get(TASK_ID_HEADER) or msg.reply
        delivery = Delivery(msg, lane, task_id, msg.data)
        try:
            await self._record_refused(msg, reason, error)
        except Exception as exc:
            logger.error("refused task %s not recorded (%s): handing it back", task_id, exc)
            delivery.retry_delay = self.settings.retry_delay
        else:
            logger.warning("refused task %s on %s: %s (%s)", task_id, msg.subject, reason, error)
        await self.settle(delivery)

    async def _duplicate(self, first: Delivery, again: Delivery) -> None:
        """The server sent a task this process still holds (its ack wait ran out): the
        first copy goes on; in-progress on this one makes the server wait, and settling
        the first settles the message (acks go by stream sequence)."""
        logger.warning(
            "%s delivered again (attempt %d) while attempt %d still runs here: not run twice",
            first.task_id, again.attempt, first.attempt,
        )  # fmt: skip
        with contextlib.suppress(Exception):
            await again.msg.in_progress()
        again.lane.held.release()

    async def settle(self, delivery: Delivery) -> None:
        """Ack, or nack with a delay when a retry was requested; frees the lane's slots."""
        if delivery.settled:
            return
        delivery.settled = True
        if self.in_flight.get(delivery.task_id) is delivery:
            del self.in_flight[delivery.task_id]
        try:
            if delivery.retry_delay is None:
                await delivery.msg.ack()
            else:
                await delivery.msg.nak(delay=delivery.retry_delay or None)
        except Exception as exc:  # the server redelivers after ack wait
            logger.warning("cannot settle %s: %s", delivery.task_id, exc)
        finally:
            delivery.lane.held.release()
            if delivery.dispatched:
                delivery.lane.running.release()

    async def _keep_in_progress(self) -> None:
        """Tell the server every held message is still being worked on."""
        interval = max(self.settings.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            for delivery in list(self.in_flight.values()):
                if not delivery.settled:
                    with contextlib.suppress(Exception):
                        await delivery.msg.in_progress()
