"""Real worker processes and real event subscriptions for the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerInfo

from engine import monitor
from engine.broker import OneManageBroker
from engine.events.schemas import (
    BaseEvent,
    TaskFailed,
    TaskStarted,
    UnparsedEvent,
    WorkerHeartbeat,
    parse_event,
)
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


class EventCollector:
    """Every event on ``subject`` from the moment it subscribes (core NATS, no durable)."""

    def __init__(self, broker: OneManageBroker, subject: str = "events.>") -> None:
        self.broker = broker
        self.subject = subject
        self.events: list[BaseEvent] = []
        self.unparsed: list[UnparsedEvent] = []
        self._sub: Subscription | None = None

    async def __aenter__(self) -> EventCollector:
        async def on_msg(msg: Msg) -> None:
            event = parse_event(msg.data)
            if isinstance(event, BaseEvent):
                self.events.append(event)
            else:
                self.unparsed.append(event)

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
        assert count >= 1

        def enough() -> list[BaseEvent]:
            found = self.matching(predicate)
            return found if len(found) >= count else []

        def seen() -> str:
            return (
                f"saw {len(self.matching(predicate))} of {count} expected events on "
                f"{self.subject} (of {len(self.events)} events in all)"
            )

        return await eventually(enough, timeout, seen)


TEST_MODULES = ("tests.support.tasks", "engine.builtin")


class WorkerProcess:
    """`onemanage worker MODULES...` in a child process; by default the test tasks and built-ins."""

    def __init__(
        self,
        log_dir: Path,
        processes: int = 1,
        env: dict[str, str] | None = None,
        modules: tuple[str, ...] = TEST_MODULES,
        options: tuple[str, ...] = (),
    ) -> None:
        self.processes = processes
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        self.started_at = datetime.now(UTC)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker", "-p", str(processes), *options,
             *modules],
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
                and event.started_at >= self.started_at  # this process began after Popen
            )

        try:
            beats = await events.wait_for(mine, self.processes, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker log:\n{self.log()}") from None
        return {beat.worker_id for beat in beats if isinstance(beat, WorkerHeartbeat)}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Every process of it stopped (SIGSTOP, a hung host), and continued afterwards."""
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)

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
    broker: OneManageBroker, subject: str, since: timedelta | datetime = timedelta(minutes=10)
) -> list[BaseEvent]:
    """The events EVENTS actually stored (what listeners and the console read).

    A core subscription also sees a publish that JetStream deduplicated (a
    retried publish with the same Nats-Msg-Id), so "exactly once" is counted
    here, in the stream. ``since`` is a time ago or a moment (a worker's
    ``started_at``: a test reads its own events, not the whole session's).
    """
    if isinstance(since, datetime):
        since = datetime.now(UTC) - since
    return await monitor.recent_events(broker, since, subject)


def onemanage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`onemanage ARGS` as a script runs it: no TTY (stdin /dev/null, output to pipes)."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def deliveries(info: ConsumerInfo) -> int:
    """Deliveries a durable made so far: every delivery, a redelivery too, counts one."""
    return (info.delivered.consumer_seq or 0) if info.delivered else 0


async def settled(
    broker: OneManageBroker,
    stream: str,
    durable: str,
    through: int | None = None,
    timeout: float = 120,
) -> ConsumerInfo:
    """Wait until ``durable`` has nothing left to deliver and nothing awaiting an ack.

    From then on none of the messages it had can be delivered again (an acked
    command is gone from the work queue; an acked event is below the ack
    floor), so what their handlers did is final. With ``through`` (a stream
    sequence), an ack floor at or past it is enough: for a durable that other
    traffic (heartbeats) never leaves idle. Returns the durable's info.
    """
    last: list[ConsumerInfo] = []

    async def done() -> ConsumerInfo | None:
        info = await broker.js.consumer_info(stream, durable)
        last[:] = [info]
        idle = not info.num_pending and not info.num_ack_pending
        floor = (info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        return info if idle or (through is not None and floor >= through) else None

    def busy() -> str:
        if not last:
            return f"{stream}/{durable}: no figures"
        info = last[0]
        return (
            f"{stream}/{durable} still has {info.num_pending} pending and "
            f"{info.num_ack_pending} awaiting an ack (ack floor {info.ack_floor}, "
            f"wanted {through})"
        )

    return await eventually(done, timeout, busy, interval=0.1)


async def started_again(broker: OneManageBroker, since: datetime) -> str:
    """The tasks started more than once since ``since``, and how their runs ended.

    What a failed "once" shows: attempt@worker and time of each start, then
    each failure (attempt, error, whether it was to be retried).
    """
    runs: dict[str, list[str]] = {}
    started: dict[str, int] = {}
    for event in await stored_events(broker, "events.task.>", since):
        key = f"{getattr(event, 'task_name', '?')} {getattr(event, 'task_id', '?')}"
        if isinstance(event, TaskStarted):
            started[key] = started.get(key, 0) + 1
            line = f"started {event.attempt}@{event.worker_id} {event.timestamp:%H:%M:%S.%f}"
        elif isinstance(event, TaskFailed):
            line = (
                f"failed {event.attempt}@{event.worker_id} {event.error_type}: "
                f"{event.error_message[:200]} (retry: {event.will_retry})"
            )
        else:
            continue
        runs.setdefault(key, []).append(line)
    again = {key: lines for key, lines in runs.items() if started.get(key, 0) > 1}
    return f"started more than once: {again}"


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL a worker's whole process group, as a crash of its host service would.

    SIGKILL of the main process alone leaves taskiq's worker children running
    (PLATFORM-NOTES); the group is the main process and its children.
    """
    if worker.process.poll() is None:
        os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(10)
