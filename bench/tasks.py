"""End-to-end task throughput: N no-op tasks, the stock taskiq-nats broker against the engine.

The baseline is the stock ``taskiq_nats.PullBasedJetStreamBroker`` (fetch 1, no
result backend, no events: bench/stock.py), measured in the same run on the same
server; then the engine (lifecycle events, both built-in listeners, KV results)
with 1 and 2 worker processes, at the same concurrency; then the engine alone
(ONEMANAGE_LIFECYCLE_EVENTS=false, KV results still stored) against the stock
broker fetching 10. A run is complete when the durable's acknowledged floor
reaches the last stored task. The listeners' durables on EVENTS may still be
working then: each engine run waits for them to catch up before it reads the
CPU figures and stops its workers, so a run's listener work is counted in its
CPU and never spills into the next run (before 2026-12-03 it did: the engine
alone ran behind two default runs' audit and statistics backlog).
Usage: python -m bench.tasks [--tasks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from typing import Any

from taskiq.kicker import AsyncKicker

from bench.common import (
    cpu_seconds,
    private_server,
    record,
    start,
    start_worker,
    stop_worker,
    wait_for_workers,
    write_results,
)
from engine.app import broker, create_broker
from engine.streams import EVENTS, TASKS
from engine.tasks.diagnostics import NOOP_TASK

CONCURRENCY = 10  # tasks at once per worker process, for both brokers


async def acked_all(stream: str, durable: str, timeout: float = 300) -> None:
    """Until ``durable`` has acknowledged everything stored in ``stream``."""
    deadline = time.monotonic() + timeout
    while True:
        last = (await broker.js.stream_info(stream)).state.last_seq
        info = await broker.js.consumer_info(stream, durable)
        if info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= last:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{durable}: ack floor {info.ack_floor} of {last} after {timeout}s")
        await asyncio.sleep(0.005)


async def listeners_caught_up(timeout: float = 300) -> float:
    """Until every durable on EVENTS has nothing pending or unacknowledged: seconds waited."""
    started = time.monotonic()
    while True:
        behind = [
            info.name
            for info in await broker.js.consumers_info(EVENTS)
            if info.num_pending or info.num_ack_pending
        ]
        if not behind:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"listeners still behind after {timeout}s: {behind}")
        await asyncio.sleep(0.05)


async def run_stock(tasks: int, server_pid: int, fetch: int = 1) -> float:
    """The stock broker: one `taskiq worker bench.stock:broker` process, ``fetch`` per pull."""
    from bench import stock

    os.environ["BENCH_STOCK_FETCH"] = str(fetch)  # read by the worker process's bench.stock
    worker = start(
        [sys.executable, "-m", "taskiq", "worker", "bench.stock:broker", "-w", "1",
         "--max-async-tasks", str(CONCURRENCY)]
    )  # fmt: skip
    try:
        await stock.broker.startup()
        await broker.js.purge_stream(stock.STREAM)
        deadline = time.monotonic() + 60
        while not (await broker.js.consumer_info(stock.STREAM, stock.DURABLE)).num_waiting:
            if time.monotonic() > deadline:
                raise TimeoutError("the stock worker never pulled")
            await asyncio.sleep(0.05)  # the worker is ready when it waits in a pull
        cpu_before = cpu_seconds(worker.pid), cpu_seconds(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(stock.noop.kiq() for _ in range(tasks)))
        await acked_all(stock.STREAM, stock.DURABLE)
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds(worker.pid), cpu_seconds(server_pid)
        per_task = [(a - b) / tasks * 1e6 for b, a in zip(cpu_before, cpu_after, strict=True)]
        print(
            f"stock taskiq-nats pull broker (fetch {fetch}), 1 worker process: {tasks} tasks in "
            f"{elapsed:.2f}s = {tasks / elapsed:,.0f} tasks/s"
        )
        print(f"   CPU per task: worker {per_task[0]:.0f} us, nats-server {per_task[1]:.0f} us")
        record(f"tasks.stock_fetch{fetch}.cpu_us.worker", per_task[0])
        record(f"tasks.stock_fetch{fetch}.cpu_us.server", per_task[1])
        return record(f"tasks.stock_fetch{fetch}.per_s", tasks / elapsed)
    finally:
        await stock.broker.shutdown()
        stop_worker(worker)


async def run_once(processes: int, tasks: int, server_pid: int, alone: bool = False) -> float:
    """The engine's default worker; ``alone``: lifecycle events off, in the workers and here."""
    since = time.time()
    os.environ["ONEMANAGE_LIFECYCLE_EVENTS"] = str(not alone).lower()
    worker = start_worker(processes)
    kicker = create_broker(broker.settings.model_copy(update={"lifecycle_events": not alone}))
    try:
        await kicker.startup()
        await wait_for_workers(broker, processes, since)
        cpu_before = cpu_seconds(worker.pid), cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        noop: AsyncKicker[..., Any] = AsyncKicker(NOOP_TASK, kicker, {})
        await asyncio.gather(*(noop.kiq() for _ in range(tasks)))
        kicked = time.perf_counter() - started
        await acked_all(TASKS, broker.settings.tasks_durable)
        elapsed = time.perf_counter() - started
        # The engine alone publishes no events: its listeners have nothing of this run
        # to do, and may still wait out a message an earlier run's stop left behind.
        settling = 0.0 if alone else await listeners_caught_up()
        cpu_after = cpu_seconds(worker.pid), cpu_seconds(server_pid), time.process_time()
        per_task = [
            (after - before) / tasks * 1e6
            for before, after in zip(cpu_before, cpu_after, strict=False)
        ]
        what = "engine alone (lifecycle events off)" if alone else "default worker"
        print(
            f"{what}, {processes} process(es): {tasks} tasks in {elapsed:.2f}s = "
            f"{tasks / elapsed:,.0f} tasks/s end to end (kicking alone {tasks / kicked:,.0f}/s); "
            f"the listeners caught up {settling:.2f}s later"
        )
        print(
            f"   CPU per task: workers {per_task[0]:.0f} us, nats-server {per_task[1]:.0f} us, "
            f"client {per_task[2]:.0f} us"
        )
        name = "engine_alone" if alone else f"engine_{processes}p"
        for part, value in zip(("worker", "server", "client"), per_task, strict=True):
            record(f"tasks.{name}.cpu_us.{part}", value)
        return record(f"tasks.{name}.per_s", tasks / elapsed)
    finally:
        await kicker.shutdown()
        stop_worker(worker)
        os.environ.pop("ONEMANAGE_LIFECYCLE_EVENTS", None)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--json", help="write the figures to this file (python -m bench)")
    args = parser.parse_args()
    server, _ = private_server()
    os.environ["ONEMANAGE_CONCURRENCY"] = str(CONCURRENCY)
    try:
        await broker.startup()
        await broker.ensure_streams()
        print(f"{os.cpu_count()} CPUs; {CONCURRENCY} tasks at once per worker process")
        stock = await run_stock(args.tasks, server.pid)
        stock10 = await run_stock(args.tasks, server.pid, fetch=10)
        one = await run_once(1, args.tasks, server.pid)
        two = await run_once(2, args.tasks, server.pid)
        alone = await run_once(1, args.tasks, server.pid, alone=True)
        print(f"engine, 1 worker process / stock: {one / stock:.2f}x")
        print(f"engine, 2 worker processes / stock: {two / stock:.2f}x")
        print(f"engine, 2 worker processes / 1: {two / one:.2f}x")
        print(f"engine alone, 1 worker process / stock fetch 10: {alone / stock10:.2f}x")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"client process peak RSS {rss:.0f} MiB")
        await broker.shutdown()
        write_results(args.json)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
