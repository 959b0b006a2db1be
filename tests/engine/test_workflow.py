"""The PSD workflow end to end, against real worker processes."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Callable

from PIL import Image

from engine import storage
from engine.broker import OneManageBroker
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    TaskEvent,
)
from engine.services.samples import make_demo_psd
from engine.submit import submit_psd
from tests.support.harness import EventCollector, WorkerProcess, stored_events


def _outcome(workflow_id: str) -> Callable[[BaseEvent], bool]:
    return lambda e: (
        isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed) and e.workflow_id == workflow_id
    )


async def test_a_generated_psd_completes_with_a_manifest_whose_artefacts_open(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    data = make_demo_psd()
    submission = await submit_psd(client, data, "demo.psd")

    (outcome,) = await events.wait_for(_outcome(submission.workflow_id), timeout=120)
    assert isinstance(outcome, PsdWorkflowCompleted), outcome
    manifest = outcome.manifest
    document = manifest["document"]
    assert manifest["workflow_id"] == submission.workflow_id
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

    story = [e for e in events.events if e.correlation_id == submission.workflow_id]
    steps = [e.step for e in story if isinstance(e, PsdStepCompleted)]
    assert steps == ["validate", "parse", "preview", "export"]
    step_tasks = {e.task_name for e in story if isinstance(e, TaskEvent)}
    assert {"psd.process", "psd.validate", "psd.parse", "psd.preview"} <= step_tasks
    assert story[-1] is outcome or isinstance(story[-1], TaskEvent)  # the outcome ends it


async def test_a_broken_file_fails_once_naming_step_and_code(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    broken = make_demo_psd()[:200]  # a real header, then nothing: passes the local check
    submission = await submit_psd(client, broken, "broken.psd")

    (outcome,) = await events.wait_for(_outcome(submission.workflow_id), timeout=60)
    assert isinstance(outcome, PsdWorkflowFailed), outcome
    assert outcome.step == "validate"
    assert outcome.error_code == "truncated"
    assert outcome.error_message
    await asyncio.sleep(client.settings.ack_wait + 1)  # no second outcome, no retry
    stored = await stored_events(client, "events.psd.>")
    assert len([e for e in stored if _outcome(submission.workflow_id)(e)]) == 1
    steps = [
        e for e in events.events
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
    await asyncio.sleep(client.settings.ack_wait + 1)
    stored = await stored_events(client, "events.psd.>")
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
