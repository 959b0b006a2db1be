"""The PSD workflow: validate, parse, preview, export, one step after the other.

``process_psd`` runs in the workflow lane (its own durable on TASKS), kicks
each step and waits for its result, passes what a step found to the next, stops
at the first failure, and publishes exactly one outcome: PsdWorkflowCompleted
with the manifest when every step succeeded, otherwise PsdWorkflowFailed naming
the step and the error code. Every event of the workflow carries the workflow
id as its correlation id.

A redelivered orchestrator (its worker died, or a transient failure) runs again
from the top. Each step's task id and PsdStepCompleted event id are derived from
the workflow id and the step, so within TASKS' and EVENTS' duplicate window its
kick of a step that was already kicked is dropped by the server, await_result
finds the stored result of the first run, and its announcement is stored once.
A step the server gave up on has an error result (dead_lettered), so the
workflow fails at once; an orchestrator it gave up on is ended, failed, by the
``workflow-dead-letters`` listener.

The orchestrator announces its workflow (PsdWorkflowSubmitted, the submitter's
event id) when its first delivery starts, so a submitter that died after its
kick still leaves an announced workflow. A cancel (``psd.cancel``, kicked by an operator) ends
the workflow with its one outcome, a failure of code ``cancelled``, and leaves a
mark the orchestrator looks at when it starts, between steps and before its
outcome: a cancelled orchestrator stops there and publishes nothing more.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from taskiq import AsyncTaskiqDecoratedTask

from engine import monitor, storage
from engine.app import broker, event_listener
from engine.errors import DeadLetteredError, OneManageError, is_transient
from engine.events.publisher import publish_event
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowEvent,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskStarted,
    parse_event,
)
from engine.identity import utc_now
from engine.results import await_result
from engine.streams import RESULTS_BUCKET
from engine.tasks.names import CANCEL_TASK, PROCESS_LABELS, PROCESS_TASK, announcement
from engine.tasks.psd import export_layers, parse_layers, preview, validate

STEPS = ("validate", "parse", "preview", "export")
_OUTCOME = uuid.UUID("6d1f3c55-1d0e-4a0b-8f36-54a1f2c0c7aa")
_STEP_TASK = uuid.UUID("0b8f6f3e-5a52-4f43-9c55-3c1c8d1e2b71")
_STEP_DONE = uuid.UUID("c4a7d2b0-93e1-4e8e-b0a5-7d7a2f6e9c13")


class WorkflowStepError(OneManageError):
    """A step failed; the workflow stopped there. Carries the step and the error code."""

    def __init__(self, step: str, code: str, message: str) -> None:
        super().__init__(step, code, message)
        self.step = step
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"step {self.step} failed: {self.code}: {self.message}"


def outcome_event_id(workflow_id: str) -> str:
    """The same id for the completed and the failed event: the stream stores one."""
    return uuid.uuid5(_OUTCOME, workflow_id).hex


def step_task_id(workflow_id: str, step: str) -> str:
    """The task id of ``step`` in ``workflow_id``: a rerun's kick is a duplicate TASKS drops."""
    return uuid.uuid5(_STEP_TASK, f"{workflow_id}:{step}").hex


def step_event_id(workflow_id: str, step: str) -> str:
    """The PsdStepCompleted id of ``step``: announced again by a rerun, stored once."""
    return uuid.uuid5(_STEP_DONE, f"{workflow_id}:{step}").hex


class WorkflowCancelled(OneManageError):
    """The workflow was cancelled: its orchestrator stops, the cancel published the outcome."""

    code = "cancelled"


def cancel_mark_key(workflow_id: str) -> str:
    """The results-bucket key that says ``workflow_id`` was cancelled (no task id looks so)."""
    return f"cancelled-{workflow_id}"


async def is_cancelled(workflow_id: str) -> bool:
    """Whether a cancel marked ``workflow_id``; a failed read raises (the delivery comes back)."""
    try:
        kv = await broker.key_value(RESULTS_BUCKET)
        await kv.get(cancel_mark_key(workflow_id))
    except (KeyNotFoundError, BucketNotFoundError):
        return False
    return True


async def stop_if_cancelled(workflow_id: str) -> None:
    if await is_cancelled(workflow_id):
        raise WorkflowCancelled(f"workflow {workflow_id} was cancelled")


def _summary(step: str, result: dict[str, Any]) -> dict[str, Any]:
    """What a watcher needs to follow a step live (the manifest has the rest)."""
    if step == "validate":
        keys = ("width", "height", "color_mode", "depth", "format", "layer_count")
        return {key: result[key] for key in keys}
    if step == "parse":
        return {"layers": result["layers"], "by_kind": result["by_kind"]}
    if step == "preview":
        return {"width": result["width"], "height": result["height"], "source": result["source"]}
    if step == "export":
        return {"layers": result["count"]}
    return {k: v for k, v in result.items() if isinstance(v, int | float | str | bool)}


