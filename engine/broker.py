"""OneManageBroker: a taskiq broker on one shared NATS connection, routing by task labels.

Stock taskiq-nats brokers own one subject, one stream and one durable, so they
cannot route per task (taskiq#181). This broker reads the task's labels
(engine.routing) instead: command tasks go to ``tasks.<lane>.<task_name>`` and
are load-balanced through their lane's shared durable; event tasks get every
matching event through their own durable (engine.lanes, engine.consuming).

It is built with its settings and registers no task by itself: the assembly
(engine.app) gives it a result backend and middlewares, and task modules
decorate with it. See docs/adr/0001-broker.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck, StreamInfo
from nats.js.kv import KeyValue
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, TaskiqEvents, TaskiqState
from taskiq.message import TaskiqMessage

from engine import embedded, publishing
from engine.connection import Connection
from engine.consuming import Consumption, RecordRefused
from engine.context import TaskContext, current_task
from engine.events.schemas import DeadLetterReason, LaneHealth, ListenerCounters
from engine.identity import process_identity
from engine.lanes import Delivery, FetchWatcher, Lane, consumer_config, plan_lanes
from engine.roles import Role
from engine.routing import TASK_ID_HEADER, check_task, is_event_task, lane_of, task_subject
from engine.settings import Settings, load_settings
from engine.streams import ensure_streams

logger = logging.getLogger(__name__)


class OneManageBroker(AsyncBroker):
    """A taskiq broker on one shared NATS connection with label-based routing."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self._settings = settings  # None: read from the environment at first use
        self._role: Role | None = None  # None: the settings' role
        self.connection = Connection()
        self.consumption: Consumption | None = None
        self.listener_counters: dict[str, ListenerCounters] = {}  # reported in heartbeats
        self.record_refused: RecordRefused | None = None  # set by engine.deadletters
        # Shown each fetch of a lane (engine.discards counts skipped events).
        self.fetch_watchers: list[FetchWatcher] = []
        self.ready = asyncio.Event()  # set once a worker pulls from all its lanes
        self._buckets: dict[str, KeyValue] = {}  # bound on this connection; cleared at shutdown
        self.add_event_handler(TaskiqEvents.WORKER_STARTUP, self._create_streams)

    def run_in_workers(
        self,
        name: str,
        run: Callable[[], Coroutine[Any, Any, None]],
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``run()`` as a task in every worker process, from start-up until shutdown.

        ``prepare`` is awaited first, during start-up (before the lanes pull).
        """
        running: list[asyncio.Task[None]] = []

        async def start(state: TaskiqState) -> None:
            if prepare is not None:
                await prepare()
            running.append(asyncio.create_task(run(), name=name))

        async def stop(state: TaskiqState) -> None:
            for task in running:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            running.clear()

        self.add_event_handler(TaskiqEvents.WORKER_STARTUP, start)
        self.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, stop)

    # -- the connection ------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def worker_id(self) -> str:
        return process_identity()

    @property
    def nc(self) -> Client:
        return self.connection.nc

    @property
    def js(self) -> JetStreamContext:
        return self.connection.js

    @property
    def is_connected(self) -> bool:
        return self.connection.is_connected

    @property
    def embedded_server(self) -> embedded.EmbeddedServer | None:
        return self.connection.embedded_server

    @embedded_server.setter
    def embedded_server(self, server: embedded.EmbeddedServer | None) -> None:
        self.connection.embedded_server = server

    def servers(self) -> list[str]:
        """The configured URLs, or the embedded server's (started if needed)."""
        return self.connection.servers(self.settings)

    @property
    def role(self) -> Role:
        """Whose credentials this process connects with (engine.roles)."""
        return self._role or self.settings.role

    @role.setter
    def role(self, role: Role) -> None:
        self._role = role

    async def connect(self) -> Client:
        """Open this process's one NATS connection (idempotent); workers wait for it."""
        kind = "worker" if self.is_worker_process else "client"
        return await self.connection.open(
            self.settings,
            f"onemanage-{kind}-{self.worker_id}",
            patient=self.is_worker_process,
            role=self.role,
        )

    async def startup(self) -> None:
        """Connect first, so start-up hooks and middlewares find the connection open."""
        await self.connect()
        await super().startup()
        if self.is_worker_process:
            await self._start_consuming()

    async def shutdown(self) -> None:
        """Stop pulling, hand undelivered messages back, then close the connection."""
        self.ready.clear()
        if self.consumption is not None:
            await self.consumption.stop()
        await super().shutdown()
        await self.connection.close()
        self._buckets.clear()

    async def _create_streams(self, state: TaskiqState) -> None:
        """The worker start-up hook: create and verify TASKS, EVENTS and the buckets."""
        await self.ensure_streams()

    async def ensure_streams(self) -> dict[str, StreamInfo]:
        """Create, verify or update everything the engine keeps on the server."""
        return await ensure_streams(self.js, self.settings)

    async def key_value(self, bucket: str) -> KeyValue:
        """The KV bucket ``bucket``, bound once per connection (binding costs a round trip)."""
        if bucket not in self._buckets:
            self._buckets[bucket] = await self.js.key_value(bucket)
        return self._buckets[bucket]

    # -- publishing ----------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> PubAck:
        """Store one message in JetStream; a retry keeps the Nats-Msg-Id (engine.publishing)."""
        return await publishing.publish(
            self.nc,
            subject,
            payload,
            msg_id=msg_id,
            headers=headers,
            deadline=self.settings.publish_deadline,
            timeout=self.settings.publish_timeout,
        )

    async def kick(self, message: BrokerMessage) -> None:
        """Send a command task to ``tasks.<lane>.<task_name>``, deduplicated by its task id."""
        if is_event_task(message.labels):
            raise ValueError(
                f"{message.task_name} is an event task: it runs when an event is "
                "published, it cannot be kicked"
            )
        await self.publish(
            task_subject(message.task_name, lane_of(message.labels)),
            message.message,
            msg_id=message.task_id,
            headers={TASK_ID_HEADER: message.task_id},
        )

    def _register_task(self, task_name: str, task: Any) -> None:
        check_task(task_name, task.labels)
        super()._register_task(task_name, task)

    # -- consuming (workers only) ---------------------------------------------------

    @property
    def lanes(self) -> list[Lane]:
        return self.consumption.lanes if self.consumption is not None else []

    async def ensure_consumer(self, lane: Lane) -> None:
        """Create the lane's durable, or bring its mutable settings back to the spec."""
        await self.js.add_consumer(lane.stream, consumer_config(lane, self.settings))

    async def _repair(self, lane: Lane) -> None:
        await self.ensure_streams()
        await self.ensure_consumer(lane)

    async def _run_listener(self, lane: Lane, payload: Any) -> None:
        """Call the listener of ``lane`` with one event payload, in the event's story.

        What a listener publishes or kicks continues the story of the event it
        read: its cause is that event, its correlation the event's.
        """
        assert lane.listener_task is not None
        task = self.find_task(lane.listener_task)
        if task is None:
            raise RuntimeError(f"no listener {lane.listener_task} in this worker")
        run = task.original_func  # event_listener's receive, or a raw event task's function
        if isinstance(payload, dict):
            cause = str(payload.get("event_id") or lane.durable)
            correlation = str(payload.get("correlation_id") or cause)
            current_task.set(TaskContext(cause, lane.listener_task, correlation))
        if inspect.iscoroutinefunction(run):
            await run(payload)
        else:  # a plain function: in a thread, as taskiq runs one
            await asyncio.to_thread(run, payload)

    def _decode_task(self, data: bytes) -> TaskiqMessage:
        """The body as taskiq's receiver will read it (it would ack and drop what fails)."""
        message = self.formatter.loads(data)
        message.parse_labels()
        return message

    async def _record_refused(self, msg: Msg, reason: DeadLetterReason, error: str) -> None:
        """A refused command as a dead letter; without a recorder it is handed back."""
        if self.record_refused is None:
            raise RuntimeError("no dead-letter recorder on this broker (engine.deadletters)")
        await self.record_refused(msg, reason, error)

    def _count_unreadable(self, lane: Lane, reason: str) -> None:
        counters = self.listener_counters.setdefault(lane.durable, ListenerCounters())
        counters.skipped[reason] = counters.skipped.get(reason, 0) + 1

    @property
    def lane_health(self) -> dict[str, LaneHealth]:
        """Whether each lane of this worker pulls, for its heartbeat."""
        return {lane.durable: lane.health.report() for lane in self.lanes}

    async def _before_fetch(self, lane: Lane) -> None:
        for watcher in self.fetch_watchers:
            try:
                await watcher.before_fetch(lane)
            except Exception as exc:  # a look that failed must not stop the lane
                logger.debug("fetch watcher on %s: %s", lane.durable, exc)

    async def _fetched(self, lane: Lane, messages: list[Msg]) -> None:
        for watcher in self.fetch_watchers:
            try:
                await watcher.fetched(lane, messages)
            except Exception as exc:
                logger.debug("fetch watcher on %s: %s", lane.durable, exc)

    async def _start_consuming(self) -> None:
        lanes = plan_lanes(self.get_all_tasks(), self.settings)
        for lane in lanes:
            await self.ensure_consumer(lane)
        self.consumption = Consumption(
            self.connection,
            self.settings,
            knows=lambda name: self.find_task(name) is not None,
            run_listener=self._run_listener,
            decode_task=self._decode_task,
            record_refused=self._record_refused,
            count_unreadable=self._count_unreadable,
            repair=self._repair,
            before_fetch=self._before_fetch,
            fetched=self._fetched,
        )
        self.consumption.start(lanes)
        self.ready.set()
        logger.info(
            "worker %s pulling from %s", self.worker_id, ", ".join(lane.durable for lane in lanes)
        )

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Yield the command lanes' deliveries; taskiq acks each through settle().

        Listener lanes do not come here: engine.consuming calls their handlers.
        """
        if self.consumption is None:
            raise RuntimeError("listen() is for worker processes, after startup()")
        inbox = self.consumption.inbox
        while True:
            delivery = await inbox.get()
            if delivery.settled:
                continue
            yield AckableMessage(data=delivery.data, ack=functools.partial(self.settle, delivery))

    async def settle(self, delivery: Delivery) -> None:
        """Ack, or nack with a delay when a retry was requested; frees the lane's slots."""
        if self.consumption is not None:
            await self.consumption.settle(delivery)

    def delivery(self, task_id: str) -> Delivery | None:
        """The unsettled delivery of ``task_id`` in this worker, if any."""
        return self.consumption.in_flight.get(task_id) if self.consumption else None

    def retry_later(self, task_id: str) -> bool:
        """Nack ``task_id`` with back-off instead of acking it; True if it will come back.

        At max deliver the nack still happens: the server then stops delivering
        it and emits the max-deliveries advisory that makes it a dead letter.
        """
        delivery = self.delivery(task_id)
        if delivery is None:
            return False
        delivery.back_off(self.settings)
        return self.will_redeliver(task_id)

    def will_redeliver(self, task_id: str) -> bool:
        """Whether the server will deliver ``task_id`` again after this attempt."""
        delivery = self.delivery(task_id)
        return (
            delivery is not None
            and delivery.retry_delay is not None
            and delivery.attempt < self.settings.max_deliver
        )
