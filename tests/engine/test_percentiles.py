"""Percentiles of queue wait and run time: known durations in, their buckets back out."""

from __future__ import annotations

import asyncio
import json
import math
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import percentiles
from engine.broker import OneManageBroker
from engine.events.publisher import publish_event
from engine.events.schemas import TaskStarted, TaskSucceeded
from engine.events.windows import WINDOW_SLOTS, Slot, fold, window
from tests.support.harness import ROOT, EventCollector, WorkerProcess, onemanage
from tests.support.waiting import eventually

CALM = ROOT / "tests" / "support" / "calm-alerts.toml"


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _durations(seed: int, count: int) -> list[float]:
    """Durations spread over six decades, as a mixed workload has them."""
    rng = random.Random(seed)
    return [10 ** rng.uniform(-0.5, 5.5) for _ in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_percentile_lies_in_the_bucket_of_the_true_value(seed: int) -> None:
    values = _durations(seed, 997)
    histogram: percentiles.Histogram = {}
    for value in values:
        percentiles.add(histogram, value)
    for q in (50, 95, 99):
        got, true = percentiles.quantile(histogram, q), _exact(values, q)
        assert got is not None and percentiles.bucket(got) == percentiles.bucket(true), (q, got)
        assert true <= got <= true * percentiles.GROWTH  # never low, at most one bucket high


def test_the_window_keeps_an_hour_of_slots_however_long_it_runs() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    slots: list[Slot] = []
    for minute in range(5 * WINDOW_SLOTS):
        at = start + timedelta(minutes=minute)
        fold(slots, _succeeded("bounded", 10.0, at))
    assert len(slots) == WINDOW_SLOTS
    now = start + timedelta(minutes=5 * WINDOW_SLOTS - 1)
    assert window(slots, now).succeeded == WINDOW_SLOTS
    assert window(slots, now, 15 * 60).succeeded == 15
    fold(slots, _succeeded("bounded", 10.0, start))  # older than the window: left out
    assert len(slots) == WINDOW_SLOTS and window(slots, now).succeeded == WINDOW_SLOTS


def _succeeded(name: str, ms: float, at: datetime | None = None) -> TaskSucceeded:
    return TaskSucceeded(
        task_id=uuid.uuid4().hex,
        task_name=name,
        worker_id="injected",
        duration_ms=ms,
        **({"timestamp": at} if at else {}),
    )


def _started(name: str, waited_ms: float) -> TaskStarted:
    now = datetime.now(UTC)
    return TaskStarted(
        task_id=uuid.uuid4().hex,
        task_name=name,
        worker_id="injected",
        timestamp=now,
        queued_at=now - timedelta(milliseconds=waited_ms),
    )


@pytest.mark.slow
async def test_status_and_check_report_the_injected_durations_within_one_bucket(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Lifecycle events with known durations, folded by a real worker's task-stats listener."""
    worker = start_workers(processes=1)
    await worker.ready(events)
    name = f"injected.{uuid.uuid4().hex[:8]}"
    runs, waits = _durations(7, 200), _durations(8, 200)
    for run, wait in zip(runs, waits, strict=True):
        await publish_event(client, _started(name, wait))
        await publish_event(client, _succeeded(name, run))
    last: list[Any] = []

    async def folded() -> dict[str, Any] | None:
        done = await asyncio.to_thread(onemanage, "status", "--json")
        stats = [s for s in json.loads(done.stdout)["task_stats"] if s["task_name"] == name]
        last[:] = stats
        hour = stats[0]["last_hour"] if stats else None
        return hour if hour and hour["run_ms"]["n"] == len(runs) else None

    hour = await eventually(folded, 60, lambda: f"not all folded: {last}", interval=0.5)
    assert hour["succeeded"] == len(runs) and hour["queue_wait_ms"]["n"] == len(waits)
    for q in (50, 95, 99):
        for shown, values in ((hour["run_ms"], runs), (hour["queue_wait_ms"], waits)):
            true = _exact(values, q)
            assert percentiles.bucket(shown[f"p{q}"]) == percentiles.bucket(true), (q, shown)
    text = (await asyncio.to_thread(onemanage, "status")).stdout
    (line,) = [line for line in text.splitlines() if line.startswith(name)]
    assert f"{len(runs)}" in line.split()

    # check judges the same p95 (its window is the last 15 minutes: the same events).
    limits = tmp_path / "alerts.toml"
    calm = CALM.read_text().replace("min_runs = 1000000", "min_runs = 20")
    limits.write_text(calm + "run_p95_warning_ms = 1\n")
    done = await asyncio.to_thread(
        onemanage, "check", "--json", env={"ONEMANAGE_ALERTS_FILE": str(limits)}
    )
    found = json.loads(done.stdout)["findings"]
    (p95,) = [f for f in found if f.get("rule") == "run_p95" and f["about"] == name]
    assert p95["level"] == "warning", p95
    assert f"p95 run time {hour['run_ms']['p95'] / 1000:.3g} s over {len(runs)} runs" in p95["text"]
