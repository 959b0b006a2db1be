"""Consumer lag: every durable's backlog, what is in flight, and when it drains."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.format import age, eta, once_a_second, redraw
from console.state import ConsoleState


class ConsumerLag(Static):
    DEFAULT_CSS = "ConsumerLag { border: round $primary; height: auto; }"

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(id="consumer-lag")
        self.state = state
        self.border_title = "Consumer lag"

    def update_view(self) -> None:
        now = self.state.clock()
        if not once_a_second(self, now, 0.33):
            return
        table = Table(
            box=None, expand=True, padding=(0, 1), collapse_padding=True, pad_edge=False,
            header_style="bold dim",
        )  # fmt: skip
        table.add_column("durable", no_wrap=True, min_width=16)
        for title in ("pend", "unack", "redel", "pulls", "floor", "active", "drains"):
            table.add_column(title, justify="right", no_wrap=True)
        for key, view in sorted(self.state.consumers.items()):
            f = view.figures
            warn = f.impossible
            pending_style = "bold yellow" if warn else ("yellow" if f.pending else "")
            table.add_row(
                Text(("⚠ " if warn else "") + key, style="bold yellow" if warn else ""),
                Text(f"{f.pending:,}", style=pending_style),
                f"{f.ack_pending:,}", f"{f.redelivered:,}", str(f.waiting), str(f.ack_floor),
                age(f.last_active, now), eta(view.drain_seconds),
            )  # fmt: skip
        if not self.state.consumers:
            table.add_row("(no durables yet: no worker has started)")
        redraw(self, table, len(table.rows))
