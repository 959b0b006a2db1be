"""THE connection: one broker, one NATS connection per process, routing by task labels.

Stock taskiq-nats brokers own one subject, one stream and one durable, so they
cannot route per task (taskiq#181). This broker reads the task's labels instead:

* a command task (default, ``stream="TASKS"``) is published to
  ``tasks.<lane>.<task_name>`` and every worker pulls it through the lane's
  ONE shared durable, so workers load-balance (lanes: ``default`` and
  ``workflow``, see docs/adr/0002-psd-workflow.md);
* an event task (``stream="EVENTS"``, ``durable=...``, ``filter_subject=...``)
  gets every matching event through ITS OWN durable (fan-out).

Workers fetch with a finite timeout (they resume after a server restart,
nats.py#504), send in-progress acks while a task runs (taskiq-nats#16), and
negatively acknowledge a task that raised TransientError, so a poison message
ends at max deliver instead of looping (taskiq#322). See docs/adr/0001-broker.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck
from nats.js.errors import NotFoundError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage, TaskiqEvents, TaskiqState
from taskiq.message import TaskiqMessage

from engine import embedded
from engine.errors import NotConnectedError, PublishError
from engine.settings import Settings, load_settings
from engine.streams import EVENTS, EVENTS_SUBJECTS, TASKS, ensure_streams

logger = logging.getLogger(__name__)

# Label names a task uses to choose its route.
STREAM_LABEL = "stream"
DURABLE_LABEL = "durable"
FILTER_LABEL = "filter_subject"
DELIVER_LABEL = "deliver"
LANE_LABEL = "lane"
DEFAULT_LANE = "default"
WORKFLOW_LANE = "workflow"
LANES = frozenset({DEFAULT_LANE, WORKFLOW_LANE})  # a lane without a durable would never run
TASK_ID_HEADER = "Onemanage-Task-Id"
MSG_ID_HEADER = "Nats-Msg-Id"

_FORBIDDEN_SUBJECT_CHARS = frozenset(" \t\r\n*>")


def task_subject(task_name: str, lane: str = DEFAULT_LANE) -> str:
    """The TASKS subject of a command task: ``tasks.<lane>.<task_name>``."""
    return f"tasks.{lane}.{task_name}"


def task_name_of(subject: str) -> str:
    """The task name in a TASKS subject."""
    parts = subject.split(".", 2)
    return parts[2] if len(parts) == 3 else subject


def lane_subjects(lane: str) -> str:
    return f"tasks.{lane}.>"


def listener(durable: str, subject: str = EVENTS_SUBJECTS, deliver: str = "new") -> dict[str, str]:
    """Labels of an event task: its own durable on EVENTS, filtered by ``subject``.

    ``deliver="all"`` makes a new durable start from the oldest stored event.
    """
    return {
        STREAM_LABEL: EVENTS,
        DURABLE_LABEL: durable,
        FILTER_LABEL: subject,
        DELIVER_LABEL: deliver,
    }


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Lane:
    """One durable consumer this worker pulls from, with its own concurrency.

    ``running`` bounds the messages handed to taskiq; ``held`` bounds those
    fetched, ``prefetch`` more, so the next batch is already here when a task
    ends (one fetch round trip per message capped throughput at ~750/s).
    """

    stream: str
    durable: str
    filter_subject: str
    max_in_flight: int
    prefetch: int
    deliver: str = "all"
    listener_task: str | None = None  # set for EVENTS lanes
    held: asyncio.Semaphore = field(init=False, repr=False)
    running: asyncio.Semaphore = field(init=False, repr=False)
    waiting: asyncio.Queue[Delivery] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.held = asyncio.Semaphore(self.max_in_flight + self.prefetch)
        self.running = asyncio.Semaphore(self.max_in_flight)
        self.waiting = asyncio.Queue()


@dataclass(eq=False)
class Delivery:
    """A message handed to taskiq and not yet settled (acked or nacked)."""

    msg: Msg
    lane: Lane
    task_id: str
    data: bytes
    retry_delay: float | None = None
    dispatched: bool = False
    settled: bool = False

    @property
    def attempt(self) -> int:
        try:
            return int(self.msg.metadata.num_delivered)
        except (ValueError, AttributeError, IndexError):
            return 1


class OneManageBroker(AsyncBroker):
    """A taskiq broker on one shared NATS connection with label-based routing."""

    def __init__(self) -> None:
        super().__init__()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._settings: Settings | None = None
        self.embedded_server: embedded.EmbeddedServer | None = None
        self.worker_id = worker_identity()
        self.lanes: list[Lane] = []
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue()
        self._in_flight: dict[str, Delivery] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.ready = asyncio.Event()

    # -- the connection ------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    @property
    def nc(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            raise NotConnectedError("the broker is not connected: await broker.startup() first")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise NotConnectedError("the broker is not connected: await broker.startup() first")
        return self._js

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def servers(self) -> list[str]:
        """The configured URLs, or the embedded server's (started if needed)."""
        if self.settings.nats_url:
            return list(self.settings.nats_url)
        if self.embedded_server is None or not self.embedded_server.healthy():
            self.embedded_server = embedded.ensure(self.settings.data_dir)
        return [self.embedded_server.url]

    def connect_options(self, name: str) -> dict[str, Any]:
        """nats.connect keyword arguments for every credential kind of the settings."""
        s = self.settings
        options: dict[str, Any] = {
            "name": name,
            "connect_timeout": s.connect_timeout,
            "reconnect_time_wait": s.reconnect_wait,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if s.nats_user:
            options["user"] = s.nats_user
            options["password"] = s.nats_password.get_secret_value() if s.nats_password else ""
        if s.nats_token:
            options["token"] = s.nats_token.get_secret_value()
        if s.nats_creds:
            options["user_credentials"] = str(s.nats_creds)
        if s.nats_nkey_seed:
            options["nkeys_seed"] = str(s.nats_nkey_seed)
        if s.tls_ca or s.tls_cert:
            import ssl

            context = ssl.create_default_context(cafile=str(s.tls_ca) if s.tls_ca else None)
            if s.tls_cert:
                context.load_cert_chain(str(s.tls_cert), str(s.tls_key) if s.tls_key else None)
            options["tls"] = context
        return options

    async def connect(self) -> Client:
        """Open this process's one NATS connection (idempotent).

        A worker waits for its server for as long as it takes; a client (the
        CLI, the console) gives up after a few connect timeouts with an error
        that names the server, instead of hanging on a wrong URL or password.
        """
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        role = "worker" if self.is_worker_process else "client"
        servers = self.servers()
        client = Client()
        attempt = client.connect(
            servers, **self.connect_options(f"onemanage-{role}-{self.worker_id}")
        )
        if self.is_worker_process:
            await attempt
        else:
            try:
                await asyncio.wait_for(attempt, self.settings.connect_timeout * 3)
            except TimeoutError as exc:
                with contextlib.suppress(Exception):
                    await client.close()
                raise NotConnectedError(
                    f"cannot reach {', '.join(servers)} (wrong URL or credentials, or the "
                    "server is down: see the log for the server's answer)"
                ) from exc
        self._nc = client
        self._js = client.jetstream(timeout=self.settings.publish_timeout)
        return client

    async def startup(self) -> None:
        """Connect first, so start-up hooks and middlewares find the connection open."""
        self._stopping = False
        await self.connect()
        await super().startup()
        if self.is_worker_process:
            await self._start_consuming()

    async def shutdown(self) -> None:
        """Stop pulling, hand undelivered messages back, then close the connection."""
        self._stopping = True
        self.ready.clear()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self._nc is not None and self._nc.is_connected:
            for delivery in list(self._in_flight.values()):
                delivery.retry_delay = 0
                await self.settle(delivery)
        await super().shutdown()
        if self._nc is not None and not self._nc.is_closed:
            # flush + close, not drain: drain waits for pull subscriptions' buffers
            # that nobody reads any more, until the shutdown timeout.
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            await self._nc.close()
        self._nc = None
        self._js = None
        if self.embedded_server is not None:
            outcome = self.embedded_server.release()
            logger.info("embedded nats-server %s: %s", self.embedded_server.url, outcome)
            self.embedded_server = None

    # Without these callbacks nats-py prints tracebacks to stderr (and onto a TUI).
    async def _on_error(self, exc: Exception) -> None:
        logger.warning("nats: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            logger.warning("nats: disconnected from the server; reconnecting")

    async def _on_reconnected(self) -> None:
        url = self._nc.connected_url if self._nc else None
        logger.warning("nats: reconnected to %s", url.netloc if url else "?")

    def spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        """Run ``coro`` in the background until shutdown; keeps a reference to it."""
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- publishing ----------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> PubAck:
        """Store one message in JetStream, retrying a timeout with the same Nats-Msg-Id.

        A publish that timed out may still have been stored; the duplicate window
        turns the retry into a no-op then, so retrying is safe.
        """
        all_headers = {MSG_ID_HEADER: msg_id, **(headers or {})}
        attempts = max(1, self.settings.publish_attempts)
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                return await self.js.publish(subject, payload, headers=all_headers)
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

    async def kick(self, message: BrokerMessage) -> None:
        """Send a command task to ``tasks.<lane>.<task_name>``, deduplicated by its task id."""
        if message.labels.get(STREAM_LABEL, TASKS) != TASKS:
            raise ValueError(
                f"{message.task_name} is an event task: it runs when an event is "
                "published, it cannot be kicked"
            )
        await self.publish(
            task_subject(message.task_name, str(message.labels.get(LANE_LABEL, DEFAULT_LANE))),
            message.message,
            msg_id=message.task_id,
            headers={TASK_ID_HEADER: message.task_id},
        )

    def _register_task(self, task_name: str, task: Any) -> None:
        if _FORBIDDEN_SUBJECT_CHARS & set(task_name):
            raise ValueError(f"task name {task_name!r} cannot be used in a NATS subject")
        lane = task.labels.get(LANE_LABEL, DEFAULT_LANE)
        if lane not in LANES:
            raise ValueError(f"task {task_name}: lane {lane!r} is not one of {sorted(LANES)}")
        super()._register_task(task_name, task)

    # -- consuming (workers only) ---------------------------------------------------

    def plan_lanes(self) -> list[Lane]:
        """The durables this worker pulls from: shared ones on TASKS, one per listener.

        Workflows (orchestrators that wait for their steps) have a lane of their
        own, so a worker busy with orchestrators still has slots for the steps
        they wait for: no deadlock at any concurrency.
        """
        s = self.settings
        tasks = sorted(self.get_all_tasks().items())
        lanes = [
            Lane(TASKS, s.tasks_durable, lane_subjects(DEFAULT_LANE), s.concurrency, s.fetch_batch)
        ]
        if any(task.labels.get(LANE_LABEL) == WORKFLOW_LANE for _, task in tasks):
            lanes.append(
                Lane(
                    TASKS,
                    s.workflows_durable,
                    lane_subjects(WORKFLOW_LANE),
                    s.workflow_concurrency,
                    1,  # orchestrators are few and long: no need to hold more
                )
            )
        for name, task in tasks:
            labels = task.labels
            if labels.get(STREAM_LABEL) != EVENTS:
                continue
            durable = labels.get(DURABLE_LABEL)
            if not durable:
                raise ValueError(f"event task {name} needs a '{DURABLE_LABEL}' label")
            lanes.append(
                Lane(
                    EVENTS,
                    str(durable),
                    str(labels.get(FILTER_LABEL, EVENTS_SUBJECTS)),
                    s.listener_concurrency,
                    s.fetch_batch,
                    deliver=str(labels.get(DELIVER_LABEL, "new")),
                    listener_task=name,
                )
            )
        durables = [lane.durable for lane in lanes]
        if len(set(durables)) != len(durables):
            raise ValueError(f"two lanes share a durable name: {durables}")
        return lanes

    def consumer_config(self, lane: Lane) -> ConsumerConfig:
        s = self.settings
        return ConsumerConfig(
            durable_name=lane.durable,
            filter_subject=lane.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_deliver=s.max_deliver,
            max_ack_pending=max(1000, (lane.max_in_flight + lane.prefetch) * 20),
            deliver_policy=DeliverPolicy.ALL if lane.deliver == "all" else DeliverPolicy.NEW,
            description=f"onemanage {lane.listener_task or 'workers'}",
        )

    async def ensure_consumer(self, lane: Lane) -> None:
        """Create the lane's durable, or bring its mutable settings back to the spec."""
        await self.js.add_consumer(lane.stream, self.consumer_config(lane))

    async def _start_consuming(self) -> None:
        from engine.deadletters import watch_dead_letters

        self.lanes = self.plan_lanes()
        for lane in self.lanes:
            await self.ensure_consumer(lane)
            self.spawn(self._pull(lane), f"pull-{lane.durable}")
            self.spawn(self._dispatch(lane), f"dispatch-{lane.durable}")
        self.spawn(self._keep_in_progress(), "in-progress")
        await watch_dead_letters(self)
        self.ready.set()
        logger.info(
            "worker %s pulling from %s",
            self.worker_id,
            ", ".join(lane.durable for lane in self.lanes),
        )

    async def _pull(self, lane: Lane) -> None:
        """Fetch while this lane may hold more; never a fetch without a timeout."""
        s = self.settings
        subscription: JetStreamContext.PullSubscription | None = None
        failures = 0
        while not self._stopping:
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
                        await ensure_streams(self.js, s)
                        await self.ensure_consumer(lane)
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
            self._inbox.put_nowait(delivery)

    async def _accept(self, lane: Lane, msg: Msg) -> None:
        """Turn a NATS message into a taskiq delivery, or hand it back."""
        if lane.listener_task is None:
            task_name = task_name_of(msg.subject)
            task_id = (msg.headers or {}).get(TASK_ID_HEADER) or msg.reply
            delivery = Delivery(msg, lane, task_id, msg.data)
            if self.find_task(task_name) is None:
                # Another worker may know it; if none does it ends as a dead letter.
                logger.warning("unknown task %s: handing it back to other workers", task_name)
                delivery.retry_delay = self.settings.retry_delay
                await self.settle(delivery)
                return
        else:
            payload = _decode_payload(msg.data)
            event_id = payload.get("event_id") if isinstance(payload, dict) else None
            task_id = f"{lane.durable}:{event_id or msg.reply}"
            task = self.find_task(lane.listener_task)
            labels = dict(task.labels) if task else {}
            data = self.formatter.dumps(
                TaskiqMessage(
                    task_id=task_id,
                    task_name=lane.listener_task,
                    labels=labels,
                    args=[payload],
                    kwargs={},
                )
            ).message
            delivery = Delivery(msg, lane, task_id, data)
        self._in_flight[task_id] = delivery
        lane.waiting.put_nowait(delivery)

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Yield deliveries from every lane; taskiq acks each through settle()."""
        while True:
            delivery = await self._inbox.get()
            if delivery.settled:
                continue
            yield AckableMessage(data=delivery.data, ack=functools.partial(self.settle, delivery))

    async def settle(self, delivery: Delivery) -> None:
        """Ack, or nack with a delay when a retry was requested; frees the lane's slots."""
        if delivery.settled:
            return
        delivery.settled = True
        if self._in_flight.get(delivery.task_id) is delivery:
            del self._in_flight[delivery.task_id]
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
            for delivery in list(self._in_flight.values()):
                if not delivery.settled:
                    with contextlib.suppress(Exception):
                        await delivery.msg.in_progress()

    def delivery(self, task_id: str) -> Delivery | None:
        """The unsettled delivery of ``task_id`` in this worker, if any."""
        return self._in_flight.get(task_id)

    def retry_later(self, task_id: str) -> bool:
        """Nack ``task_id`` with back-off instead of acking it; True if it will come back.

        At max deliver the nack still happens: the server then stops delivering
        it and emits the max-deliveries advisory that makes it a dead letter.
        """
        delivery = self._in_flight.get(task_id)
        if delivery is None:
            return False
        delivery.retry_delay = min(self.settings.retry_delay * 2 ** (delivery.attempt - 1), 60.0)
        return self.will_redeliver(task_id)

    def will_redeliver(self, task_id: str) -> bool:
        """Whether the server will deliver ``task_id`` again after this attempt."""
        delivery = self._in_flight.get(task_id)
        return (
            delivery is not None
            and delivery.retry_delay is not None
            and delivery.attempt < self.settings.max_deliver
        )


def _decode_payload(data: bytes) -> Any:
    """The JSON value of an event, or its text when it is not JSON (parse_event says why)."""
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", errors="replace")


broker = OneManageBroker()


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def create_streams(state: TaskiqState) -> None:
    """Create and verify TASKS and EVENTS (and the KV buckets) before pulling."""
    await ensure_streams(broker.js, broker.settings)


def _wire() -> None:
    """Attach the result backend, middlewares and built-in tasks (import cycles)."""
    from engine.middleware import LifecycleMiddleware
    from engine.results import NatsKVResultBackend

    broker.with_result_backend(NatsKVResultBackend(broker))
    broker.add_middlewares(LifecycleMiddleware())
    import engine.events.listeners
    import engine.tasks  # noqa: F401


_wire()
