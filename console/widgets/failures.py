"""Failures: failed and dead-lettered tasks and failed workflows, kept past the live list."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from console.format import STATE_STYLES
from console.state import ConsoleState
from console.widgets.rows import Column, RowList


class FailureRows(RowList):
    COLUMNS = (
        Column("time", 9, lambda r: r.updated.astimezone().strftime("%H:%M:%S")),
        Column("task / workflow", 30, lambda r: r.name),
        Column(
            "state",
            14,
            lambda r: r.state.replace("_", " "),
            lambda r: STATE_STYLES.get(r.state, ""),
        ),
        Column("step", 9, lambda r: r.step or ""),
        Column("error", 18, lambda r: r.error_type or "", lambda r: "red"),
        Column("message", 0, lambda r: r.error_message or ""),
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

    def compose(self) -> ComposeResult:
        yield Static(id="failures-header")
        yield FailureRows(id="failure-rows")

    def update_view(self) -> None:
        rows = self.query_one(FailureRows)
        self.query_one("#failures-header", Static).update(rows.header(rows.size.width or 100))
        outcomes = self.state.outcomes
        self.border_title = (
            f"Failures ({outcomes['failed']:,} failed, {outcomes['dead_lettered']:,} dead-lettered)"
        )
        if self.state.version != self._shown_version:
            self._shown_version = self.state.version
            rows.set_rows(self.state.failure_rows())
