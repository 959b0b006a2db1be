"""The PSD workflow end to end, against real worker processes."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable

import pytest
from PIL import Image

from engine import storage
from engine.broker import OneManageBroker
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    TaskEvent,
    TaskSucceeded,
)
from engine.services.samples import make_demo_psd
from engine.streams import TASKS
from engine.submit import submit_psd
from tests.support.harness import (
    EventCollector,
    WorkerProcess,
    deliveries,
    settled,
    started_again,
    stored_events,
)
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

STEP_TASKS = ["psd.validate", "psd.parse", "psd.preview", "psd.export_layers"]


def _outcome(workflow_id: str) -> Callable[[BaseEvent], bool]:
    return lambda e: (
        isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed) and e.workflow_id == workflow_id
    )


async def _lanes_settled(client: OneManageBroker) -> tuple[int, int]:
    """Once both TASKS lanes have nothing left to (re)deliver: orchestrator and step deliveries."""
    s = client.settings
    workflows = await settled(client, TASKS, s.workflows_durable)
    steps = await settled(client, TASKS, s.tasks_durable)
    return deliveries(workflows), deliveries(steps)


async def test_a_generated_psd_completes_with_a_manifest_whose_artefacts_open(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    workflows_before, steps_before = await _lanes_settled(client)
    data = make_demo_psd()
    submission = await submit_psd(client, data, "demo.psd")
    workflow_id = submission.workflow_id

    (outcome,) = await events.wait_for(_outcome(workflow_id), timeout=120)
    assert isinstance(outcome, PsdWorkflowCompleted), outcome
    manifest = outcome.manifest
    document = manifest["document"]
    assert manifest["workflow_id"] == workflow_id
    assert manifest["input_key"] == submission.input_key
    assert set(manifest["timings_ms"]) == {"validate", "parse", "preview", "export", "total"}

    preview = Image.open(io.BytesIO(await storage.get_artefact(client, manifest["preview"]["key"])))
    assert preview.size == (document["width"], document["height"])
    thumbnail = Image.open(
        io.BytesIO(await storage.get_artefact(client, manifest["preview"]["thumbnail_key"]))
    )
    assert max(thumbnail.size) <= 256
    assert manifest["layer_images"], "the demo has visible pixel layers"
    for image in manifest["layer_images"]:
        png = Image.open(io.BytesIO(await storage.get_artefact(client, image["key"])))
        assert png.size == (image["width"], image["height"])

    # The orchestrator and each step ran once, and nothing is left to run them again...
    workflows_after, steps_after = await _lanes_settled(client)
    delta = (workflows_after - workflows_before, steps_after - steps_before)
    assert delta == (1, len(STEP_TASKS)), await started_again(client, worker.started_at)
    tasks = Counter(["psd.process", *STEP_TASKS])
    story: list[BaseEvent] = []

    async def whole_story() -> list[BaseEvent]:
        """...so the story is whole once each task's success (from the outbox) is stored."""
        stored = await stored_events(client, "events.>", since=worker.started_at)
        story[:] = [e for e in stored if e.correlation_id == workflow_id]
        done = Counter(e.task_name for e in story if isinstance(e, TaskSucceeded))
        return story if done.keys() == tasks.keys() else []

    await eventually(whole_story, 60, lambda: f"stored: {[e.event_type for e in story]}")
    steps = [e.step for e in story if isinstance(e, PsdStepCompleted)]
    assert steps == ["validate", "parse", "preview", "export"]
    done = Counter(e.task_name for e in story if isinstance(e, TaskSucceeded))
    assert done == tasks  # once each
    # In time order (each event is stamped when made, and everything runs on this host), the
    # outcome is the workflow's last event: after it only its orchestrator's own success.
    story.sort(key=lambda e: e.timestamp)
    end = next(n for n, e in enumerate(story) if e.event_id == outcome.event_id)
    assert all(isinstance(e, TaskEvent) for e in story[end + 1 :]), story[end + 1 :]
    after = [(e.event_type, getattr(e, "task_id", None)) for e in story[end + 1 :]]
    assert after == [("task.succeeded", workflow_id)]  # psd.process's task id is the workflow's


async def test_a_broken_file_fails_once_naming_step_and_code(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    workflows_before, steps_before = await _lanes_settled(client)
    broken = make_demo_psd()[:200]  # a real header, then nothing: passes the local check
    submission = await submit_psd(client, broken, "broken.psd")

    (outcome,) = await events.wait_for(_outcome(submission.workflow_id), timeout=60)
    assert isinstance(outcome, PsdWorkflowFailed), outcome
    assert outcome.step == "validate"
    assert outcome.error_code == "truncated"
    assert outcome.error_message
    # No retry: the orchestrator and its one step were delivered once each, and nothing
    # is left that could run them again.
    workflows_after, steps_after = await _lanes_settled(client)
    delta = (workflows_after - workflows_before, steps_after - steps_before)
    assert delta == (1, 1), await started_again(client, worker.started_at)
    stored = await stored_events(client, "events.psd.>", since=worker.started_at)
    assert len([e for e in stored if _outcome(submission.workflow_id)(e)]) == 1
    steps = [
        e for e in stored
        if isinstance(e, PsdStepCompleted) and e.workflow_id == submission.workflow_id
    ]  # fmt: skip
    assert steps == []


async def test_twenty_workflows_over_two_processes_complete_once_each(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=2)
    await worker.ready(events)
    files = [make_demo_psd(seed=n) for n in range(20)]
    submissions = [await submit_psd(client, data, f"demo-{n}.psd") for n, data in enumerate(files)]
    ids = {s.workflow_id for s in submissions}

    def completed(e: BaseEvent) -> bool:
        return isinstance(e, PsdWorkflowCompleted) and e.workflow_id in ids

    await events.wait_for(completed, 20, timeout=300)
    # Nothing left that could run an orchestrator again, so the stored outcomes are final.
    # (A transient failure is retried by design, and an outcome's id is its workflow's, so
    # the claim is one outcome each, not one delivery each.)
    await _lanes_settled(client)
    stored = await stored_events(client, "events.psd.>", since=worker.started_at)
    done = Counter(getattr(e, "workflow_id", None) for e in stored if completed(e))
    assert set(done) == ids
    assert set(done.values()) == {1}
    failed = [e for e in stored if isinstance(e, PsdWorkflowFailed) and e.workflow_id in ids]
    assert failed == []


async def test_one_slot_each_still_completes_no_deadlock(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(
        processes=1, env={"ONEMANAGE_CONCURRENCY": "1", "ONEMANAGE_WORKFLOW_CONCURRENCY": "1"}
    )
    await worker.ready(events)
    submissions = [
        await submit_psd(client, make_demo_psd(seed=n), f"tight-{n}.psd") for n in range(3)
    ]
    for submission in submissions:
        (outcome,) = await events.wait_for(_outcome(submission.workflow_id), timeout=120)
        assert isinstance(outcome, PsdWorkflowCompleted), outcome
