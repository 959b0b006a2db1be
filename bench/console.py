"""The console under load: ingest rate, key-press latency at 5,000 events/s, RSS over 1M events.

(a) Ingest: N events (default 200,000) are stored in EVENTS first, then the real Pump
    (monitor.EventReader + parse_event + ConsoleState.fold) reads and folds that backlog. The
    baselines, measured in the same run on the same data: reading the stream alone,
    parse_event alone and fold alone, in memory.
(b) Keys: the real ConsoleApp runs headless (run_test) on the same server while a second
    process publishes at a paced 5,000 events/s. A space is sent as a terminal driver sends
    it, ~200 times; for each, the time until the pause action ran, until the screen was
    next composed with it, and until the next 10 Hz refresh (the status line) finished.
(c) Memory: a fresh process folds 1,000,000 stored events through the real Pump; RSS
    (psutil) before and after.

Usage: python -m bench.console [--events 200000] [--presses 200] [--rate 5000]
       [--rss-events 1000000] [--skip-rss]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from bench.common import ROOT, private_server, record, write_results
from console.state import ConsoleState, percentile
from engine import monitor
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowSubmitted,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
    parse_event,
)
from engine.identity import utc_now

TARGET_INGEST = 20_000  # events/s absorbed
TARGET_KEY_P95_MS = 100.0  # at 5,000 events/s
TARGET_RSS_MB = 100.0  # growth over 1,000,000 events
NAMES = ("img.resize", "img.encode", "files.upload", "mail.notify", "psd.parse", "psd.preview")
WORKERS = tuple(f"bench-{n}:{4000 + n}" for n in range(4))
IN_FLIGHT = 100


# -- synthetic traffic --------------------------------------------------------------------


def task_life(run: str, index: int) -> list[BaseEvent]:
    """Queued, started, then succeeded; every 10th fails, every 16th is retried once first."""
    ids = {
        "task_id": f"{run}-{index:08d}",
        "task_name": NAMES[index % len(NAMES)],
        "correlation_id": f"{run}-c{index // 8:07d}",
    }
    worker = WORKERS[index % len(WORKERS)]
    life: list[BaseEvent] = [TaskQueued(**ids), TaskStarted(**ids, worker_id=worker)]
    attempt = 1
    if index % 16 == 5:
        attempt = 2
        life += [
            TaskFailed(**ids, worker_id=worker, duration_ms=4.0, error_type="TransientError",
                       error_message="storage timed out", will_retry=True),
            TaskStarted(**ids, worker_id=worker, attempt=2),
        ]  # fmt: skip
    if index % 10 == 3:
        life.append(TaskFailed(**ids, worker_id=worker, attempt=attempt, duration_ms=9.5,
                               error_type="ValueError",
                               error_message=f"bad input {index}"))  # fmt: skip
    else:
        life.append(TaskSucceeded(**ids, worker_id=worker, attempt=attempt,
                                  duration_ms=1.0 + index % 50))  # fmt: skip
    return life


def workflow(run: str, index: int) -> list[BaseEvent]:
    wid = f"{run}-wf{index:07d}"
    common = {"workflow_id": wid, "filename": f"poster-{index}.psd", "correlation_id": wid}
    events: list[BaseEvent] = [
        PsdWorkflowSubmitted(**common, input_key=f"sha256-{index}", size_bytes=48_211)
    ]
    events += [
        PsdStepCompleted(**common, step=step, duration_ms=10.0 * (n + 1), summary={"n": n})
        for n, step in enumerate(("validate", "parse", "preview", "export"))
    ]
    events.append(
        PsdWorkflowCompleted(**common, duration_ms=120.0, manifest={"preview": {"key": "k"}})
    )
    return events


def heartbeat(worker: str, processed: int) -> WorkerHeartbeat:
    host, pid = worker.split(":")
    return WorkerHeartbeat(worker_id=worker, host=host, pid=int(pid), started_at=utc_now(),
                           interval_s=5.0, processed=processed)  # fmt: skip


def traffic(run: str) -> Iterator[tuple[str, bytes, str]]:
    """(subject, payload, msg id) forever, as a busy system interleaves them.

    Step k: task k is queued, task k-50 starts (and is retried), task k-100 ends; every
    250 steps a whole PSD workflow, every 500 a heartbeat, every 5,000 an unreadable payload.
    """
    lives: dict[int, list[BaseEvent]] = {}
    step = 0
    while True:
        lives[step] = task_life(run, step)
        batch = [lives[step][0]]
        if step - IN_FLIGHT // 2 in lives:
            batch += lives[step - IN_FLIGHT // 2][1:-1]
        if step - IN_FLIGHT in lives:
            batch.append(lives.pop(step - IN_FLIGHT)[-1])
        if step % 250 == 0:
            batch += workflow(run, step // 250)
        if step % 500 == 0:
            batch.append(heartbeat(WORKERS[step // 500 % len(WORKERS)], step))
        for event in batch:
            yield event.subject, event.model_dump_json().encode(), event.event_id
        if step % 5000 == 2500:
            yield "events.bench.garbage", b"{not json", f"{run}-garbage-{step}"
        step += 1


async def publish(js: Any, items: Iterator[tuple[str, bytes, str]], window: int = 2000) -> int:
    """Everything of ``items`` through publish_async, acks awaited in windows; the last seq."""
    futures: list[asyncio.Future[Any]] = []
    last = 0
    for subject, payload, msg_id in items:
        futures.append(await js.publish_async(subject, payload, headers={"Nats-Msg-Id": msg_id}))
        if len(futures) >= window:
            acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=60)
            last = max(last, *(ack.seq for ack in acks))
            futures = []
    if futures:
        acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=60)
        last = max(last, *(ack.seq for ack in acks))
    return last


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} events/s ({count:,} in {seconds:.2f}s)"


# -- (a) ingest ---------------------------------------------------------------------------


async def pump_until(state: ConsoleState, target_seq: int, since: timedelta) -> float:
    """The real Pump's ingest into ``state`` until ``target_seq`` is folded; seconds taken."""
    from console.pump import Pump
    from engine.app import broker

    pump = Pump(state, broker, since)
    started = time.perf_counter()
    task = asyncio.create_task(pump.ingest())
    try:
        while state.last_seq < target_seq:
            await asyncio.sleep(0.01)
            if task.done():
                task.result()
        return time.perf_counter() - started
    finally:
        while not task.done():  # one cancel can be lost on Python 3.11 (see the report)
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)


