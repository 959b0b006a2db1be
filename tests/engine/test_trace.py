"""`onemanage trace` and id prefixes: a real workflow's events in order, with the right gaps."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from engine import tracing
from engine.broker import OneManageBroker
from engine.events.publisher import publish_event
from engine.events.schemas import BaseEvent, PsdWorkflowCompleted, TaskQueued
from engine.services.samples import make_demo_psd
from engine.submit import submit_psd
from tests.support.harness import EventCollector, WorkerProcess, onemanage


def test_a_prefix_names_one_id_or_is_refused_with_the_candidates() -> None:
    events = [
        TaskQueued(task_id="abc123", task_name="x"),
        TaskQueued(task_id="abd999", task_name="x", correlation_id="zzz"),
    ]
    assert tracing.resolve("abc", events) == "abc123"
    assert tracing.resolve("zz", events) == "zzz"
    with pytest.raises(tracing.AmbiguousIdError) as ambiguous:
        tracing.resolve("ab", events)
    assert ambiguous.value.candidates == ["abc123", "abd999"]
    with pytest.raises(tracing.IdNotFoundError):
        tracing.resolve("q", events)
    with pytest.raises(tracing.IdNotFoundError):
        tracing.resolve("", events)


@pytest.mark.slow
async def test_trace_of_a_real_workflow_by_its_short_id(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    workflow_id = (await submit_psd(client, make_demo_psd(), "demo.psd")).workflow_id

    def done(event: BaseEvent) -> bool:
        return isinstance(event, PsdWorkflowCompleted) and event.workflow_id == workflow_id

    await events.wait_for(done, timeout=120)
    short = workflow_id[:8]  # what the console shows
    traced = await asyncio.to_thread(onemanage, "trace", short, "--json")
    assert traced.returncode == 0, traced.stderr
    report = json.loads(traced.stdout)
    assert report["id"] == workflow_id
    lines = report["events"]
    types = [line["event_type"] for line in lines]
    # Kicked, then announced (engine.submit.start_workflow): a kick's "queued" comes first,
    # the announcement before any step (a fast worker's "started" may come between).
    assert types[0] == "task.queued"
    assert types.count("psd.workflow.submitted") == types.count("psd.workflow.completed") == 1
    assert types.index("psd.workflow.submitted") < types.index("psd.step.completed")
    assert types.index("psd.step.completed") < types.index("psd.workflow.completed")
    times = [datetime.fromisoformat(line["timestamp"]) for line in lines]
    assert times == sorted(times) and lines[0]["offset_ms"] == 0  # in time order
    for line, before, at in zip(lines[1:], times, times[1:], strict=False):
        assert line["gap_ms"] == pytest.approx((at - before).total_seconds() * 1000, abs=0.01)
    assert {s["task_name"] for s in report["steps"] if s["outcome"] == "ok"} >= {
        "psd.validate", "psd.parse", "psd.preview", "psd.export_layers"
    }  # fmt: skip

    text = await asyncio.to_thread(onemanage, "trace", short)
    assert f"trace of {workflow_id}" in text.stdout and "█" in text.stdout

    fetched = await asyncio.to_thread(onemanage, "artefacts", short, "--out", str(tmp_path / "a"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "a" / "preview.png").stat().st_size > 0


async def test_an_ambiguous_prefix_is_refused_with_the_candidates(client: OneManageBroker) -> None:
    stem = uuid.uuid4().hex[:10]
    ids = [f"{stem}a{uuid.uuid4().hex[:6]}", f"{stem}b{uuid.uuid4().hex[:6]}"]
    for task_id in ids:
        await publish_event(client, TaskQueued(task_id=task_id, task_name="test.trace-probe"))
    refused = await asyncio.to_thread(onemanage, "trace", stem)
    assert refused.returncode == 2
    assert all(task_id in refused.stderr for task_id in ids), refused.stderr
    one = await asyncio.to_thread(onemanage, "trace", ids[1][:12], "--json")
    assert one.returncode == 0, one.stderr
    assert [line["task_id"] for line in json.loads(one.stdout)["events"]] == [ids[1]]
    missing = await asyncio.to_thread(onemanage, "trace", uuid.uuid4().hex)
    assert missing.returncode == 1 and "no task, workflow or correlation id" in missing.stderr
