"""Consuming: the pull, dispatch, settle and in-progress loops of a worker's lanes.

Workers fetch with a finite timeout (they resume after a server restart,
nats.py#504), send in-progress acks while a task runs (taskiq-nats#16), and
negatively acknowledge a delivery whose task asked for a retry, so a poison
message ends at max deliver instead of looping (taskiq#322). A message holds
its lane's slot from fetch to ack or nack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from engine.connection import Connection
from engine.lanes import Delivery, Lane
from engine.routing import TASK_ID_HEADER, task_name_of
from engine.settings import Settings

logger = logging.getLogger(__name__)

ListenerMessage = Callable[[Lane, Any, str], bytes]  # (lane, payload, task id) -> taskiq bytes


def decode_payload(data: bytes) -> Any:
    """The JSON value of an event, or its text when it is not JSON (parse_event says why)."""
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")


class Consumption:
    """Every lane of one worker process: what was fetched, handed out, and not yet settled."""

    def __init__(
        self,
        connection: Connection,
        settings: Settings,
        *,
        knows: Callable[[str], bool],
        listener_message: ListenerMessage,
        repair: Callable[[Lane], Awaitable[None]],
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.lanes: list[Lane] = []
        self.inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self.in_flight: dict[str, Delivery] = {}
        self.stopping = False
        self._knows = knows
        self._listener_message = listener_message
        self._repair = repair
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
            self.spawn(self._pull(lane), f"pull-{lane.durable}")
            self.spawn(self._dispatch(lane), f"dispatch-{lane.durable}")
        self.spawn(self._keep_in_progress(), "in-progress")

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
        failures = 0
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
                messages = await subscription.fetch(wanted, timeout=s.fetch_timeout)
                failures = 0
            except (TimeoutError, nats.errors.TimeoutError):
                pass
            except asyncio.CancelledError:
                for _ in range(wanted):
                    lane.held.release()
                raise
            except Exception as exc:  # a dead server, a lost store, a deleted durable
                failures += 1
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
            for msg in messages:
                await self._accept(lane, msg)

    async def _dispatch(self, lane: Lane) -> None:
        """Hand fetched messages to taskiq as the lane's running slots free up."""
        while True:
            delivery = await lane.waiting.get()
            await lane.running.acquire()
            if delivery.settled:
                lane.running.release()
                continue
            delivery.dispatched = True
            self.inbox.put_nowait(delivery)

    async def _accept(self, lane: Lane, msg: Msg) -> None:
        """Turn a NATS message into a taskiq delivery, or hand it back."""
        if lane.listener_task is None:
            task_name = task_name_of(msg.subject)
            task_id = (msg.headers or {}).get(TASK_ID_HEADER) or msg.reply
            delivery = Delivery(msg, lane, task_id, msg.data)
            if not self._knows(task_name):
                # Another worker may know it; if none does it ends as a dead letter.
                logger.warning("unknown task %s: handing it back to other workers", task_name)
                delivery.retry_delay = self.settings.retry_delay
                await self.settle(delivery)
                return
        else:
            payload = decode_payload(msg.data)
            event_id = payload.get("event_id") if isinstance(payload, dict) else None
            task_id = f"{lane.durable}:{event_id or msg.reply}"
            delivery = Delivery(msg, lane, task_id, self._listener_message(lane, payload, task_id))
        self.in_flight[task_id] = delivery
        lane.waiting.put_nowait(delivery)

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