class WorkflowRun:
    """The steps of one workflow run so far: results and timings."""

    def __init__(self, workflow_id: str, filename: str) -> None:
        self.workflow_id = workflow_id
        self.filename = filename
        self.started = time.perf_counter()
        self.timings_ms: dict[str, float] = {}
        self.current = "orchestrator"

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    async def step(
        self, name: str, task: AsyncTaskiqDecoratedTask[..., Any], *args: Any
    ) -> dict[str, Any]:
        """Kick one step, wait for it, announce it; WorkflowStepError when it failed."""
        self.current = name
        await stop_if_cancelled(self.workflow_id)
        started = time.perf_counter()
        kicked = await task.kicker().with_task_id(step_task_id(self.workflow_id, name)).kiq(*args)
        try:
            result = await await_result(broker, kicked.task_id, broker.settings.step_timeout)
        except TimeoutError as exc:
            raise WorkflowStepError(name, "step_timeout", str(exc)) from exc
        if result.is_err:
            error = result.error
            code = str(getattr(error, "code", "") or "error")
            message = str(getattr(error, "message", "") or f"{type(error).__name__}: {error}")
            raise WorkflowStepError(name, code, message)
        value: dict[str, Any] = result.return_value
        self.timings_ms[name] = round((time.perf_counter() - started) * 1000, 3)
        await publish_event(
            broker,
            PsdStepCompleted(
                event_id=step_event_id(self.workflow_id, name),
                workflow_id=self.workflow_id,
                filename=self.filename,
                step=name,
                duration_ms=self.timings_ms[name],
                summary=_summary(name, value),
            ),
        )
        return value


async def _publish_failure(run: WorkflowRun, step: str, code: str, message: str) -> None:
    await stop_if_cancelled(run.workflow_id)
    await publish_event(
        broker,
        PsdWorkflowFailed(
            event_id=outcome_event_id(run.workflow_id),
            workflow_id=run.workflow_id,
            filename=run.filename,
            step=step,
            error_code=code,
            error_message=message,
            duration_ms=run.elapsed_ms(),
            correlation_id=run.workflow_id,
        ),
    )


@broker.task(task_name=PROCESS_TASK, **PROCESS_LABELS)
async def process_psd(
    workflow_id: str,
    input_key: str,
    filename: str,
    size_bytes: int,
    resubmitted_from: str | None = None,
) -> dict[str, Any]:
    """Run the whole workflow; returns the manifest, raises WorkflowStepError on failure.

    Whatever goes wrong, the workflow ends with exactly one outcome event, except
    when the failure is transient and this delivery will be tried again, and when
    it was cancelled (WorkflowCancelled: the cancel published the outcome).
    """
    run = WorkflowRun(workflow_id, filename)
    try:
        await stop_if_cancelled(workflow_id)
        delivery = broker.delivery(workflow_id)
        if delivery is None or delivery.attempt == 1:
            # Not again on a redelivery: this workflow may have ended meanwhile, and an
            # announcement stored after its outcome would make readers think it open again.
            await publish_event(
                broker,
                announcement(workflow_id, input_key, filename, size_bytes, resubmitted_from),
            )
        return await _run(run, input_key, size_bytes)
    except WorkflowCancelled:
        raise
    except WorkflowStepError as failure:
        await _publish_failure(run, failure.step, failure.code, failure.message)
        raise
    except Exception as exc:
        delivery = broker.delivery(workflow_id)
        retried = (
            is_transient(exc)
            and delivery is not None
            and delivery.attempt < broker.settings.max_deliver
        )
        if not retried:
            await _publish_failure(
                run, run.current, "internal_error", f"{type(exc).__name__}: {exc}"
            )
        raise


async def _run(run: WorkflowRun, input_key: str, size_bytes: int) -> dict[str, Any]:
    workflow_id, filename = run.workflow_id, run.filename
    document = await run.step("validate", validate, workflow_id, input_key)
    layers = await run.step("parse", parse_layers, workflow_id, input_key, document)
    image = await run.step("preview", preview, workflow_id, input_key, document)
    exported = await run.step("export", export_layers, workflow_id, input_key)
    run.current = "manifest"
    manifest: dict[str, Any] = {
        "workflow_id": workflow_id,
        "filename": filename,
        "input_key": input_key,
        "size_bytes": size_bytes,
        "document": document,
        "layers": layers,
        "preview": image,
        "layer_images": exported["layers"],
        "timings_ms": {**run.timings_ms, "total": run.elapsed_ms()},
    }
    manifest["manifest_key"] = await storage.put_json(
        broker, workflow_id, "manifest.json", manifest
    )
    await stop_if_cancelled(workflow_id)
    await publish_event(
        broker,
        PsdWorkflowCompleted(
            event_id=outcome_event_id(workflow_id),
            workflow_id=workflow_id,
            filename=filename,
            duration_ms=manifest["timings_ms"]["total"],
            manifest=manifest,
            correlation_id=workflow_id,
        ),
    )
    return manifest


