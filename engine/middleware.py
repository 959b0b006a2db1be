"""Task lifecycle events and worker heartbeats, for every command task.

Client side: the queued event, and correlation/causation labels inherited from
the task that kicks (so a workflow's sub-tasks share its correlation id).
Worker side: started, succeeded or failed (with duration, attempt and worker
id), transient failures turned into redeliveries, and a heartbeat every
``heartbeat_interval`` seconds. Event tasks get no lifecycle events: a listener
reacting to its own events would loop forever (they never reach taskiq's
receiver: engine.consuming calls them).

Lifecycle event ids are derived, not random: TaskQueued from the task id (a
kick repeated with the same task id is one queued event), the others from the
task id, the attempt and the transition (each attempt is told once, and a
republish of it is stored once by EVENTS' duplicate window).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from datetime import datetime
from typing import Any, Literal

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from engine import metrics, publishing
from engine.broker import OneManageBroker
from engine.context import TaskContext, current_task
from engine.errors import PublishError, StoreFullError, is_transient
from engine.events.publisher import publish_event
from engine.events.schemas import (
    BaseEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
)
from engine.identity import HOST, command_identity, utc_now
from engine.routing import CAUSATION_LABEL, CORRELATION_LABEL, QUEUED_AT_LABEL, is_event_task
from engine.streams import RESULTS_BUCKET

logger = logging.getLogger(__name__)

OUTBOX_SIZE = 10_000
SEND_BATCH = 64
_LIFECYCLE = uuid.UUID("5e0c2a9d-7f3b-4c61-a8d4-1b6f0e9a3c27")


def lifecycle_event_id(task_id: str, transition: str, attempt: int | None = None) -> str:
    """The event id of ``transition`` of ``task_id`` (of ``attempt``; none for "queued")."""
    name = f"{task_id}:{transition}" if attempt is None else f"{task_id}:{attempt}:{transition}"
    return uuid.uuid5(_LIFECYCLE, name).hex


def _queued_at(labels: dict[str, Any]) -> datetime | None:
    """When the task was kicked, from its label; None for a missing or unreadable one."""
    value = labels.get(QUEUED_AT_LABEL)
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


class LifecycleMiddleware(TaskiqMiddleware):
    """Publishes what happens to every command task, and who is alive."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.processed = 0
        self.failed = 0
        self.publish_failures = 0
        self._probes = 0  # store probes made (each heartbeat makes one)
        self.started_at = utc_now()
        self._started: dict[str, float] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[BaseEvent] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self._sender: asyncio.Task[None] | None = None

    @property
    def onemanage(self) -> OneManageBroker:
        return self.broker  # type: ignore[return-value]

    async def _emit(self, event: BaseEvent) -> None:
        """Queue a lifecycle event for the sender: off the task's path, in order.

        Awaiting each publish put three round trips on every task's critical
        path; a full outbox still pushes back on the producer.
        """
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="lifecycle-events")
        await self._outbox.put(event)

    async def _send(self) -> None:
        """Publish queued events in batches, pipelined; a failure is counted, not raised."""
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < SEND_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            outcomes = await asyncio.gather(
                *(publish_event(self.onemanage, event) for event in batch),
                return_exceptions=True,
            )
            self.publish_failures += sum(isinstance(o, PublishError) for o in outcomes)
            for _ in batch:
                self._outbox.task_done()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued event was published (or ``timeout`` passed)."""
        if self._sender is not None and not self._sender.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout)

    # -- client side ---------------------------------------------------------------

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        parent = current_task.get()
        message.labels.setdefault(
            CORRELATION_LABEL, parent.correlation_id if parent else message.task_id
        )
        if parent is not None:
            message.labels.setdefault(CAUSATION_LABEL, parent.task_id)
        # Stamped before the kick, so a fast worker's "started" never precedes "queued".
        message.labels.setdefault(QUEUED_AT_LABEL, utc_now().isoformat())
        return message

    @property
    def lifecycle(self) -> bool:
        """Whether task transitions are published (ONEMANAGE_LIFECYCLE_EVENTS)."""
        return self.onemanage.settings.lifecycle_events

    async def post_send(self, message: TaskiqMessage) -> None:
        if is_event_task(message.labels) or not self.lifecycle:
            return
        queued_at = message.labels.get(QUEUED_AT_LABEL)
        await self._emit(
            TaskQueued(
                event_id=lifecycle_event_id(message.task_id, "queued"),
                task_id=message.task_id,
                task_name=message.task_name,
                correlation_id=message.labels.get(CORRELATION_LABEL),
                causation_id=message.labels.get(CAUSATION_LABEL),
                **({"timestamp": queued_at} if queued_at else {}),
            )
        )

    # -- worker side ---------------------------------------------------------------

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        correlation = str(message.labels.get(CORRELATION_LABEL) or message.task_id)
        current_task.set(TaskContext(message.task_id, message.task_name, correlation))
        self.running += 1
        self._started[message.task_id] = time.perf_counter()
        if not self.lifecycle:
            return message
        delivery = self.onemanage.delivery(message.task_id)
        attempt = delivery.attempt if delivery else 1
        await self._emit(
            TaskStarted(
                event_id=lifecycle_event_id(message.task_id, "started", attempt),
                task_id=message.task_id,
                task_name=message.task_name,
                worker_id=self.onemanage.worker_id,
                attempt=attempt,
                correlation_id=correlation,
                causation_id=message.labels.get(CAUSATION_LABEL),
                queued_at=_queued_at(message.labels),
            )
        )
        return message

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        if is_transient(exception):
            self.onemanage.retry_later(message.task_id)

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        self.running -= 1
        self.processed += 1
        started = self._started.pop(message.task_id, None)
        if not self.lifecycle:
            self.failed += result.is_err
            return
        duration_ms = (time.perf_counter() - started) * 1000 if started else 0.0
        delivery = self.onemanage.delivery(message.task_id)
        attempt = delivery.attempt if delivery else 1
        common: dict[str, Any] = {
            "task_id": message.task_id,
            "task_name": message.task_name,
            "worker_id": self.onemanage.worker_id,
            "attempt": attempt,
            "duration_ms": round(duration_ms, 3),
            "correlation_id": message.labels.get(CORRELATION_LABEL) or message.task_id,
            "causation_id": message.labels.get(CAUSATION_LABEL),
        }
        if not result.is_err:
            succeeded = lifecycle_event_id(message.task_id, "succeeded", attempt)
            await self._emit(TaskSucceeded(event_id=succeeded, **common))
            return
        self.failed += 1
        error = result.error
        await self._emit(
            TaskFailed(
                event_id=lifecycle_event_id(message.task_id, "failed", attempt),
                **common,
                error_type=type(error).__name__ if error else "Error",
                error_message=str(error) if error else "",
                will_retry=self.onemanage.will_redeliver(message.task_id),
            )
        )

    # -- heartbeats ----------------------------------------------------------------

    def heartbeat(
        self, state: Literal["running", "stopping"] = "running", store_error: str | None = None
    ) -> WorkerHeartbeat:
        return WorkerHeartbeat(
            worker_id=self.onemanage.worker_id,
            host=HOST,
            pid=os.getpid(),
            state=state,
            started_at=self.started_at,
            interval_s=self.onemanage.settings.heartbeat_interval,
            running=self.running,
            processed=self.processed,
            failed=self.failed,
            lanes=[lane.durable for lane in self.onemanage.lanes],
            listeners={
                name: c.model_copy(deep=True)
                for name, c in self.onemanage.listener_counters.items()
            },
            lane_health=self.onemanage.lane_health,
            store_error=store_error,
            command=command_identity(),
        )

    async def _store_error(self) -> str | None:
        """Can this worker still write? One tiny result, expiring with the others.

        Read-only checks (``onemanage check``) cannot write to find out, so the
        worker tries for them, once a beat. Each try is a new key: a full store
        still takes a message that replaces another one on its subject.
        """
        token = re.sub(r"[^A-Za-z0-9_-]", "-", self.onemanage.worker_id)
        self._probes += 1
        try:
            await publishing.publish(
                self.onemanage.nc,
                f"$KV.{RESULTS_BUCKET}.probe-{token}-{self._probes}",
                b"",
                msg_id=uuid.uuid4().hex,
                deadline=0,
                timeout=self.onemanage.settings.publish_timeout,
            )
        except StoreFullError as exc:
            return str(exc)
        except Exception:  # not connected: the heartbeat cannot go either
            return None
        return None

    async def _beat(self) -> None:
        await self.onemanage.ready.wait()  # the first beat says: pulling now
        while True:
            beat = self.heartbeat(store_error=await self._store_error())
            metrics.lanes(
                {name: health.state == "ok" for name, health in beat.lane_health.items()},
                {lane.durable: lane.behind for lane in self.onemanage.lanes},
            )
            await self._emit(beat)
            await asyncio.sleep(self.onemanage.settings.heartbeat_interval)

    async def startup(self) -> None:
        if self.broker.is_worker_process:
            self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")

    async def shutdown(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
            if self.onemanage.is_connected:
                await self._emit(self.heartbeat("stopping"))
        if self.onemanage.is_connected:
            await self.flush()
        if self._sender is not None:
            self._sender.cancel()
            self._sender = None
