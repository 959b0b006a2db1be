"""Prometheus metrics of a worker, with the standard client library (prometheus-client).

``onemanage worker --metrics-port N`` serves them. Its processes share one
directory of prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set before anything imports the library, so that the forked children write
their figures there) and the command's own process serves their sum. Without
the option the same metrics live in each process's memory and cost a counter
increment; nothing serves them.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

TASKS = Counter(
    "onemanage_tasks", "Task runs by task type and state (started, succeeded, failed)",
    ["task_name", "state"],
)  # fmt: skip
DURATION = Histogram(
    "onemanage_task_duration_seconds", "Run time of a task, started to finished", ["task_name"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)  # fmt: skip
EVENTS = Counter(
    "onemanage_events_published", "Events stored on EVENTS by this worker", ["event_type"]
)
EVENTS_FAILED = Counter(
    "onemanage_events_publish_failed", "Events this worker could not store", ["event_type"]
)
DEAD_LETTERS = Counter("onemanage_dead_letters", "Tasks and events set aside as dead letters")
LANE_HEALTHY = Gauge(
    "onemanage_lane_healthy", "1 while a lane pulls, 0 while it cannot", ["lane"],
    multiprocess_mode="liveall",
)  # fmt: skip
LANE_BEHIND = Gauge(
    "onemanage_lane_behind", "Messages the lane's durable still holds for its readers", ["lane"],
    multiprocess_mode="liveall",
)  # fmt: skip


def published(event_type: str, stored: bool) -> None:
    (EVENTS if stored else EVENTS_FAILED).labels(event_type).inc()
    if stored and event_type == "task.dead_lettered":
        DEAD_LETTERS.inc()


def lanes(healthy: dict[str, bool], behind: dict[str, int]) -> None:
    for lane, ok in healthy.items():
        LANE_HEALTHY.labels(lane).set(1 if ok else 0)
    for lane, count in behind.items():
        LANE_BEHIND.labels(lane).set(count)


class MetricsMiddleware(TaskiqMiddleware):
    """Counts each task run and times it (wall clock, started to finished)."""

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[str, float] = {}

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self._started[message.task_id] = time.perf_counter()
        TASKS.labels(message.task_name, "started").inc()
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        started = self._started.pop(message.task_id, None)
        if started is not None:
            DURATION.labels(message.task_name).observe(time.perf_counter() - started)
        TASKS.labels(message.task_name, "failed" if result.is_err else "succeeded").inc()


def serve(port: int, host: str) -> None:
    """Serve the sum of every process's figures (multiprocess mode) on ``host:port``."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    start_http_server(port, addr=host, registry=registry)
