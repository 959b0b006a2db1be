"""Workers seen through their heartbeats, and each task type's last hour.

The task figures are the engine's shared statistics (engine.events.stats), the
numbers `onemanage status` prints: counted by every worker, so they do not
depend on what this console happened to replay.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.format import age, duration, once_a_second, redraw
from console.state import ConsoleState
from engine.events.windows import WindowFigures

# Queue wait p50/p95, run time p50/p95/p99: the columns after ok and fail (final failures).
WAIT_QUANTILES = (50, 95)
RUN_QUANTILES = (50, 95, 99)


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
        parts: list[RenderableType] = [table]
        lines = len(table.rows)  # the height, so a layout only when it changes
        if self.state.stats_error:
            error = f"statistics unavailable: {self.state.stats_error}"
            parts += [Text(""), Text(error, style="yellow", no_wrap=True, overflow="ellipsis")]
            lines += 2
        if self.state.stats_read_at is not None:
            busy = self.state.task_windows()
            parts += [Text(""), timings(busy)]
            lines += 2 + len(busy)
        redraw(self, Group(*parts), lines)


def timings(busy: list[tuple[str, WindowFigures]]) -> RenderableType:
    """A row per task type busy in the last hour; a long name folds rather than loses its end.

    Collapsed padding: eight columns share the panel's 68 cells.
    """
    if not busy:
        return Text("(no task ran in the last hour)", style="dim")
    table = Table(
        box=None, expand=True, padding=(0, 1), collapse_padding=True, header_style="bold dim"
    )
    table.add_column("last hour", ratio=1, overflow="fold")
    titles = ["ok", "fail"]  # "failed" would cost psd.export_layers its last two letters
    titles += [f"wait p{q}" if n == 0 else f"p{q}" for n, q in enumerate(WAIT_QUANTILES)]
    titles += [f"run p{q}" if n == 0 else f"p{q}" for n, q in enumerate(RUN_QUANTILES)]
    for title in titles:
        table.add_column(title, justify="right", no_wrap=True)
    for name, hour in busy:
        table.add_row(
            name, f"{hour.succeeded:,}", f"{hour.failed:,}",
            *(duration(hour.wait_ms(q)) for q in WAIT_QUANTILES),
            *(duration(hour.run_ms(q)) for q in RUN_QUANTILES),
        )  # fmt: skip
    return table
