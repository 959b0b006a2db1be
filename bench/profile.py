"""Where a worker's time goes: py-spy on one worker process under N no-op tasks.

Starts a private server and one `onemanage worker` process, records its worker
child with py-spy while N no-op tasks run through it, and prints the share of the
event loop's samples in each part of the path (docs/adr/0003-throughput.md).
ONEMANAGE_LIFECYCLE_EVENTS=false in the environment profiles the engine alone.

Usage: python -m bench.profile [--tasks 20000] [--out FILE]   (needs py-spy: the dev extra)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from taskiq.kicker import AsyncKicker

from bench.common import cpu_seconds, private_server, start_worker, stop_worker, wait_for_workers
from bench.tasks import CONCURRENCY, acked_all, listeners_caught_up
from engine.app import broker
from engine.streams import TASKS
from engine.tasks.diagnostics import NOOP_TASK

# A part of the path, and the frames whose presence in a sample puts it there.
PARTS = {
    "socket writes (nats-py flusher)": ("_SelectorSocketTransport.write",),
    "taskiq receiver (every task)": ("Receiver.callback",),
    "pull and settle (engine/consuming)": ("Consumption._pull", "Consumption.settle"),
    "lifecycle events: build and publish": ("publish_event (", "LifecycleMiddleware._send"),
    "listener runs": ("Consumption._listen",),
    "  parse_event": ("parse_event",),
    "  marks": ("mark_handled",),
    "  statistics compare-and-set": ("fold_task_events",),
    "  audit append": ("AuditLog.append",),
    "result store (KV put)": ("NatsKVResultBackend.set_result",),
    "pydantic dump and validate": ("model_dump_json", "model_validate", "BaseModel.__init__"),
    "nats-py parser (reads)": ("Parser.parse",),
}


def shares(raw: Path) -> tuple[int, dict[str, float]]:
    """py-spy's collapsed stacks: samples in the worker's loop, and each part's share of them."""
    in_loop = 0
    hits: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or ("run_until_complete" not in stack and "cli.py" not in stack):
            continue
        in_loop += int(count)
        for part, frames in PARTS.items():
            if any(frame in stack for frame in frames):
                hits[part] += int(count)
    return in_loop, {part: hits[part] / max(in_loop, 1) for part in PARTS}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile.txt"))
    args = parser.parse_args()
    spy_binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy_binary).exists():
        sys.exit("py-spy not found: pip install -e '.[dev]'")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server, _ = private_server()
    os.environ["ONEMANAGE_CONCURRENCY"] = str(CONCURRENCY)
    await broker.startup()
    await broker.ensure_streams()
    since = time.time()
    worker = start_worker(1)
    try:
        await wait_for_workers(broker, 1, since)
        child = int(Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()[0])
        spy = subprocess.Popen(
            [spy_binary, "record", "--pid", str(child), "--format", "raw", "--rate", "250",
             "--nonblocking", "-o", str(args.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        worker_cpu, server_cpu = cpu_seconds(worker.pid), cpu_seconds(server.pid)
        started = time.perf_counter()
        noop: AsyncKicker[..., Any] = AsyncKicker(NOOP_TASK, broker, {})
        await asyncio.gather(*(noop.kiq() for _ in range(args.tasks)))
        await acked_all(TASKS, broker.settings.tasks_durable)
        elapsed = time.perf_counter() - started
        await listeners_caught_up()  # their work is the task's too (bench.tasks)
        worker_cpu = (cpu_seconds(worker.pid) - worker_cpu) / args.tasks * 1e6
        server_cpu = (cpu_seconds(server.pid) - server_cpu) / args.tasks * 1e6
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    finally:
        stop_worker(worker)
        await broker.shutdown()
        server.stop()
    lifecycle = os.environ.get("ONEMANAGE_LIFECYCLE_EVENTS", "true")
    print(f"{args.tasks} no-op tasks, 1 worker process, lifecycle events {lifecycle}: "
          f"{args.tasks / elapsed:,.0f} tasks/s; CPU per task: worker {worker_cpu:.0f} us, "
          f"nats-server {server_cpu:.0f} us")  # fmt: skip
    samples, parts = shares(args.out)
    print(f"py-spy: {samples:,} samples in the worker's event loop ({args.out})")
    for part, share in parts.items():
        print(f"  {share * 100:5.1f}%  {part}")


if __name__ == "__main__":
    asyncio.run(main())
