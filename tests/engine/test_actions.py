"""The operator's actions (engine.actions) against a real server and real workers.

Each test acts on what it created (its own ids): the session server holds every
earlier test's history. "Exactly one" is counted in the stream (stored_events),
where the server's deduplication has had its say.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine import storage
from engine.actions import (
    ActionRefused,
    cancel_workflow,
    replay_dead_letter,
    resubmit_workflow,
    retry_workflow,
)
from engine.broker import OneManageBroker
from engine.events.publisher import publish_event
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskFailed,
    TaskReplayed,
    TaskStarted,
    TaskSucceeded,
)
from engine.roles import refusal
from engine.routing import CORRELATION_LABEL
from engine.services.samples import make_demo_psd
from engine.submit import kick, submit_psd
from engine.tasks.names import PROCESS_LABELS, PROCESS_TASK, announcement, submitted_event_id
from engine.tracing import ids_of
from tests.support.harness import EventCollector, WorkerProcess, onemanage, stored_events
from tests.support.psd_factory import with_layer_info_overrun
from tests.support.tasks import FlakyEvent, hold_until_unlocked, transient_until

pytestmark = pytest.mark.slow

DEMO = make_demo_psd()


def _outcome(workflow_id: str) -> Callable[[BaseEvent], bool]:
    return lambda e: (
        isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed) and e.workflow_id == workflow_id
    )


async def _outcomes(client: OneManageBroker, workflow_id: str) -> list[BaseEvent]:
    stored = await stored_events(client, "events.psd.workflow.*")
    return [e for e in stored if _outcome(workflow_id)(e)]


async def _refused(code: str, action: object) -> ActionRefused:
    with pytest.raises(ActionRefused) as caught:
        await action  # type: ignore[misc]
    assert caught.value.code == code, str(caught.value)
    assert str(caught.value).startswith(f"{code}: ")
    return caught.value


async def test_a_dead_letter_replayed_runs_as_a_new_task_linked_to_the_original(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "up"
    worker = start_workers(processes=1)
    await worker.ready(events)
    original = await transient_until.kiq(str(marker))
    await events.wait_for(
        lambda e: isinstance(e, TaskDeadLettered) and e.task_id == original.task_id, timeout=120
    )
    marker.touch()  # what it waited for is up now: the replay runs
    outcome = await replay_dead_letter(client, original.task_id[:10])
    assert (outcome.action, outcome.target) == ("replay", original.task_id)
    assert outcome.new_id and outcome.new_id != original.task_id
    (replayed,) = await events.wait_for(
        lambda e: isinstance(e, TaskReplayed) and e.replay_of == original.task_id
    )
    assert isinstance(replayed, TaskReplayed) and replayed.new_task_id == outcome.new_id
    (done,) = await events.wait_for(
        lambda e: isinstance(e, TaskSucceeded) and e.task_id == outcome.new_id
    )
    # One story: the new task carries the original's correlation, and the link names it.
    assert done.correlation_id == original.task_id
    assert original.task_id in ids_of(replayed)
    result = await client.result_backend.get_result(outcome.new_id)
    assert result.return_value == "ran"
    traced = await asyncio.to_thread(onemanage, "trace", original.task_id, "--json")
    assert traced.returncode == 0, traced.stderr
    story = json.loads(traced.stdout)["events"]
    assert any(e["event_type"] == "task.replayed" for e in story)
    assert any(e.get("task_id") == outcome.new_id for e in story)  # the new run, in its trace


async def test_an_events_dead_letter_is_not_replayable(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    flaky = FlakyEvent()
    await publish_event(client, flaky)
    (letter,) = await events.wait_for(
        lambda e: isinstance(e, TaskDeadLettered) and flaky.event_id in e.task_id, timeout=120
    )
    assert isinstance(letter, TaskDeadLettered)
    refused = await _refused("not_replayable", replay_dead_letter(client, letter.event_id))
    assert "still in EVENTS" in refused.message
    await _refused("not_found", replay_dead_letter(client, "no-such-dead-letter"))


async def test_a_stuck_workflow_cancelled_ends_with_one_cancelled_failure(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """Announced and never kicked, as the old submission could leave one."""
    key = await storage.put_input(client, DEMO)
    workflow_id = uuid.uuid4().hex
    announced = announcement(workflow_id, key, "stuck.psd", len(DEMO))
    await publish_event(client, announced)
    worker = start_workers(processes=1)
    await worker.ready(events)
    waited_ms = (datetime.now(UTC) - announced.timestamp).total_seconds() * 1000
    outcome = await cancel_workflow(client, workflow_id[:12], reason="test")
    assert (outcome.action, outcome.target, outcome.new_id) == ("cancel", workflow_id, None)
    (failed,) = await events.wait_for(_outcome(workflow_id))
    assert isinstance(failed, PsdWorkflowFailed)
    assert (failed.error_code, failed.step) == ("cancelled", "queued")
    assert failed.duration_ms >= waited_ms  # how long it was stuck, not "0 ms"
    assert "test" in failed.error_message
    assert len(await _outcomes(client, workflow_id)) == 1
    refused = await _refused("wrong_state", cancel_workflow(client, workflow_id))
    assert "failed (cancelled at queued)" in refused.message


async def test_a_running_workflow_cancelled_ends_failed_once_and_never_completes(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """One step slot, held by a blocker: the workflow's steps and the cancel queue behind it,
    the cancel before any later step, so the orchestrator meets the mark between steps."""
    lock_file = tmp_path / "slot.lock"
    lock_file.touch()
    with lock_file.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # while the test holds it, the blocker keeps the slot
        worker = start_workers(processes=1, env={"ONEMANAGE_CONCURRENCY": "1"})
        await worker.ready(events)
        await hold_until_unlocked.kiq(str(lock_file))
        await events.wait_for(
            lambda e: isinstance(e, TaskStarted) and e.task_name == "test.hold_until_unlocked"
        )
        workflow_id = (await submit_psd(client, DEMO, "running.psd")).workflow_id
        await events.wait_for(lambda e: isinstance(e, TaskStarted) and e.task_id == workflow_id)
        await cancel_workflow(client, workflow_id)
    (failed,) = await events.wait_for(_outcome(workflow_id), timeout=120)
    assert isinstance(failed, PsdWorkflowFailed) and failed.error_code == "cancelled"
    # The orchestrator stops at the mark: its task ends, and no second outcome follows.
    (ended,) = await events.wait_for(
        lambda e: (
            getattr(e, "task_id", None) == workflow_id
            and e.event_type in ("task.failed", "task.succeeded")
        ),
        timeout=120,
    )
    assert isinstance(ended, TaskFailed) and ended.error_type == "WorkflowCancelled"
    outcomes = await _outcomes(client, workflow_id)
    assert [type(e) for e in outcomes] == [PsdWorkflowFailed]


async def test_a_completed_workflow_cannot_be_cancelled_and_a_resubmit_completes_again(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    workflow_id = (await submit_psd(client, DEMO, "twice.psd")).workflow_id
    (done,) = await events.wait_for(_outcome(workflow_id), timeout=120)
    assert isinstance(done, PsdWorkflowCompleted)
    refused = await _refused("wrong_state", cancel_workflow(client, workflow_id))
    assert "completed" in refused.message
    await _refused("wrong_state", retry_workflow(client, workflow_id))
    again = await resubmit_workflow(client, workflow_id)
    assert again.action == "resubmit" and again.new_id and again.new_id != workflow_id
    # Seen twice on the wire (the submitter's and the orchestrator's), stored once.
    submitted = (
        await events.wait_for(
            lambda e: isinstance(e, PsdWorkflowSubmitted) and e.workflow_id == again.new_id
        )
    )[0]
    assert isinstance(submitted, PsdWorkflowSubmitted)
    assert submitted.resubmitted_from == workflow_id
    (second,) = await events.wait_for(_outcome(again.new_id), timeout=120)
    assert isinstance(second, PsdWorkflowCompleted)


async def test_a_failed_workflow_retried_is_a_new_linked_workflow(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    bad = with_layer_info_overrun(DEMO)
    workflow_id = (await submit_psd(client, bad, "bad.psd")).workflow_id
    (failed,) = await events.wait_for(_outcome(workflow_id), timeout=120)
    assert isinstance(failed, PsdWorkflowFailed)
    retried = await retry_workflow(client, workflow_id)
    assert retried.new_id and retried.target == workflow_id
    submitted = (
        await events.wait_for(
            lambda e: isinstance(e, PsdWorkflowSubmitted) and e.workflow_id == retried.new_id
        )
    )[0]
    assert isinstance(submitted, PsdWorkflowSubmitted)
    bad_key = storage.input_key(bad)
    assert (submitted.resubmitted_from, submitted.input_key) == (workflow_id, bad_key)
    (again,) = await events.wait_for(_outcome(retried.new_id), timeout=120)
    assert isinstance(again, PsdWorkflowFailed) and again.error_code == failed.error_code


async def test_a_retry_whose_input_is_gone_is_refused(client: OneManageBroker) -> None:
    workflow_id = uuid.uuid4().hex
    never_stored = storage.input_key(uuid.uuid4().bytes)
    await publish_event(client, announcement(workflow_id, never_stored, "gone.psd", 16))
    refused = await _refused("input_gone", resubmit_workflow(client, workflow_id))
    assert "gone.psd" in refused.message


async def test_a_kick_never_announced_is_announced_by_its_orchestrator(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """A submitter killed between its kick and its announcement leaves no stranded workflow."""
    key = await storage.put_input(client, DEMO)
    workflow_id = uuid.uuid4().hex
    labels = {**PROCESS_LABELS, CORRELATION_LABEL: workflow_id}
    await kick(client, PROCESS_TASK, labels, workflow_id, workflow_id, key, "quiet.psd", len(DEMO))
    worker = start_workers(processes=1)
    await worker.ready(events)
    (done,) = await events.wait_for(_outcome(workflow_id), timeout=120)
    assert isinstance(done, PsdWorkflowCompleted)
    stored = await stored_events(client, "events.psd.workflow.submitted")
    mine = [
        e for e in stored if isinstance(e, PsdWorkflowSubmitted) and e.workflow_id == workflow_id
    ]
    assert [e.event_id for e in mine] == [submitted_event_id(workflow_id)]


async def test_a_submission_is_announced_once_though_announced_twice(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    workflow_id = (await submit_psd(client, DEMO, "once.psd")).workflow_id
    await events.wait_for(_outcome(workflow_id), timeout=120)
    stored = await stored_events(client, "events.psd.workflow.submitted")
    mine = [e for e in stored if getattr(e, "workflow_id", None) == workflow_id]
    assert [e.event_id for e in mine] == [submitted_event_id(workflow_id)]


def test_the_viewer_may_only_download_and_copy() -> None:
    for action in ("replay", "cancel", "retry", "resubmit"):
        why = refusal("viewer", action)
        assert why and why.startswith("the viewer role may not ") and "operator" in why
        assert refusal("operator", action) is None
    assert refusal("viewer", "download") is None and refusal("viewer", "copy") is None
    assert "no action" in (refusal("operator", "explode") or "")


async def test_the_cli_acts_as_the_operator_and_says_how_by_its_exit_code(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """0 done, 1 the outcome failed (--wait), 2 refused: one line on stderr with the code."""
    worker = start_workers(processes=1)
    await worker.ready(events)
    for command in (("cancel", uuid.uuid4().hex), ("replay", uuid.uuid4().hex)):
        missing = await asyncio.to_thread(onemanage, *command)
        assert missing.returncode == 2, missing.stderr
        assert missing.stderr.count("\n") == 1 and "refused: not_found: " in missing.stderr

    key = await storage.put_input(client, DEMO)
    stuck = uuid.uuid4().hex
    await publish_event(client, announcement(stuck, key, "cli.psd", len(DEMO)))
    cancelled = await asyncio.to_thread(
        onemanage, "cancel", stuck[:12], "--reason", "cli", "--wait"
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert (
        f"workflow {stuck[:8]} cancel queued" in cancelled.stdout
        and "cancelled" in cancelled.stdout
    )

    retried = await asyncio.to_thread(onemanage, "retry", stuck, "--wait")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    new_id = retried.stdout.split()[0]
    assert new_id != stuck and "completed" in retried.stdout.lower()
    again = await asyncio.to_thread(onemanage, "retry", new_id)
    assert again.returncode == 2 and "refused: wrong_state: " in again.stderr

    bad = (await submit_psd(client, with_layer_info_overrun(DEMO), "bad.psd")).workflow_id
    await events.wait_for(_outcome(bad), timeout=120)
    failing = await asyncio.to_thread(onemanage, "resubmit", bad, "--wait")
    assert failing.returncode == 1, failing.stdout + failing.stderr


def test_a_workflow_announced_twice_folds_once_in_the_console() -> None:
    """The orchestrator's announcement stored past EVENTS' duplicate window changes nothing."""
    from console.state import ConsoleState

    state = ConsoleState()
    state.fold(announcement("wf-twice", "sha256-k", "a.psd", 5))
    state.fold(
        PsdStepCompleted(
            workflow_id="wf-twice", filename="a.psd", step="validate", duration_ms=1,
            correlation_id="wf-twice",
        )
    )  # fmt: skip
    state.fold(announcement("wf-twice", "sha256-k", "a.psd", 5))
    row = state.rows["wf-twice"]
    assert (row.state, row.steps) == ("running", [("validate", 1.0)])
    assert [e.event_type for e in state.trace("wf-twice")] == [
        "psd.workflow.submitted", "psd.step.completed",
    ]  # fmt: skip
