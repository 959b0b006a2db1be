"""Task flow: every task and workflow, newest first, with a filter and a pause."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from console.format import duration
from console.state import ConsoleState, Row, RowFilter
from console.widgets.rows import Column, RowList, state_column

SHOWN = 1000


def _name(row: Row) -> str:
    return f"▶ {row.name}" if row.kind == "workflow" else row.name


def _detail(row: Row) -> str:
    if row.failed:
        return (
            f"{row.step + ': ' if row.step else ''}{row.error_type or ''} {row.error_message or ''}"
        )
    if row.kind == "workflow" and row.step and not row.done:
        return f"after {row.step}"
    return f"attempt {row.attempt}" if row.attempt > 1 else ""


class TaskRows(RowList):
    # At 80 columns: time, name, state, worker, duration and the error; corr. from 110.
    COLUMNS = (
        Column("time", 9, lambda r: r.created.astimezone().strftime("%H:%M:%S")),
        Column(
            "task / workflow",
            16,
            _name,
            lambda r: "bold" if r.kind == "workflow" else "",
            grow=1,
            first_most=28,
        ),
        state_column(),
        Column("worker", 10, lambda r: r.worker or "", grow=3, first_most=16),
        Column("duration", 9, lambda r: duration(r.duration_ms)),
        Column("corr.", 9, lambda r: r.correlation_id[:8], drop_under=110),
        Column("", 16, _detail, lambda r: "red" if r.failed else "dim", grow=4),
    )


class TaskFlow(Vertical):
    """The live list; ``paused`` freezes what is shown, never what is counted."""

    DEFAULT_CSS = """
    TaskFlow { border: round $primary; height: 1fr; }
    TaskFlow > #task-flow-header { color: $text-muted; text-style: bold; height: 1; }
    TaskFlow > #task-flow-warning { color: $warning; height: auto; display: none; }
    TaskFlow > #task-flow-warning.active { display: block; }
    """

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(id="task-flow")
        self.state = state
        self.row_filter = RowFilter()
        self.paused = False
        self._shown_version = -1
        self._header = ""

    def compose(self) -> ComposeResult:
        yield Static(id="task-flow-warning")
        yield Static(id="task-flow-header")
        yield TaskRows(id="task-rows")

    @property
    def rows(self) -> TaskRows:
        return self.query_one(TaskRows)

    def set_filter(self, text: str) -> None:
        """Applied as it is typed; what cannot match as meant is said above the list."""
        if text.strip() == self.row_filter.text:
            return
        self.row_filter = RowFilter(text)
        warning = self.query_one("#task-flow-warning", Static)
        warning.update("\n".join(f"⚠ filter: {p}" for p in self.row_filter.problems))
        warning.set_class(bool(self.row_filter.problems), "active")
        self._shown_version = -1
        self.update_view()

    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        self._shown_version = -1
        self.update_view()
        return self.paused

    def update_view(self) -> None:
        """Called by the app's refresh timer; cheap when nothing changed."""
        rows = self.rows
        header = rows.header(rows.scrollable_content_region.width or 100)
        if header != self._header:  # redraw text only when it changed: this runs at 10 Hz
            self._header = header
            self.query_one("#task-flow-header", Static).update(header, layout=False)
        title = f"Task flow ({len(self.state.rows):,} kept, {self.state.evicted_rows:,} evicted)"
        if self.row_filter:
            title += f"  filter: {self.row_filter.text}"
        if self.paused:
            title += "  PAUSED"
        if title != self.border_title:
            self.border_title = title
        if self.paused or self.state.version == self._shown_version:
            return
        self._shown_version = self.state.version
        rows.set_rows(self.state.visible_rows(self.row_filter or None, SHOWN))
