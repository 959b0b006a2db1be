"""The operator's actions on what the console shows: replay, cancel, retry, resubmit.

Each checks what it can from the stored history first (so a wrong id or a
wrong state is refused with a code and nothing changes), does or queues the
action, and returns at once; following the outcome is the caller's (the
console watches events, the CLI's ``--wait`` follows them).

What the operator's rights allow it does itself: a retry or a resubmit is a
submission (engine.submit.start_workflow) of the stored input under a new
workflow id. What needs a worker's rights, it asks a worker for with a control
task: a cancel publishes the workflow's outcome, a replay sends a task on any
subject (engine.tasks.workflow, engine.tasks.control).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from engine import monitor, storage
from engine.broker import OneManageBroker
from engine.deadletters import stored_task
from engine.errors import OneManageError, PermissionDeniedError
from engine.events.schemas import (
    PsdWorkflowCompleted,
    PsdWorkflowEvent,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    parse_event,
)
from engine.roles import refusal
from engine.routing import CORRELATION_LABEL
from engine.streams import TASKS
from engine.submit import kick, start_workflow
from engine.tasks.names import CANCEL_TASK, PROCESS_TASK, REPLAY_TASK

_CANCEL = uuid.UUID("e0c3a9f4-2b17-4d85-8a6e-93f1b4c7d250")


class ActionRefused(OneManageError):
    """An action that cannot be done, and why; nothing was changed.

    ``code``: not_allowed, not_found, ambiguous, wrong_state, not_replayable, input_gone.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class ActionOutcome:
    action: str  # "replay" | "cancel" | "retry" | "resubmit"
    target: str  # the full id acted on (dead-lettered task id, or workflow id)
    new_id: str | None  # replay: the new task id; retry/resubmit: the new workflow id
    detail: str  # one line: what was done


@contextlib.contextmanager
def _allowed(broker: OneManageBroker, action: str) -> Iterator[None]:
    """Refuse ``action`` up front when the broker's role may not do it, and say the
    server's own refusal the same way (its rights are the last word)."""
    why = refusal(broker.role, action)
    if why is not None:
        raise ActionRefused("not_allowed", why)
    try:
        yield
    except PermissionDeniedError as exc:
        raise ActionRefused("not_allowed", f"{exc} (connected as {broker.role})") from exc


def _one(prefix: str, candidates: set[str], what: str) -> str:
    if not prefix:
        raise ActionRefused("not_found", f"an empty id names no {what}: give a few characters")
    if len(candidates) > 1:
        shown = ", ".join(sorted(candidates)[:5]) + (" ..." if len(candidates) > 5 else "")
        raise ActionRefused(
            "ambiguous", f"{prefix!r} is the start of {len(candidates)} {what}s ({shown}): "
            "give more of it",
        )  # fmt: skip
    if not candidates:
        raise ActionRefused("not_found", f"no stored {what} has an id starting with {prefix!r}")
    return next(iter(candidates))


# -- replay --------------------------------------------------------------------------


async def _dead_letter(broker: OneManageBroker, ident: str) -> tuple[int, TaskDeadLettered]:
    """The dead letter whose task id or event id is (or starts with) ``ident``, and its seq."""
    letters: dict[str, tuple[int, TaskDeadLettered]] = {}
    async for delivered in monitor.read_history(broker, 1, "events.task.dead_lettered"):
        event = parse_event(delivered.data, delivered.subject)
        if isinstance(event, TaskDeadLettered):
            letters[event.event_id] = (delivered.seq, event)
    exact = {i for i, (_, e) in letters.items() if ident in (i, e.task_id)}
    found = exact or {
        i for i, (_, e) in letters.items() if i.startswith(ident) or e.task_id.startswith(ident)
    }
    return letters[_one(ident, found, "dead letter")]


async def _replay_dead_letter(broker: OneManageBroker, ident: str) -> ActionOutcome:
    """Send a dead-lettered task's stored payload again, as a new task linked to the original.

    ``ident``: the task id, the TaskDeadLettered event id, or a unique prefix of
    either. A dead-lettered workflow (``psd.process``) is retried instead: its
    steps and outcome are named after its workflow id, so it runs under a new one.
    """
    seq, letter = await _dead_letter(broker, ident)
    try:
        message = stored_task(letter)
    except ValueError as exc:
        raise ActionRefused("not_replayable", f"dead letter {letter.task_id}: {exc}") from exc
    if letter.task_name == PROCESS_TASK and letter.stream == TASKS:
        workflow_id, input_key, filename, size_bytes = (message.args + [None] * 4)[:4]
        if not isinstance(input_key, str) or not isinstance(size_bytes, int):
            raise ActionRefused(
                "not_replayable", f"dead letter {letter.task_id}: its arguments name no input"
            )
        new = await _run_again(
            broker, str(workflow_id), input_key, str(filename), size_bytes, "replay"
        )
        return ActionOutcome(
            "replay",
            letter.task_id,
            new,
            f"workflow {letter.task_id[:8]} retried as workflow {new[:8]} (a workflow runs "
            "again under a new id: its steps and outcome are named after it)",
        )
    new_task_id = uuid.uuid4().hex
    correlation = letter.correlation_id or letter.task_id
    await kick(
        broker,
        REPLAY_TASK,
        {CORRELATION_LABEL: correlation},
        uuid.uuid4().hex,
        seq,
        letter.event_id,
        new_task_id,
    )
    return ActionOutcome(
        "replay",
        letter.task_id,
        new_task_id,
        f"{letter.task_name} {letter.task_id[:8]} replay queued as task {new_task_id[:8]}",
    )


# -- workflows -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Story:
    workflow_id: str
    submitted: PsdWorkflowSubmitted | None
    outcome: PsdWorkflowCompleted | PsdWorkflowFailed | None
    filename: str


