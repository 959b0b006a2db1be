"""A 3-node R3 cluster loses no accepted task when the node leading a stream or bucket dies.

Each fault run kicks no-op tasks while the node that leads TASKS, EVENTS or
the results bucket is SIGKILLed and restarted on the same store. A kick that
returned means the task was stored (R3: on a quorum); it must end with a
stored result, and no kick may be refused while a new leader is elected
(publish retries "not stored yet" for publish_deadline, 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from taskiq import AsyncTaskiqTask
from taskiq.kicker import AsyncKicker

from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.events.schemas import TaskEvent, TaskQueued, TaskStarted
from engine.monitor import EventReader
from engine.results import await_result
from engine.settings import Settings
from engine.streams import (
    ALERTS_BUCKET,
    ARTEFACTS,
    EVENTS,
    INPUTS,
    MARKS_BUCKET,
    RESULTS_BUCKET,
    STATS_BUCKET,
    TASKS,
    ensure_streams,
)
from tests.support.cluster import Cluster, RetriedPublishes, stream_current, stream_leader
from tests.support.harness import EventCollector, WorkerProcess, stored_events
from tests.support.load import KickLoad
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

REPLICAS = 3
ALL_STREAMS = (
    TASKS,
    EVENTS,
    f"KV_{RESULTS_BUCKET}",
    f"KV_{STATS_BUCKET}",
    f"KV_{MARKS_BUCKET}",
    f"KV_{ALERTS_BUCKET}",
    INPUTS,
    ARTEFACTS,
)
TASK_COUNT = 400
KILL_AFTER = 100  # kicks returned before the node dies: the rest go through the fault
KICKERS = 8  # kicks in flight at once
SLOW_KICK = 1.0  # seconds; a kick slower than this rode out the election
RUN_BOUND = 60.0  # seconds for one whole fault run
LIFECYCLE = {"task.queued", "task.started", "task.succeeded"}


@pytest.fixture
def retried_kicks() -> Iterator[RetriedPublishes]:
    with RetriedPublishes("tasks.") as handler:
        yield handler


@pytest.fixture(scope="module")
async def cluster_broker(cluster: Cluster) -> AsyncIterator[OneManageBroker]:
    """This test's client on the cluster (all three URLs, R3), streams and buckets ensured."""
    broker = create_broker(Settings(nats_url=cluster.urls, replicas=REPLICAS))
    await broker.startup()
    await broker.ensure_streams()
    yield broker
    await broker.shutdown()


@pytest.fixture(scope="module")
async def cluster_worker(
    cluster: Cluster, cluster_broker: OneManageBroker, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WorkerProcess]:
    """One worker (2 processes) for every fault run: it must ride out each of them."""
    env = {"ONEMANAGE_NATS_URL": ",".join(cluster.urls), "ONEMANAGE_REPLICAS": str(REPLICAS)}
    worker = WorkerProcess(tmp_path_factory.mktemp("cluster-worker"), processes=2, env=env)
    try:
        async with EventCollector(cluster_broker) as events:
            await worker.ready(events, timeout=60)
        yield worker
    finally:
        worker.stop()


async def test_every_stream_and_bucket_is_r3(cluster_broker: OneManageBroker) -> None:
    for name in ALL_STREAMS:
        info = await cluster_broker.js.stream_info(name)
        assert info.config.num_replicas == REPLICAS, (name, info.config.num_replicas)
        assert info.cluster is not None and info.cluster.leader, name
        peers = info.cluster.replicas or []
        assert len(peers) == REPLICAS - 1, (name, peers)


async def test_a_replica_count_unlike_the_settings_is_drift_to_update(
    cluster_broker: OneManageBroker,
) -> None:
    """Landed main: the KV buckets stayed R1 on an R3 cluster, a single point of loss."""
    js = cluster_broker.js
    try:
        await ensure_streams(js, Settings(nats_url=cluster_broker.settings.nats_url, replicas=1))
        for name in ALL_STREAMS:
            assert (await js.stream_info(name)).config.num_replicas == 1, name
    finally:  # what every process started with ONEMANAGE_REPLICAS=3 does at start-up
        await ensure_streams(js, cluster_broker.settings)
    for name in ALL_STREAMS:
        assert (await js.stream_info(name)).config.num_replicas == REPLICAS, name
        await eventually(functools.partial(stream_current, js, name), 60, f"{name} not current")


