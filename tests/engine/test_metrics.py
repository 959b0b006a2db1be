"""`onemanage worker --metrics-port`: a scrape after real tasks has the counters and histograms."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.broker import OneManageBroker
from tests.support.harness import EventCollector, WorkerProcess
from tests.support.tasks import whoami
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "pid"))): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_after_real_tasks_counts_them_in_both_processes(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    port = _free_port()
    worker = start_workers(processes=2, options=("--metrics-port", str(port)))
    await worker.ready(events)
    tasks = [await whoami.kiq(n) for n in range(6)]
    ran = [await task.wait_result(timeout=60) for task in tasks]
    assert {r.return_value["n"] for r in ran} == set(range(6))
    ok = ("onemanage_tasks_total", (("state", "succeeded"), ("task_name", "test.whoami")))
    # Lifecycle events go out through an outbox after the task: counted a little later.
    published = ("onemanage_events_published_total", (("event_type", "task.succeeded"),))

    async def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = await asyncio.to_thread(_scrape, port)
        return samples if samples.get(ok, 0) >= 6 and samples.get(published, 0) >= 6 else None

    samples = await eventually(counted, 60, "the scrape never counted the six tasks and events")
    timed = ("onemanage_task_duration_seconds_count", (("task_name", "test.whoami"),))
    assert samples[timed] >= 6
    bucket = (
        "onemanage_task_duration_seconds_bucket",
        (("le", "+Inf"), ("task_name", "test.whoami")),
    )
    assert samples[bucket] >= 6
    lanes = {dict(k[1]).get("lane") for k in samples if k[0] == "onemanage_lane_healthy"}
    assert client.settings.tasks_durable in lanes