def _filename_of(payload: str) -> str:
    """The file name a dead-lettered ``psd.process`` was kicked with, if its payload says."""
    try:
        args = json.loads(payload).get("args") or []
    except Exception:  # truncated or not JSON: the payload is kept in the dead letter anyway
        return "?"
    return str(args[2]) if len(args) > 2 else "?"


@event_listener("workflow-dead-letters", "events.task.dead_lettered")
async def end_dead_lettered_workflows(event: BaseEvent) -> None:
    """A workflow the server gave up on (its workers kept dying under it) still ends, once.

    Its orchestrator cannot publish the outcome: it no longer runs. Same outcome
    id, so one the orchestrator did publish before it died is not doubled.
    """
    if not isinstance(event, TaskDeadLettered) or event.task_name != PROCESS_TASK:
        return
    workflow_id = event.task_id
    why = (
        f"the server gave up after {event.deliveries} deliveries"
        if event.reason == "max_deliveries"
        else f"refused by a worker ({event.reason}): {event.error}"
    )
    await publish_event(
        broker,
        PsdWorkflowFailed(
            event_id=outcome_event_id(workflow_id),
            workflow_id=workflow_id,
            filename=_filename_of(event.payload),
            step="orchestrator",
            error_code=DeadLetteredError.code,
            error_message=why,
            correlation_id=workflow_id,
        ),
    )


async def _story(workflow_id: str) -> list[PsdWorkflowEvent]:
    """The stored PSD events of ``workflow_id``, oldest first."""
    found: list[PsdWorkflowEvent] = []
    async for delivered in monitor.read_history(broker, 1, "events.psd.>"):
        event = parse_event(delivered.data, delivered.subject)
        if isinstance(event, PsdWorkflowEvent) and event.workflow_id == workflow_id:
            found.append(event)
    return found


async def _where(workflow_id: str, story: list[PsdWorkflowEvent]) -> str:
    """The step a workflow is at: the one after its last completed step, or "queued"."""
    done = [event.step for event in story if isinstance(event, PsdStepCompleted)]
    if done:
        after = STEPS.index(done[-1]) + 1 if done[-1] in STEPS else len(STEPS)
        return STEPS[after] if after < len(STEPS) else "manifest"
    submitted = next((e for e in story if isinstance(e, PsdWorkflowSubmitted)), None)
    # Announced after its kick: its orchestrator may have started a moment before.
    since = submitted.timestamp - timedelta(minutes=1) if submitted is not None else 1
    async for delivered in monitor.read_history(broker, since, "events.task.started"):
        event = parse_event(delivered.data, delivered.subject)
        if isinstance(event, TaskStarted) and event.task_id == workflow_id:
            return STEPS[0]
    return "queued"


@broker.task(task_name=CANCEL_TASK)
async def cancel_psd(workflow_id: str, reason: str = "") -> dict[str, Any]:
    """End ``workflow_id`` with one PsdWorkflowFailed of code ``cancelled``; a mark stops its
    orchestrator. A workflow that has its outcome already is left as it is."""
    story = await _story(workflow_id)
    ended = next(
        (e for e in story if isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed)), None
    )
    if ended is not None:
        return {"cancelled": False, "outcome": ended.event_type}
    why = f"cancelled by an operator: {reason}" if reason else "cancelled by an operator"
    # The mark first: an orchestrator that looks after this point stops without an outcome.
    await broker.publish(
        f"$KV.{RESULTS_BUCKET}.{cancel_mark_key(workflow_id)}",
        why.encode(),
        msg_id=f"cancel:{workflow_id}",
    )
    step = await _where(workflow_id, story)
    filename = story[0].filename if story else "?"
    # How long it lived, from its first event: "0 ms" would read as a workflow that never was.
    lived_ms = (utc_now() - story[0].timestamp).total_seconds() * 1000 if story else 0.0
    ack = await publish_event(
        broker,
        PsdWorkflowFailed(
            event_id=outcome_event_id(workflow_id),
            workflow_id=workflow_id,
            filename=filename,
            step=step,
            error_code=WorkflowCancelled.code,
            error_message=why,
            duration_ms=round(lived_ms, 3),
            correlation_id=workflow_id,
        ),
    )
    # A duplicate: an outcome the orchestrator published just before the mark stands.
    return {"cancelled": not ack.duplicate, "step": step}
