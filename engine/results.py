"""Task results in a KV bucket on the shared connection, expiring after results_ttl.

taskiq-nats only ships an object-store backend with a second connection that
keeps results forever; a KV bucket with a TTL on the broker's own connection
needs no extra connection and was ~2.4x faster (PLATFORM-NOTES).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import nats.errors
from nats.aio.subscription import Subscription
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from taskiq import AsyncResultBackend, TaskiqResult
from taskiq.exceptions import ResultGetError

from engine.broker import OneManageBroker
from engine.errors import DeadLetteredError, PublishError, is_transient
from engine.routing import is_event_task
from engine.streams import RESULTS_BUCKET

logger = logging.getLogger(__name__)

RELOOK = 2.0  # seconds between reads while waiting for a pushed result


class NatsKVResultBackend(AsyncResultBackend[Any]):
    """Results keyed by task id; event tasks and retried attempts store none."""

    def __init__(self, broker: OneManageBroker) -> None:
        self.broker = broker

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        """Store the result; if the server cannot be reached, run the task again later.

        A KV put is a JetStream publish, so it goes through broker.publish (safe
        retries). If that still fails the delivery is nacked instead of acked:
        the task ran, but nobody could learn it, so it will run again.
        """
        if is_event_task(result.labels) or self.broker.will_redeliver(task_id):
            return
        delivery = self.broker.delivery(task_id)
        attempt = delivery.attempt if delivery else 1
        try:
            await self.broker.publish(
                f"$KV.{RESULTS_BUCKET}.{task_id}",
                result.model_dump_json().encode(),
                msg_id=f"result:{task_id}:{attempt}",
            )
        except PublishError:
            self.broker.retry_later(task_id)
            raise

    async def stored(self, task_id: str) -> bytes | None:
        """The stored result of ``task_id``, or None when there is none (yet)."""
        try:
            # Bound at first use: a client may start before a worker has created the bucket.
            entry = await (await self.broker.key_value(RESULTS_BUCKET)).get(task_id)
        except (KeyNotFoundError, BucketNotFoundError):
            return None
        return entry.value

    async def is_result_ready(self, task_id: str) -> bool:
        return await self.stored(task_id) is not None

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        value = await self.stored(task_id)
        if value is None:
            raise ResultGetError()
        return TaskiqResult[Any].model_validate_json(value)


async def store_dead_letter(broker: OneManageBroker, task_id: str, why: str) -> None:
    """Give a dead-lettered task an error result, unless it has a result already.

    Without one, a waiter (a workflow step, ``wait_result``) would wait out its
    whole timeout for a task no worker will run.
    """
    result: TaskiqResult[Any] = TaskiqResult(
        is_err=True, return_value=None, execution_time=0.0, error=DeadLetteredError(why)
    )
    kv = await broker.key_value(RESULTS_BUCKET)
    with contextlib.suppress(KeyWrongLastSequenceError):  # it ran after all: keep that
        await kv.create(task_id, result.model_dump_json().encode())


async def await_result(broker: OneManageBroker, task_id: str, timeout: float) -> TaskiqResult[Any]:
    """Wait for ``task_id``'s result without polling: the KV put is pushed to us.

    taskiq's wait_result polls every 0.2 s (about 200 ms per orchestrated step);
    here a core subscription on the key's subject wakes us as the result lands,
    and the message it receives is the result itself (no second read).

    "No result yet" and "cannot read right now" are different: a read that
    fails during an outage or an election is tried again, and the key is read
    again every RELOOK seconds because a put made while this process was
    disconnected is never pushed. Raises TimeoutError after ``timeout`` seconds.
    """
    backend = broker.result_backend
    assert isinstance(backend, NatsKVResultBackend)
    give_up = time.monotonic() + timeout
    subscription: Subscription | None = None
    unreadable: BaseException | None = None
    failures = 0
    try:
        while (left := give_up - time.monotonic()) > 0:
            try:
                if subscription is None:
                    # Subscribe before looking, so a result stored in between is not missed.
                    subscription = await broker.nc.subscribe(
                        f"$KV.{RESULTS_BUCKET}.{task_id}", max_msgs=1
                    )
                value = await backend.stored(task_id)
            except Exception as exc:
                if not (is_transient(exc) or isinstance(exc, nats.errors.Error)):
                    raise
                unreadable, failures = exc, failures + 1
                if failures == 1:
                    logger.warning("cannot read the result of %s yet: %r", task_id, exc)
                await asyncio.sleep(min(0.1 * 2**failures, 2.0, max(left, 0)))
                continue
            unreadable, failures = None, 0
            if value is None:
                try:
                    value = (await subscription.next_msg(timeout=min(left, RELOOK))).data
                except nats.errors.TimeoutError:
                    continue  # nothing pushed yet: look again
            return TaskiqResult[Any].model_validate_json(value)
    finally:
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
    if unreadable is not None:
        raise TimeoutError(
            f"no result for task {task_id} within {timeout:.0f}s: the results could not be "
            f"read ({type(unreadable).__name__}: {unreadable})"
        ) from unreadable
    raise TimeoutError(f"no result for task {task_id} within {timeout:.0f}s")
