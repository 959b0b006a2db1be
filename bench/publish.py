"""Publishing events: a connection per publish (the old architecture) against the shared one.

The old system opened a NATS connection in events/client.py for every event, published,
and closed it. This simulates that with no connection opened outside engine/connection.py:
for every event it creates a fresh ``OneManageBroker``, connects it, publishes with
``publish_event(fresh, event)`` and closes it again (``fresh.shutdown()``). The
new architecture is the process's one broker connection, opened once. Both publish the
same event to EVENTS with the same ``Nats-Msg-Id`` handling, so the difference is the
connection alone.

Prints events/s for old and new at a few concurrency levels (publishers running at once)
and the ratio new / old, and against raw nats-py ``js.publish`` of the same bytes (the
floor publish_event's stamping and retry policy cost against), measured in the same
run on the same private server.

Usage: python -m bench.publish [--events 1000] [--concurrency 1 10 100] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from bench.common import private_server, record, write_results
from engine.app import broker
from engine.broker import OneManageBroker
from engine.events.publisher import publish_event
from engine.events.schemas import BaseEvent


class BenchPublished(BaseEvent):
    """A small event only this benchmark publishes (nobody listens to it)."""

    event_type: Literal["bench.published"] = "bench.published"
    event_version: str = "1.0"
    n: int
    note: str = "x" * 100


async def publish_old(n: int) -> None:
    """One event the old way: connect, publish, close."""
    # Share the parsed settings: parsing them costs ~3 ms, which the old system paid once.
    fresh = OneManageBroker(broker.settings)
    await fresh.connect()
    try:
        await publish_event(fresh, BenchPublished(n=n))
    finally:
        await fresh.shutdown()  # flush and close this connection


async def publish_new(n: int) -> None:
    """One event the new way: the process's shared connection."""
    await publish_event(broker, BenchPublished(n=n))


async def publish_raw(n: int) -> None:
    """The floor: nats-py's own js.publish of the same bytes, with a Nats-Msg-Id."""
    event = BenchPublished(n=n)
    await broker.js.publish(
        event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.event_id}
    )


async def measure(
    publish: Callable[[int], Awaitable[None]], events: int, concurrency: int
) -> tuple[float, float]:
    """``events`` publishes by ``concurrency`` publishers at once: (events/s, p50 ms)."""
    latencies: list[float] = []
    counter = iter(range(events))

    async def publisher() -> None:
        for n in counter:
            started = time.perf_counter()
            await publish(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return events / elapsed, statistics.median(latencies) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000, help="events per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--json", help="write the figures to this file (python -m bench)")
    args = parser.parse_args()
    server, _ = private_server()
    try:
        await broker.startup()
        await broker.ensure_streams()
        await measure(publish_old, 20, 1)  # warm-up: imports, first connection
        await measure(publish_new, 20, 1)
        print(f"{os.cpu_count()} CPUs; {args.events} events per run, one EVENTS stream")
        print(
            f"{'publishers':>10} {'old ev/s':>10} {'old p50':>9} "
            f"{'new ev/s':>10} {'new p50':>9} {'new/old':>8} {'raw ev/s':>10} {'new/raw':>8}"
        )
        for concurrency in args.concurrency:
            old_rate, old_p50 = await measure(publish_old, args.events, concurrency)
            # Alternated, best of two each: the old way's hundred closing connections
            # must not weigh on whichever runs right after it.
            runs = [
                (await measure(publish_new, args.events, concurrency),
                 (await measure(publish_raw, args.events, concurrency))[0])
                for _ in range(2)
            ]  # fmt: skip
            new_rate, new_p50 = max(new for new, _ in runs)
            raw_rate = max(raw for _, raw in runs)
            print(
                f"{concurrency:>10} {old_rate:>10,.0f} {old_p50:>7.2f}ms "
                f"{new_rate:>10,.0f} {new_p50:>7.2f}ms {new_rate / old_rate:>7.1f}x "
                f"{raw_rate:>10,.0f} {new_rate / raw_rate:>7.2f}x"
            )
            record(f"publish.c{concurrency}.old_per_s", old_rate)
            record(f"publish.c{concurrency}.new_per_s", new_rate)
            record(f"publish.c{concurrency}.raw_per_s", raw_rate)
        await broker.shutdown()
        write_results(args.json)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
