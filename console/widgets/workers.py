"""Workers seen through their heartbeats, and each task type's last hour.

The task figures are the engine's shared statistics (engine.events.stats), the
numbers `onemanage status` prints: counted by every worker, so they do not
depend on what this console happened to replay. Workers are grouped by their
`onemanage worker` command (its host:pid), its processes under it; one
silent for over the gone-after time leaves the list and is counted "gone".
"""

from __future__ import annotations

from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.format import age, duration, once_a_second, redraw
from console.state import ConsoleState, WorkerView
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
        for command, views in self.state.worker_groups():
            states = [self._state(view, now) for view in views]
            if views[0].beat.command is None:  # a process of its own: no group row
                beat, view = views[0].beat, views[0]
                table.add_row(
                    beat.worker_id, states[0], str(beat.running), f"{beat.processed:,}",
                    f"{beat.failed:,}", age(view.last_seen, now),
                )  # fmt: skip
                continue
            table.add_row(
                Text(command, style="bold"), Text(f"{len(views)} proc", style="dim"),
                f"{sum(v.beat.running for v in views):,}",
                f"{sum(v.beat.processed for v in views):,}",
                f"{sum(v.beat.failed for v in views):,}",
                age(max(v.last_seen for v in views), now),
            )  # fmt: skip
            for view, state in zip(views, states, strict=True):
                beat = view.beat
                table.add_row(
                    f"  {beat.worker_id}", state, str(beat.running), f"{beat.processed:,}",
                    f"{beat.failed:,}", age(view.last_seen, now),
                )  # fmt: skip
        if not self.state.workers:
            table.add_row("(no heartbeat seen)")
        parts: list[RenderableType] = [table]
        lines = len(table.rows)  # the height, so a layout only when it changes
        gone = f"gone {len(self.state.gone):,} (silent > {self.state.gone_after_s:g} s)"
        summary = [gone]
        if (counted := self.state.counts()) is not None:  # the header's figures
            summary = [counted.tasks_text(), f"{counted.workflows_text()}  │  {gone}"]
        for text in summary:
            parts.append(Text(text, style="dim", no_wrap=True, overflow="ellipsis"))
        lines += len(summary)
        if self.state.stats_error:
            error = f"statistics unavailable: {self.state.stats_error}"
            parts += [Text(""), Text(error, style="yellow", no_wrap=True, overflow="ellipsis")]
            lines += 2
        if self.state.stats_read_at is not None:
            busy = self.state.task_windows()
            parts += [Text(""), timings(busy)]
            lines += 2 + len(busy)
        redraw(self, Group(*parts), lines)

    def _state(self, view: WorkerView, now: datetime) -> Text:
        beat = view.beat
        verdict = self.state.worker_state(view, now)
        if verdict == "stopped":
            return Text("stopped", style="dim")
        if verdict == "lost":
            return Text("LOST", style="bold red")
        if verdict == "unjudged":  # silent, but this console could not have heard it
            return Text("no news", style="yellow")
        if beat.store_error:  # alive, but every write is refused
            return Text("CANNOT STORE", style="bold red")
        if beat.degraded_lanes:  # alive, but a lane is not pulling
            return Text(f"DEGRADED {', '.join(beat.degraded_lanes)}", style="bold yellow")
        return Text("alive", style="green")


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