async def read_raw(broker: Any, first_seq: int, count: int) -> tuple[list[bytes], float]:
    """The stored payloads from ``first_seq``, read through monitor.EventReader, not decoded."""
    payloads: list[bytes] = []
    done = asyncio.Event()

    def keep(delivered: monitor.Delivered) -> None:
        payloads.append(delivered.data)
        if len(payloads) >= count:
            done.set()

    started = time.perf_counter()
    reader = asyncio.create_task(monitor.EventReader(broker, first_seq).run(keep))
    await done.wait()
    elapsed = time.perf_counter() - started
    while not reader.done():
        reader.cancel()
        await asyncio.wait({reader}, timeout=0.5)
    return payloads[:count], elapsed


async def bench_ingest(events: int) -> None:
    from engine.app import broker

    js = broker.js
    run = f"ingest{os.getpid()}"
    first = (await js.stream_info("EVENTS")).state.last_seq + 1
    started = time.perf_counter()
    last = await publish(js, islice(traffic(run), events))
    print(f"published {rate(last - first + 1, time.perf_counter() - started)} (publish_async)")

    state = ConsoleState()
    seconds = await pump_until(state, last, timedelta(days=1))
    absorbed = state.events
    payloads, read_seconds = await read_raw(broker, first, events)

    started = time.perf_counter()
    parsed = [parse_event(payload) for payload in payloads]
    decode_seconds = time.perf_counter() - started
    scratch = ConsoleState()
    started = time.perf_counter()
    for seq, event in enumerate(parsed, start=first):
        scratch.fold(event, seq)
    fold_seconds = time.perf_counter() - started
    in_memory = events / (decode_seconds + fold_seconds)
    end_to_end = absorbed / seconds

    print("\n(a) ingest: a stored backlog read and folded by the real Pump")
    print(f"    read only (tail, no decode)  {rate(events, read_seconds)}")
    print(f"    decode only (parse_event)    {rate(events, decode_seconds)}")
    print(f"    fold only (ConsoleState)     {rate(events, fold_seconds)}")
    print(f"    decode + fold, in memory     {in_memory:>10,.0f} events/s")
    print(
        f"    absorbed end to end (Pump)   {rate(absorbed, seconds)}   "
        f"target >= {TARGET_INGEST:,}: {'OK' if end_to_end >= TARGET_INGEST else 'MISSED'}"
    )
    print(f"    ratio end to end / (decode + fold in memory): {end_to_end / in_memory:.2f}")
    record("console.ingest.end_to_end_per_s", end_to_end)
    record("console.ingest.in_memory_per_s", in_memory)
    print(
        f"    state: {state.events:,} events, {len(state.rows):,} rows kept, "
        f"{state.evicted_rows:,} evicted, unreadable {sum(state.unreadable.values())}"
    )
    assert absorbed == events == len(payloads), (absorbed, events, len(payloads))