async def _workflow(broker: OneManageBroker, prefix: str) -> _Story:
    """What the stored history says of the one workflow whose id starts with ``prefix``."""
    events: list[PsdWorkflowEvent] = []
    async for delivered in monitor.read_history(broker, 1, "events.psd.>"):
        event = parse_event(delivered.data, delivered.subject)
        if isinstance(event, PsdWorkflowEvent):
            events.append(event)
    ids = {e.workflow_id for e in events}
    found = {prefix} & ids or {i for i in ids if i.startswith(prefix)}
    workflow_id = _one(prefix, found, "workflow")
    mine = [e for e in events if e.workflow_id == workflow_id]
    return _Story(
        workflow_id,
        next((e for e in mine if isinstance(e, PsdWorkflowSubmitted)), None),
        next((e for e in mine if isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed)), None),
        mine[0].filename,
    )


def _ended(story: _Story) -> str:
    if isinstance(story.outcome, PsdWorkflowFailed):
        return f"failed ({story.outcome.error_code} at {story.outcome.step})"
    return "completed"


async def _run_again(
    broker: OneManageBroker,
    workflow_id: str,
    input_key: str,
    filename: str,
    size_bytes: int,
    action: str,
) -> str:
    """Start a new workflow on ``workflow_id``'s stored input; its new id."""
    if not await storage.input_stored(broker, input_key):
        raise ActionRefused(
            "input_gone",
            f"the input of workflow {workflow_id[:8]} ({filename}) is no longer stored "
            f"(inputs expire): submit the file again instead of a {action}",
        )
    submission = await start_workflow(
        broker, input_key, filename, size_bytes, resubmitted_from=workflow_id
    )
    return submission.workflow_id


async def _again(broker: OneManageBroker, story: _Story, action: str) -> ActionOutcome:
    submitted = story.submitted
    if submitted is None:
        raise ActionRefused(
            "not_found",
            f"workflow {story.workflow_id[:8]}'s submission is no longer in the history: "
            "its input is unknown, submit the file again",
        )
    new = await _run_again(
        broker,
        story.workflow_id,
        submitted.input_key,
        submitted.filename,
        submitted.size_bytes,
        action,
    )
    return ActionOutcome(
        action,
        story.workflow_id,
        new,
        f"workflow {story.workflow_id[:8]} ({submitted.filename}) {action} started as "
        f"workflow {new[:8]}",
    )


def cancel_task_id(workflow_id: str) -> str:
    """One cancel task per workflow: a second cancel within TASKS' duplicate window is one."""
    return uuid.uuid5(_CANCEL, workflow_id).hex


async def _cancel_workflow(
    broker: OneManageBroker, workflow_id: str, reason: str = ""
) -> ActionOutcome:
    """End a running, queued or stuck workflow with one PsdWorkflowFailed, code ``cancelled``.

    A worker does it (``psd.cancel``): it publishes the outcome and marks the
    workflow, so its orchestrator stops where it is, without a second outcome.
    """
    story = await _workflow(broker, workflow_id)
    if story.outcome is not None:
        raise ActionRefused(
            "wrong_state",
            f"workflow {story.workflow_id[:8]} ({story.filename}) has {_ended(story)} "
            "already: nothing to cancel",
        )
    await kick(
        broker,
        CANCEL_TASK,
        {CORRELATION_LABEL: story.workflow_id},
        cancel_task_id(story.workflow_id),
        story.workflow_id,
        reason,
    )
    return ActionOutcome(
        "cancel", story.workflow_id, None, f"workflow {story.workflow_id[:8]} cancel queued"
    )


async def _retry_workflow(broker: OneManageBroker, workflow_id: str) -> ActionOutcome:
    """A failed (or cancelled) workflow again: a new workflow from the same stored input."""
    story = await _workflow(broker, workflow_id)
    if not isinstance(story.outcome, PsdWorkflowFailed):
        state = "completed: resubmit it" if story.outcome else "not ended: cancel it first"
        raise ActionRefused(
            "wrong_state",
            f"workflow {story.workflow_id[:8]} ({story.filename}) did not fail, it is {state}",
        )
    return await _again(broker, story, "retry")


async def _resubmit_workflow(broker: OneManageBroker, workflow_id: str) -> ActionOutcome:
    """Any workflow's stored input again, as a new workflow linked to the old one."""
    return await _again(broker, await _workflow(broker, workflow_id), "resubmit")


# -- the API: each refused up front for a role that may not, else done or queued -------


async def replay_dead_letter(broker: OneManageBroker, ident: str) -> ActionOutcome:
    """Send a dead-lettered task's stored payload again as a new task linked to the original.

    ``ident``: its task id, its TaskDeadLettered event id, or a unique prefix of either.
    """
    with _allowed(broker, "replay"):
        return await _replay_dead_letter(broker, ident)


async def cancel_workflow(
    broker: OneManageBroker, workflow_id: str, reason: str = ""
) -> ActionOutcome:
    """End a running, queued or stuck workflow with one PsdWorkflowFailed, code cancelled."""
    with _allowed(broker, "cancel"):
        return await _cancel_workflow(broker, workflow_id, reason)


async def retry_workflow(broker: OneManageBroker, workflow_id: str) -> ActionOutcome:
    """A failed (or cancelled) workflow again, from its stored input, linked to the old one."""
    with _allowed(broker, "retry"):
        return await _retry_workflow(broker, workflow_id)


async def resubmit_workflow(broker: OneManageBroker, workflow_id: str) -> ActionOutcome:
    """Any workflow's stored input again, as a new workflow linked to the old one."""
    with _allowed(broker, "resubmit"):
        return await _resubmit_workflow(broker, workflow_id)
