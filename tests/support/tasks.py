"""Tasks and listeners the test workers load (`onemanage worker tests.support.tasks`)."""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path
from typing import Any, Literal

from engine.app import broker, event_listener
from engine.errors import TransientError
from engine.events.schemas import BaseEvent

WAIT = {"check_interval": 0.02, "timeout": 60}


class ProbeEvent(BaseEvent):
    """An event only the tests publish; its readers support version 1.2."""

    event_type: Literal["test.probe"] = "test.probe"
    event_version: str = "1.2"
    n: int
    note: str = ""


@broker.task(task_name="test.whoami")
async def whoami(n: int) -> dict[str, Any]:
    return {"n": n, "worker": broker.worker_id}


@broker.task(task_name="test.sleep")
async def sleep_for(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@broker.task(task_name="test.add")
async def add(a: int, b: int) -> int:
    return a + b


@broker.task(task_name="test.fail")
async def fail_with(kind: str, message: str) -> None:
    errors: dict[str, type[Exception]] = {"ValueError": ValueError, "KeyError": KeyError}
    raise errors[kind](message)


@broker.task(task_name="test.always_transient")
async def always_transient() -> None:
    raise TransientError("the thing we need is still down")


@broker.task(task_name="test.sum_via_child")
async def sum_via_child(a: int, b: int) -> int:
    child = await add.kiq(a, b)
    result = await child.wait_result(**WAIT)
    return int(result.raise_for_error().return_value)


@broker.task(task_name="test.call_failing_child")
async def call_failing_child(message: str) -> None:
    child = await fail_with.kiq("ValueError", message)
    result = await child.wait_result(**WAIT)
    result.raise_for_error()


def _record(durable: str, event: BaseEvent) -> None:
    path = broker.settings.data_dir / f"{durable}.log"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{event.event_id} {event.event_version} {event.correlation_id}\n")


@event_listener("probe-a", "events.test.>")
async def probe_a(event: BaseEvent) -> None:
    _record("probe-a", event)


@event_listener("probe-b", "events.test.>")
async def probe_b(event: BaseEvent) -> None:
    _record("probe-b", event)


class FlakyEvent(BaseEvent):
    """An event whose only reader always fails transiently: it must end as a dead letter."""

    event_type: Literal["test.flaky"] = "test.flaky"
    event_version: str = "1.0"


@event_listener("probe-flaky", "events.test.flaky")
async def probe_flaky(event: BaseEvent) -> None:
    raise TransientError("the listener's backend is down")


@broker.task(task_name="test.transient_until")
def transient_until(marker: str) -> str:
    """Down (transient) until the file ``marker`` exists: a dead letter that a replay runs."""
    if not Path(marker).exists():
        raise TransientError(f"{marker} is not there yet")
    return "ran"


@broker.task(task_name="test.hold_until_unlocked")
def hold_until_unlocked(lock_file: str) -> str:
    """Holds its slot while the test holds ``lock_file``'s lock: what runs after it waits.

    A plain function (run in a thread) blocked in flock, no polling; a test that dies
    drops its lock with its file descriptor, so the hold always ends."""
    with open(lock_file) as held:
        fcntl.flock(held, fcntl.LOCK_SH)
    return "released"