# -- (b) key presses ----------------------------------------------------------------------


async def publisher(rate_per_s: float) -> None:
    """The second process: publish at ``rate_per_s`` until SIGTERM; a JSON summary on stdout."""
    from engine.app import broker

    await broker.connect()  # this process's one connection, as everywhere (house rule 1)
    js = broker.js
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    items = traffic(f"keys{os.getpid()}")
    sent, tick = 0, 0.01
    pending: list[asyncio.Future[Any]] = []
    started = time.perf_counter()
    while not stop.is_set():
        due = int((time.perf_counter() - started) * rate_per_s)
        for subject, payload, msg_id in islice(items, max(due - sent, 0)):
            pending.append(
                await js.publish_async(subject, payload, headers={"Nats-Msg-Id": msg_id})
            )
            sent += 1
        if len(pending) >= 1000:
            await asyncio.wait_for(asyncio.gather(*pending), timeout=30)
            pending = []
        await asyncio.sleep(tick)
    await asyncio.wait_for(asyncio.gather(*pending), timeout=30)
    elapsed = time.perf_counter() - started
    print(json.dumps({"sent": sent, "seconds": elapsed, "rate": sent / elapsed}), flush=True)
    await broker.nc.close()


async def cancel_for_good(*names: str) -> None:
    """Cancel the named tasks until they are done (one cancel can be lost on Python 3.11)."""
    tasks = [task for task in asyncio.all_tasks() if task.get_name() in names]
    while not all(task.done() for task in tasks):
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=0.5)


