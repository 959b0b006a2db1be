"""Failures: failed and dead-lettered tasks and failed workflows, kept past the live list.

A failed workflow is one row, its failing step's code and message inside it
(its step task is not listed again); the title has the shared counts (engine.counts).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from console.state import ConsoleState
from console.widgets.rows import Column, RowList, state_column


class FailureRows(RowList):
    COLUMNS = (
        Column("time", 9, lambda r: r.updated.astimezone().strftime("%H:%M:%S")),
        Column("task / workflow", 16, lambda r: r.name, grow=1, first_most=28),
        state_column(),
        Column("step", 9, lambda r: r.step or "", drop_under=90),
        Column("error", 10, lambda r: r.error_type or "", lambda r: "red", grow=3),
        Column("message", 16, lambda r: r.error_message or "", grow=4),
    )


class Failures(Vertical):
    DEFAULT_CSS = """
    Failures { border: round $error; height: 1fr; }
    Failures > #failures-header { color: $text-muted; text-style: bold; height: 1; }
    """

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(id="failures")
        self.state = state
        self._shown_version = -1
        self._header = ""

    def compose(self) -> ComposeResult:
        yield Static(id="failures-header")
        yield FailureRows(id="failure-rows")

    def update_view(self) -> None:
        rows = self.query_one(FailureRows)
        header = rows.header(rows.scrollable_content_region.width or 100)
        if header != self._header:
            self._header = header
            self.query_one("#failures-header", Static).update(header, layout=False)
        counted = self.state.counts()
        title = (
            "Failures"
            if counted is None
            else f"Failures (workflows failed {counted.workflows_failed:,}, tasks failed "
            f"{counted.tasks_failed:,}, dead {counted.tasks_dead_lettered:,})"
        )
        if title != self.border_title:
            self.border_title = title
        if self.state.failures_version != self._shown_version:
            self._shown_version = self.state.failures_version
            rows.set_rows(self.state.failure_rows())
