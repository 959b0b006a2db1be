"""Workers seen through their heartbeats, and how long each task type takes."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.format import age, duration, once_a_second, redraw
from console.state import ConsoleState


class Workers(Static):
    DEFAULT_CSS = "Workers { border: round $primary; height: auto; }"

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(id="workers")
        self.state = state
        self.border_title = "Workers"

    def update_view(self) -> None:
        now = self.state.clock()
        if not once_a_second(self, now, 0.66):
            return
        table = Table(box=None, expand=True, padding=(0, 1), header_style="bold dim")
        table.add_column("worker", no_wrap=True, ratio=1)
        table.add_column("state", no_wrap=True)
        for title in ("running", "processed", "failed", "seen"):
            table.add_column(title, justify="right", no_wrap=True)
        for worker_id, view in sorted(self.state.workers.items()):
            beat = view.beat
            if beat.state == "stopping":
                state = Text("stopped", style="dim")
            elif view.lost(now):
                state = Text("LOST", style="bold red")
            elif beat.store_error:  # alive, but every write is refused
                state = Text("CANNOT STORE", style="bold red")
            elif beat.degraded_lanes:  # alive, but a lane is not pulling
                state = Text(f"DEGRADED {', '.join(beat.degraded_lanes)}", style="bold yellow")
            else:
                state = Text("alive", style="green")
            table.add_row(
                worker_id, state, str(beat.running), f"{beat.processed:,}", f"{beat.failed:,}",
                age(view.last_seen, now),
            )  # fmt: skip
        if not self.state.workers:
            table.add_row("(no heartbeat seen)")
        timings = Table(box=None, expand=True, padding=(0, 1), header_style="bold dim")
        timings.add_column("task type", no_wrap=True, ratio=1)
        for title in ("n", "p50", "p95"):
            timings.add_column(title, justify="right")
        for name, kept, p50, p95 in self.state.task_percentiles():
            timings.add_row(name, f"{kept:,}", duration(p50), duration(p95))
        shown = Group(table, Text(""), timings) if self.state.durations else table
        redraw(self, shown, len(table.rows) + len(timings.rows))