async def stop_publisher(process: asyncio.subprocess.Process) -> dict[str, Any]:
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def bench_keys(presses: int, rate_per_s: float) -> None:
    from textual import events as textual_events

    from console.app import ConsoleApp, ConsoleOptions
    from console.widgets.task_flow import TaskFlow
    from engine.app import broker

    class TimedApp(ConsoleApp):
        """The console, noting the first action, paint and refresh after each key press."""

        CSS_PATH = Path(sys.modules[ConsoleApp.__module__].__file__ or "").parent / "console.tcss"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.changed = asyncio.Event()
            self.acted_at = self.painted_at = self.refreshed_at = 0.0

        def action_pause(self) -> None:
            super().action_pause()  # it refreshes the views itself
            self.acted_at = time.perf_counter()
            self.refreshed_at = self.refreshed_at or self.acted_at
            self.changed.set()

        def refresh_views(self) -> None:
            super().refresh_views()
            if self.acted_at and not self.refreshed_at:
                self.refreshed_at = time.perf_counter()
                self.changed.set()

        def _display(self, screen: Any, renderable: Any) -> None:  # every screen update
            super()._display(screen, renderable)
            if renderable is not None and self.acted_at and not self.painted_at:
                self.painted_at = time.perf_counter()  # the first paint after the action
                self.changed.set()

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.console", "--publisher", "--rate", str(rate_per_s),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    app = TimedApp(ConsoleOptions(since=timedelta(seconds=1)), connect=True)
    state = app.state
    acted: list[float] = []
    painted: list[float] = []
    refreshed: list[float] = []
    try:
        async with app.run_test(size=(160, 45), notifications=True) as pilot:
            deadline = time.perf_counter() + 60
            while app.pump is None or state.events < 2 * rate_per_s:  # warm: 2 s of traffic
                if process.returncode is not None or time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"no traffic: publisher exit {process.returncode}, backend {app.backend},"
                        f" {state.events} events folded"
                    )
                await pilot.pause(0.05)
            flow = app.query_one(TaskFlow)
            driver = app._driver
            assert driver is not None and not app.owns_connection
            events_before, started = state.events, time.perf_counter()
            for _ in range(presses):
                await asyncio.sleep(random.uniform(0.1, 0.3))  # out of step with the timer
                was = flow.paused
                app.acted_at = app.painted_at = app.refreshed_at = 0.0
                sent = time.perf_counter()
                driver.send_message(textual_events.Key("space", " "))  # as a terminal does
                while not (app.acted_at and app.painted_at and app.refreshed_at):
                    app.changed.clear()
                    await asyncio.wait_for(app.changed.wait(), timeout=10)
                assert flow.paused is not was
                acted.append((app.acted_at - sent) * 1000)
                painted.append((app.painted_at - sent) * 1000)
                refreshed.append((app.refreshed_at - sent) * 1000)
            elapsed = time.perf_counter() - started
            ingested = state.events - events_before
            stream = await broker.js.stream_info("EVENTS")
            behind = stream.state.last_seq - state.last_seq
            # Quit once nothing flows: the publisher stops and the pump catches up first. While
            # messages are still arriving, a cancelled pump can miss its cancellation on
            # Python 3.11 (nats-py's next_msg with a timeout), and q would never return.
            summary = await stop_publisher(process)
            last = (await broker.js.stream_info("EVENTS")).state.last_seq
            deadline = time.perf_counter() + 120
            while state.last_seq < last and time.perf_counter() < deadline:
                await pilot.pause(0.1)
            app.query_one("#task-rows").focus()
            try:
                await asyncio.wait_for(pilot.press("q"), timeout=30)
            except TimeoutError:
                print("    q did not return in 30 s: the pump missed its cancellation")
                await cancel_for_good("console-ingest", "console-poll")
    finally:
        if process.returncode is None:
            await stop_publisher(process)

    def line(what: str, values: list[float]) -> str:
        p50, p95 = percentile(values, 50) or 0.0, percentile(values, 95) or 0.0
        verdict = "OK" if p95 < TARGET_KEY_P95_MS else "MISSED"
        return (
            f"    {what:<40} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  max {max(values):6.1f} ms"
            f"   target p95 < {TARGET_KEY_P95_MS:.0f} ms: {verdict}"
        )

    print(f"\n(b) key presses: {presses} spaces while a second process publishes")
    print(
        f"    publisher: {summary['sent']:,} events in {summary['seconds']:.1f}s = "
        f"{summary['rate']:,.0f} events/s (asked {rate_per_s:,.0f})"
    )
    print(
        f"    console ingested {ingested / elapsed:,.0f} events/s while keys were pressed; "
        f"{behind:,} stored events not yet folded at the end"
    )
    print(line("key -> pause action ran", acted))
    print(line("key -> first screen update after it", painted))
    record("console.keys.painted_p95_ms", percentile(painted, 95) or 0.0)
    record("console.keys.ingest_per_s", ingested / elapsed)
    print(line("key -> views refreshed (status line)", refreshed))


# -- (c) memory ---------------------------------------------------------------------------


