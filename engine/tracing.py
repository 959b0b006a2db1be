"""One task's, workflow's or correlation's events, found by any unique prefix of its id.

The console shows ids cut to 8 characters; whatever shows an id must take
it back. A prefix names the one task id, workflow id or correlation id that
starts with it among the events read; two or more are refused with the
candidates, so a short id never picks one at random.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from engine.errors import OneManageError
from engine.events.schemas import (
    BaseEvent,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    TaskDeadLettered,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)


class IdNotFoundError(OneManageError):
    code = "id_not_found"


class AmbiguousIdError(OneManageError):
    code = "ambiguous_id"

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:10]) + (" ..." if len(candidates) > 10 else "")
        super().__init__(f"{prefix!r} is the start of {len(candidates)} ids: {shown}")
        self.candidates = candidates


_LINKS = ("task_id", "workflow_id", "correlation_id", "replay_of", "resubmitted_from")


def ids_of(event: BaseEvent) -> set[str]:
    """The ids an event can be traced by: its task, its workflow, its correlation, and the
    task or workflow it replays or runs again (so a trace of the original shows the link)."""
    found = {getattr(event, name, None) for name in _LINKS}
    return {value for value in found if isinstance(value, str) and value}


def resolve(prefix: str, events: Iterable[BaseEvent]) -> str:
    """The one id among ``events`` that starts with ``prefix``."""
    if not prefix:
        raise IdNotFoundError("an empty id matches everything: give at least a few characters")
    candidates = sorted({i for event in events for i in ids_of(event) if i.startswith(prefix)})
    if not candidates:
        raise IdNotFoundError(f"no task, workflow or correlation id starts with {prefix!r}")
    if len(candidates) > 1:
        raise AmbiguousIdError(prefix, candidates)
    return candidates[0]


def ended(full_id: str, event: BaseEvent) -> bool:
    """Whether ``event`` ends what ``full_id`` names (its workflow, or its task's last attempt)."""
    if isinstance(event, PsdWorkflowCompleted | PsdWorkflowFailed):
        return event.workflow_id == full_id
    if getattr(event, "task_id", None) != full_id:
        return False
    if isinstance(event, TaskFailed):
        return not event.will_retry
    return isinstance(event, TaskSucceeded | TaskDeadLettered)


@dataclass(frozen=True)
class Step:
    """One task run inside a trace: where its bar starts and ends."""

    task_id: str
    task_name: str
    started: datetime
    finished: datetime | None
    outcome: str


def steps(events: list[BaseEvent]) -> list[Step]:
    """Each task run of the trace, from its TaskStarted to its end (None: still running)."""
    runs: dict[str, Step] = {}
    for event in events:
        if isinstance(event, TaskStarted):
            runs[event.task_id] = Step(event.task_id, event.task_name, event.timestamp, None, "")
        elif isinstance(event, TaskSucceeded | TaskFailed) and event.task_id in runs:
            run = runs[event.task_id]
            outcome = "ok" if isinstance(event, TaskSucceeded) else "failed"
            runs[event.task_id] = Step(
                run.task_id, run.task_name, run.started, event.timestamp, outcome
            )
    return list(runs.values())


def bar(step: Step, start: datetime, end: datetime, width: int = 40) -> str:
    """The step's span on a ``width``-wide line from ``start`` to ``end``."""
    span = max((end - start).total_seconds(), 1e-6)
    first = int((step.started - start).total_seconds() / span * width)
    last = int(((step.finished or end) - start).total_seconds() / span * width)
    first = min(max(first, 0), width - 1)
    last = min(max(last, first + 1), width)
    return " " * first + "█" * (last - first) + " " * (width - last)
