"""The operator's actions on a row: which apply, what the question says, how progress reads.

The engine does the work (engine.actions, engine.downloads) and says only that
an action was accepted; what happens next the console learns from the events it
already folds. So each action under way is an ``Activity`` that ``follow`` moves
on from the ConsoleState at every tick: queued, running, then its outcome.
No Textual here: the app asks, runs and notifies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from console.state import ConsoleState, Row
from engine import actions as engine_actions
from engine.broker import OneManageBroker

KEPT = 50  # activities remembered for the detail screens, newest last


@dataclass(frozen=True)
class Spec:
    """One action as the keyboard, the palette and the question show it."""

    name: str  # the engine's name for it (engine.roles.refusal)
    label: str  # the footer's and the palette's
    applies: Callable[[Row], bool]
    question: Callable[[Row], str]  # what will happen, to what id
    acts: bool = True  # False: nothing changes anywhere, so nothing to confirm


def _workflow(row: Row) -> bool:
    return row.kind == "workflow"


SPECS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec(
            "replay",
            "Replay",
            lambda row: row.kind == "task" and row.state == "dead_lettered",
            lambda row: (
                f"Replay dead-lettered task {row.name}\n  {row.key}\n"
                "Its stored payload is sent again as a new task, linked to this one."
            ),
        ),
        Spec(
            "retry",
            "Retry",
            lambda row: _workflow(row) and row.state == "failed",
            lambda row: (
                f"Retry failed workflow {row.name}\n  {row.key}\n"
                "Its stored input starts a new workflow, linked to this one."
            ),
        ),
        Spec(
            "cancel",
            "Cancel",
            lambda row: _workflow(row) and not row.done,
            lambda row: (
                f"Cancel {row.shown_state} workflow {row.name}\n  {row.key}\n"
                "It ends failed, with error code cancelled; its running step is not waited for."
            ),
        ),
        Spec(
            "resubmit",
            "Resubmit",
            _workflow,
            lambda row: (
                f"Resubmit the file of workflow {row.name}\n  {row.key}\n"
                "The same stored input starts a new workflow, linked to this one."
            ),
        ),
        Spec(
            "download",
            "Download",
            lambda row: _workflow(row) and row.state == "completed",
            lambda row: (
                f"Download the artefacts of workflow {row.name}\n  {row.key}\n"
                "Preview, thumbnail, layer images and manifest.json go into this directory:"
            ),
        ),
        Spec("copy", "Copy id", lambda row: True, lambda row: row.key, acts=False),
    )
}


def applies(name: str, row: Row | None) -> bool:
    spec = SPECS.get(name)
    return spec is not None and row is not None and spec.applies(row)


def download_dir(workflow_id: str, cwd: Path) -> Path:
    """The default place: a new directory under the working one, named by the short id."""
    return cwd / workflow_id[:8]


async def perform(broker: OneManageBroker, name: str, target: str) -> engine_actions.ActionOutcome:
    """The engine's action ``name`` on ``target``; it returns once the action is accepted."""
    if name == "replay":
        return await engine_actions.replay_dead_letter(broker, target)
    if name == "cancel":
        return await engine_actions.cancel_workflow(broker, target, "cancelled from the console")
    if name == "retry":
        return await engine_actions.retry_workflow(broker, target)
    if name == "resubmit":
        return await engine_actions.resubmit_workflow(broker, target)
    raise ValueError(f"no engine action {name!r}")


_AS = {"replay": "replayed as", "retry": "retried as", "resubmit": "resubmitted as"}


@dataclass
class Activity:
    """One action under way or done: what the detail screen and the notifications say."""

    name: str
    target: str
    stage: str = "sending"  # sending, queued, running, done, refused, error
    new_id: str | None = None
    text: str = ""
    written: tuple[int, int] = (0, 0)  # download: files written, files in all
    notified: bool = False  # its end was told (a notification) once

    def __post_init__(self) -> None:
        self.text = self.text or f"{self.name} {self.target[:8]}: sending…"

    @property
    def ended(self) -> bool:
        return self.stage in ("done", "refused", "error")

    def accepted(self, outcome: engine_actions.ActionOutcome) -> None:
        self.stage, self.new_id = "queued", outcome.new_id
        self.text = f"{outcome.detail}: queued"

    def refused(self, reason: str) -> None:
        self.stage, self.text = "refused", f"{self.name} refused: {reason}"

    def failed(self, reason: str) -> None:
        self.stage, self.text = "error", f"{self.name} failed: {reason}"

    def finished(self, text: str) -> None:
        self.stage, self.text = "done", text

    def follow(self, state: ConsoleState) -> bool:
        """Move on from what the state tells now; True when this look ended it."""
        if self.stage not in ("queued", "running"):
            return False
        if self.name == "cancel":
            row = state.rows.get(self.target)
            if row is None or not row.done:
                self.text = f"cancel {self.target[:8]}: queued, waiting for the workflow to end"
                return False
            if row.state == "failed" and row.error_type == "cancelled":
                self.finished(f"cancelled: workflow ended failed, code {row.error_type}")
            else:
                code = f", code {row.error_type}" if row.error_type else ""
                self.finished(f"cancel came too late: workflow ended {row.state}{code}")
            return True
        if self.new_id is None:
            return False
        row = state.rows.get(self.new_id)
        shown = row.shown_state.replace("_", " ") if row is not None else "queued"
        self.text = f"{_AS.get(self.name, self.name)} {self.new_id[:8]}…: {shown}"
        if row is not None and row.done:
            self.stage = "done"
            if row.failed and row.error_message:
                self.text += f" ({row.error_type or 'error'}: {row.error_message})"
            return True
        self.stage = "running" if row is not None and row.state != "queued" else "queued"
        return False


@dataclass
class ActionLog:
    """The console's actions, newest last, bounded."""

    activities: deque[Activity] = field(default_factory=lambda: deque(maxlen=KEPT))

    def start(self, name: str, target: str) -> Activity:
        activity = Activity(name, target)
        self.activities.append(activity)
        return activity

    def follow(self, state: ConsoleState) -> list[Activity]:
        """Move every open activity on; returns those that ended and were not yet told."""
        told = []
        for activity in self.activities:
            activity.follow(state)
            if activity.ended and not activity.notified:
                activity.notified = True
                told.append(activity)
        return told

    def about(self, key: str) -> list[str]:
        """What was done to ``key``, or made from it, oldest first."""
        return [a.text for a in self.activities if key in (a.target, a.new_id)]