async def rss_worker(target_seq: int) -> None:
    """The fresh process of (c): fold the stream up to ``target_seq`` through the real Pump."""
    import psutil

    from engine.app import broker

    await broker.startup()
    process = psutil.Process()
    state = ConsoleState()
    gc.collect()
    before = process.memory_info().rss
    peak = before
    series: list[tuple[int, int, int]] = []  # (events folded, RSS, messages in nats-py's buffer)

    async def watch() -> None:
        nonlocal peak
        step = max(target_seq // 10, 1)
        while True:
            rss = process.memory_info().rss
            peak = max(peak, rss)
            if state.events >= step * (len(series) + 1):
                buffered = sum(sub.pending_msgs for sub in broker.nc._subs.values())
                series.append((state.events, rss, buffered))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    seconds = await pump_until(state, target_seq, timedelta(days=1))
    watcher.cancel()
    gc.collect()
    after = process.memory_info().rss
    traced = sum(len(trace) for trace in state.traces.values())
    print(json.dumps({
        "events": state.events, "seconds": seconds, "before": before, "after": after,
        "peak": max(peak, after), "rows": len(state.rows), "failures": len(state.failures),
        "traced": traced, "traces": len(state.traces), "series": series,
    }), flush=True)  # fmt: skip
    await broker.shutdown()


async def bench_rss(total: int) -> None:
    from engine.app import broker

    js = broker.js
    stored = (await js.stream_info("EVENTS")).state
    missing = total - stored.messages
    if missing > 0:
        started = time.perf_counter()
        await publish(js, islice(traffic(f"rss{os.getpid()}"), missing))
        print(f"\npublished {rate(missing, time.perf_counter() - started)} more for (c)")
    target = (await js.stream_info("EVENTS")).state.last_seq
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.console", "--rss-worker", str(target),
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(worker.communicate(), timeout=1800)
    assert worker.returncode == 0, f"the RSS process failed ({worker.returncode})"
    result = json.loads(out.decode().strip().splitlines()[-1])
    mib, growth = 1024 * 1024, (result["after"] - result["before"]) / 1e6
    print(f"\n(c) memory: a fresh process folds {result['events']:,} stored events (real Pump)")
    print(
        f"    RSS before {result['before'] / mib:.0f} MiB, after {result['after'] / mib:.0f} MiB, "
        f"peak {result['peak'] / mib:.0f} MiB; growth {growth:.1f} MB   "
        f"target < {TARGET_RSS_MB:.0f} MB: {'OK' if growth < TARGET_RSS_MB else 'MISSED'}"
    )
    record("console.rss.growth_mb", growth)
    record("console.rss.events", result["events"])
    print(
        "    RSS while folding: "
        + ", ".join(f"{n / 1000:.0f}k {rss / mib:.0f} MiB" for n, rss, _ in result["series"])
    )
    print(
        "    nats-py client buffer at those points: "
        + ", ".join(f"{buffered:,}" for _, _, buffered in result["series"])
        + " messages"
    )
    print(
        f"    folded at {result['events'] / result['seconds']:,.0f} events/s; kept "
        f"{result['rows']:,} rows, {result['failures']:,} failures, "
        f"{result['traced']:,} traced events in {result['traces']:,} traces"
    )


# -- main ---------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    from engine.app import broker

    server, data = private_server()
    os.environ["XDG_CONFIG_HOME"] = str(data / "config")  # no user key remapping
    try:
        await broker.startup()
        await broker.ensure_streams()
        print(
            f"{os.cpu_count()} CPUs; private nats-server {server.url}; "
            "console, nats-server (and in (b) the publisher) share them"
        )
        await bench_ingest(args.events)
        if not args.skip_rss:
            await bench_rss(args.rss_events)
        await bench_keys(args.presses, args.rate)
        await broker.shutdown()
        write_results(args.json)
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="backlog for (a)")
    parser.add_argument("--presses", type=int, default=200, help="key presses for (b)")
    parser.add_argument("--rate", type=float, default=5000, help="events/s published in (b)")
    parser.add_argument("--rss-events", type=int, default=1_000_000, help="events for (c)")
    parser.add_argument("--skip-rss", action="store_true", help="leave (c) out")
    parser.add_argument("--json", help="write the figures to this file (python -m bench)")
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss-worker", type=int, default=0, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if arguments.publisher:
            asyncio.run(publisher(arguments.rate))
        elif arguments.rss_worker:
            asyncio.run(rss_worker(arguments.rss_worker))
        else:
            asyncio.run(main(arguments))