@dataclass
class Figures:
    """What one fault run measured."""

    target: str
    killed: str
    also_led: list[str] = field(default_factory=list)  # other streams the killed node led
    tasks: int = 0
    refused: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    retried: int = 0
    new_leader_s: float = 0.0  # kill -> the target stream has a leader again
    kicks_resume_s: float = 0.0  # kill -> first kick started after it is stored
    healthy_s: float = 0.0  # restart -> the restarted node is healthy (caught up)
    results_s: float = 0.0  # kill -> every result read
    untold: list[str] = field(default_factory=list)  # tasks without all three lifecycle events
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    run_s: float = 0.0

    def report(self) -> str:
        slow = sum(1 for latency in self.latencies if latency > SLOW_KICK)
        return (
            f"FIGURES cluster kill {self.target} leader {self.killed} (also leading "
            f"{', '.join(self.also_led) or 'nothing else'}): tasks {self.tasks}, "
            f"refused {len(self.refused)}, kicks retried {self.retried}, slow (>{SLOW_KICK:g}s) "
            f"{slow}, max kick {max(self.latencies, default=0):.2f}s, new leader after "
            f"{self.new_leader_s:.2f}s, kicks resumed after {self.kicks_resume_s:.2f}s, node "
            f"healthy {self.healthy_s:.2f}s after restart, all results {self.results_s:.2f}s "
            f"after the kill, lost {len(self.lost)}, wrong {len(self.wrong)}, without lifecycle "
            f"events {len(self.untold)}, run {self.run_s:.1f}s"
        )


async def _fault_run(
    broker: OneManageBroker, cluster: Cluster, worker: WorkerProcess, target: str
) -> Figures:
    """Kick TASK_COUNT tasks; after KILL_AFTER, SIGKILL the node leading ``target``, restart it."""
    js = broker.js
    await asyncio.to_thread(cluster.wait_ready)
    for name in ALL_STREAMS:  # the previous run's node has caught up everywhere
        await eventually(functools.partial(stream_current, js, name), 60, f"{name} not current")
    killed = await stream_leader(js, target)
    assert killed is not None
    node = cluster.node(killed)
    figures = Figures(target=target, killed=killed, tasks=TASK_COUNT)
    for name in ALL_STREAMS:
        if name != target and await stream_leader(js, name) == killed:
            figures.also_led.append(name)
    kicker: AsyncKicker[Any, Any] = AsyncKicker("test.add", broker, {})
    began, since = time.monotonic(), datetime.now(UTC)
    load = KickLoad(lambda n: kicker.kiq(n, 1), TASK_COUNT, KICKERS, KILL_AFTER)

    async def fault() -> tuple[float, float]:
        await load.accepted.wait()
        await asyncio.to_thread(cluster.kill, node)
        killed_at = time.monotonic()

        async def new_leader() -> str | None:
            try:
                leader = await stream_leader(js, target)
            except Exception:  # no answer during the election: ask again
                return None
            return leader if leader and leader != killed else None

        await eventually(new_leader, 30, f"{target} has no new leader", interval=0.05)
        figures.new_leader_s = time.monotonic() - killed_at
        await asyncio.to_thread(cluster.restart, node)
        restarted_at = time.monotonic()
        await asyncio.to_thread(cluster.wait_ready, 30)
        await eventually(lambda: stream_current(js, target), 30, f"{target} not caught up")
        figures.healthy_s = time.monotonic() - restarted_at
        return killed_at, restarted_at

    kicking = asyncio.create_task(load.run())
    killed_at, _ = await fault()
    await kicking
    figures.refused, figures.latencies = load.refused, load.latencies
    figures.kicks_resume_s = load.resumed_after(killed_at)

    async def outcome(n: int, task: AsyncTaskiqTask[Any]) -> None:
        try:
            result = await await_result(broker, task.task_id, timeout=45)
        except TimeoutError:
            figures.lost.append(task.task_id)
            return
        if result.is_err or result.return_value != n + 1:
            figures.wrong.append(f"{task.task_id}: {result.error!r} {result.return_value!r}")

    await asyncio.gather(*(outcome(n, task) for n, task in load.kicked.items()))
    figures.results_s = time.monotonic() - killed_at
    figures.untold = await _untold(broker, {task.task_id for task in load.kicked.values()}, since)
    figures.run_s = time.monotonic() - began
    return figures


