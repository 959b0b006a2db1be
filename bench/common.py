"""Shared pieces of the benchmarks: a private server, worker processes, event counting."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nats.aio.msg import Msg

from engine import embedded
from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, WorkerHeartbeat, parse_event

ROOT = Path(__file__).resolve().parents[1]


def private_server() -> tuple[embedded.EmbeddedServer, Path]:
    """A throw-away nats-server; the environment points every process at it."""
    data = Path(tempfile.mkdtemp(prefix="onemanage-bench-"))
    server = embedded.start(data / "server", detach=False)
    os.environ.update(
        ONEMANAGE_NATS_URL=server.url,
        ONEMANAGE_DATA_DIR=str(data / "data"),
        ONEMANAGE_HEARTBEAT_INTERVAL="0.5",
    )
    return server, data


class Counter:
    """Counts events matching a predicate on a core subscription."""

    def __init__(self, predicate: Callable[[BaseEvent], bool]) -> None:
        self.predicate = predicate
        self.count = 0
        self.seen: set[str] = set()
        self.changed = asyncio.Event()

    async def on_msg(self, msg: Msg) -> None:
        event = parse_event(msg.data)
        if isinstance(event, BaseEvent) and self.predicate(event):
            self.count += 1
            self.changed.set()

    async def until(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.count} of {count} after {timeout}s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1)


def start_worker(processes: int, *modules: str) -> subprocess.Popen[bytes]:
    """`onemanage worker` (the built-in application unless ``modules`` are named)."""
    return start([sys.executable, "-m", "engine.cli", "worker", "-p", str(processes), *modules])


def start(command: list[str]) -> subprocess.Popen[bytes]:
    """A worker command in its own session, on the benchmark's server, quiet."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


async def wait_for_workers(broker: OneManageBroker, count: int, since: float) -> None:
    """Until ``count`` workers that started after ``since`` (epoch seconds) beat."""
    seen: set[str] = set()
    ready = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        event = parse_event(msg.data)
        if isinstance(event, WorkerHeartbeat) and event.started_at.timestamp() >= since - 1:
            seen.add(event.worker_id)
            if len(seen) >= count:
                ready.set()

    sub = await broker.nc.subscribe("events.worker.heartbeat", cb=on_msg)
    try:
        await asyncio.wait_for(ready.wait(), 60)
    finally:
        await sub.unsubscribe()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (Linux /proc), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, IndexError, ValueError):
            continue
        pending.extend(int(child) for child in children)
    return total
