"""Shared pieces of the benchmarks: a private server, worker processes, event counting."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import secrets
import shutil
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

# What a benchmark measured, by name: `python -m bench` reads it (--json PATH) and
# compares it with the targets (bench/__main__.py).
RESULTS: dict[str, float] = {}


def record(name: str, value: float) -> float:
    RESULTS[name] = float(value)
    return value


def write_results(path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(RESULTS, indent=2, sort_keys=True) + "\n")


BENCH_USER = "bench"  # the benchmark's own user: it watches core subjects, which no role may
# Credentials the benchmark's own connection uses and the workers it starts must not inherit.
_OWN = ("ONEMANAGE_NATS_USER", "ONEMANAGE_NATS_PASSWORD")


def private_server() -> tuple[embedded.EmbeddedServer, Path]:
    """A throw-away authenticated nats-server, as the embedded default is.

    The workers started here connect as the worker role (the generated files);
    this process and the stock broker as an unrestricted user of their own
    (``BENCH_ADMIN_URL``), so the baseline pays no permission it would not.
    """
    data = Path(tempfile.mkdtemp(prefix="onemanage-bench-"))
    password = secrets.token_urlsafe(24)
    config = embedded.auth_config(data / "server", [{"user": BENCH_USER, "password": password}])
    server = embedded.start(data / "server", detach=False, config=config)
    atexit.register(_remove, server, data)  # a run's store is tens of MB: none is left behind
    os.environ.update(
        ONEMANAGE_NATS_URL=server.url,
        ONEMANAGE_CREDENTIALS_DIR=str(server.credentials_dir),
        ONEMANAGE_NATS_USER=BENCH_USER,
        ONEMANAGE_NATS_PASSWORD=password,
        ONEMANAGE_DATA_DIR=str(data / "data"),
        ONEMANAGE_HEARTBEAT_INTERVAL="0.5",
        BENCH_ADMIN_URL=server.url.replace("nats://", f"nats://{BENCH_USER}:{password}@"),
    )
    return server, data


def _remove(server: embedded.EmbeddedServer, data: Path) -> None:
    """Stop the server if the run did not, then delete its store and credentials."""
    server.stop()
    shutil.rmtree(data, ignore_errors=True)


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
        env={**{k: v for k, v in os.environ.items() if k not in _OWN}, "PYTHONPATH": str(ROOT)},
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