async def _untold(broker: OneManageBroker, ids: set[str], since: datetime) -> list[str]:
    """The tasks whose queued, started or succeeded event EVENTS does not hold (after 30 s)."""
    told: dict[str, set[str]] = {}

    async def untold() -> list[str]:
        for event in await stored_events(broker, "events.task.>", since):
            if isinstance(event, TaskEvent) and event.task_id in ids:
                told.setdefault(event.task_id, set()).add(event.event_type)
        return sorted(i for i in ids if not told.get(i, set()) >= LIFECYCLE)

    async def all_told() -> bool:
        return not await untold()

    with contextlib.suppress(AssertionError):  # the figure says how many, the test asserts
        await eventually(all_told, 30, "tasks without their lifecycle events")
    return await untold()


@pytest.mark.parametrize(
    "target", [TASKS, EVENTS, f"KV_{RESULTS_BUCKET}"], ids=["tasks", "events", "results"]
)
async def test_killing_a_leader_loses_no_accepted_task(
    target: str,
    cluster: Cluster,
    cluster_broker: OneManageBroker,
    cluster_worker: WorkerProcess,
    retried_kicks: RetriedPublishes,
) -> None:
    figures = await asyncio.wait_for(
        _fault_run(cluster_broker, cluster, cluster_worker, target), RUN_BOUND
    )
    figures.retried = len(retried_kicks.msg_ids)
    print(figures.report())
    assert figures.refused == [], figures.refused[:5]
    assert figures.lost == [], f"{len(figures.lost)} lost, e.g. {figures.lost[:5]}"
    assert figures.wrong == [], figures.wrong[:5]
    assert figures.untold == [], f"{len(figures.untold)} without lifecycle events"
    assert len(figures.latencies) == TASK_COUNT
    assert cluster_worker.process.poll() is None, cluster_worker.log()
    assert figures.run_s < RUN_BOUND


async def _stored(broker: OneManageBroker, event: TaskEvent) -> int:
    ack = await broker.publish(event.subject, event.model_dump_json().encode(), event.event_id)
    return int(ack.seq)


async def _read(broker: OneManageBroker, start: int, subject: str = "events.>") -> list[int]:
    """The sequences a history read from ``start`` returns: gapless when unfiltered."""
    seqs = [d.seq async for d in EventReader(broker, start, subject).history()]
    assert seqs == sorted(set(seqs)), seqs
    assert subject != "events.>" or seqs == list(range(start, start + len(seqs))), seqs
    return seqs


async def test_a_history_read_on_any_node_ends_at_the_last_event_stored(
    cluster: Cluster, cluster_broker: OneManageBroker
) -> None:
    """The follower-lag case: any replica answers a direct get, the one on the client's server
    first, and a follower may not have the event the leader just acknowledged. A history read
    right after a publish still reaches it, filtered (nothing more matches) or not. (A worker
    of this module may publish heartbeats meanwhile: they come after.)"""
    await asyncio.to_thread(cluster.wait_ready)
    await eventually(functools.partial(stream_current, cluster_broker.js, EVENTS), 60)
    for node in cluster.nodes:  # connected to the leader's server and to each follower's
        broker = create_broker(Settings(nats_url=[node.url], replicas=REPLICAS))
        await broker.startup()
        try:
            for n in range(20):
                common = {"task_id": f"lag-{node.name}-{n}", "task_name": "lag"}
                queued = await _stored(broker, TaskQueued(**common))
                assert (await _read(broker, queued))[:1] == [queued], node.name
                started = await _stored(broker, TaskStarted(**common, worker_id="w:1"))
                assert await _read(broker, queued, "events.task.queued") == [queued], node.name
                assert (await _read(broker, started))[:1] == [started], node.name
        finally:
            await broker.shutdown()
