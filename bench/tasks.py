"""End-to-end task throughput: N no-op tasks through 1 and then 2 worker processes.

Prints tasks/s for each and the ratio of 2 workers to 1 (the baseline, measured
in the same run on the same server). Usage: python -m bench.tasks [--tasks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time
from typing import Any

from taskiq.kicker import AsyncKicker

from bench.common import (
    Counter,
    cpu_seconds,
    private_server,
    start_worker,
    stop_worker,
    wait_for_workers,
)
from engine.app import broker
from engine.events.schemas import TaskSucceeded
from engine.tasks.diagnostics import NOOP_TASK


async def run_once(processes: int, tasks: int, server_pid: int) -> float:
    since = time.time()
    worker = start_worker(processes)
    try:
        await wait_for_workers(broker, processes, since)
        counter = Counter(lambda e: isinstance(e, TaskSucceeded) and e.task_name == "diag.noop")
        sub = await broker.nc.subscribe("events.task.succeeded", cb=counter.on_msg)
        cpu_before = cpu_seconds(worker.pid), cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        noop: AsyncKicker[..., Any] = AsyncKicker(NOOP_TASK, broker, {})
        await asyncio.gather(*(noop.kiq() for _ in range(tasks)))
        kicked = time.perf_counter() - started
        await counter.until(tasks)
        elapsed = time.perf_counter() - started
        await sub.unsubscribe()
        cpu_after = cpu_seconds(worker.pid), cpu_seconds(server_pid), time.process_time()
        per_task = [
            (after - before) / tasks * 1e6
            for before, after in zip(cpu_before, cpu_after, strict=False)
        ]
        print(
            f"{processes} worker process(es): {tasks} tasks in {elapsed:.2f}s = "
            f"{tasks / elapsed:,.0f} tasks/s end to end (kicking alone {tasks / kicked:,.0f}/s)"
        )
        print(
            f"   CPU per task: workers {per_task[0]:.0f} us, nats-server {per_task[1]:.0f} us, "
            f"client {per_task[2]:.0f} us"
        )
        return tasks / elapsed
    finally:
        stop_worker(worker)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    server, _ = private_server()
    try:
        await broker.startup()
        await broker.ensure_streams()
        print(f"{os.cpu_count()} CPUs; each task also feeds 2 listeners 3 lifecycle events")
        one = await run_once(1, args.tasks, server.pid)
        two = await run_once(2, args.tasks, server.pid)
        print(f"ratio 2 workers / 1 worker: {two / one:.2f}x")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"client process peak RSS {rss:.0f} MiB")
        await broker.shutdown()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
