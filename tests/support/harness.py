"""Real worker processes and real event subscriptions for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from engine import monitor
from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, UnparsedEvent, WorkerHeartbeat, parse_event

ROOT = Path(__file__).resolve().parents[2]


class EventCollector:
    """Every event on ``subject`` from the moment it subscribes (core NATS, no durable)."""

    def __init__(self, broker: OneManageBroker, subject: str = "events.>") -> None:
        self.broker = broker
        self.subject = subject
        self.events: list[BaseEvent] = []
        self.unparsed: list[UnparsedEvent] = []
        self._sub: Subscription | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> EventCollector:
        async def on_msg(msg: Msg) -> None:
            event = parse_event(msg.data)
            if isinstance(event, BaseEvent):
                self.events.append(event)
            else:
                self.unparsed.append(event)
            self._changed.set()

        self._sub = await self.broker.nc.subscribe(self.subject, cb=on_msg)
        await self.broker.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    def matching(self, predicate: Callable[[BaseEvent], bool]) -> list[BaseEvent]:
        return [event for event in self.events if predicate(event)]

    async def wait_for(
        self, predicate: Callable[[BaseEvent], bool], count: int = 1, timeout: float = 60
    ) -> list[BaseEvent]:
        """Wait until ``count`` events match; fail the test with what was seen otherwise."""
        deadline = time.monotonic() + timeout
        while len(found := self.matching(predicate)) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"saw {len(found)} of {count} expected events on {self.subject} "
                    f"within {timeout}s (of {len(self.events)} events in all)"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return found


TEST_MODULES = ("tests.support.tasks", "engine.builtin")


class WorkerProcess:
    """`onemanage worker MODULES...` in a child process; by default the test tasks and built-ins."""

    def __init__(
        self,
        log_dir: Path,
        processes: int = 1,
        env: dict[str, str] | None = None,
        modules: tuple[str, ...] = TEST_MODULES,
    ) -> None:
        self.processes = processes
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        self.started_at = datetime.now(UTC)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "-p", str(processes), *modules],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    async def ready(self, events: EventCollector, timeout: float = 30) -> set[str]:
        """Wait for a first heartbeat from each of its processes; their worker ids."""

        def mine(event: BaseEvent) -> bool:
            return (
                isinstance(event, WorkerHeartbeat)
                and event.state == "running"
                and event.started_at >= self.started_at.replace(microsecond=0)
            )

        try:
            beats = await events.wait_for(mine, self.processes, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{self.log()}") from None
        return {beat.worker_id for beat in beats if isinstance(beat, WorkerHeartbeat)}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


async def stored_events(
    broker: OneManageBroker, subject: str, since: timedelta = timedelta(minutes=10)
) -> list[BaseEvent]:
    """The events EVENTS actually stored (what listeners and the console read).

    A core subscription also sees a publish that JetStream deduplicated (a
    retried publish with the same Nats-Msg-Id), so "exactly once" is counted
    here, in the stream.
    """
    return await monitor.recent_events(broker, since, subject)
