"""Stream health: TASKS and EVENTS figures, rates in and out, the server link."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.format import age, once_a_second, redraw, size, sparkline
from console.state import ConsoleState

SPARK_WIDTH = 16


class StreamHealth(Static):
    DEFAULT_CSS = "StreamHealth { border: round $primary; height: auto; }"

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(id="stream-health")
        self.state = state
        self.border_title = "Stream health"

    def update_view(self) -> None:
        now = self.state.clock()
        if not once_a_second(self, now):
            return
        link = self.state.connection
        if link.connecting:
            server = Text.assemble(("● ", "yellow"), f"{link.url or 'server'}  connecting…")
        elif link.connected:
            rtt = f"{link.rtt_ms:.1f} ms" if link.rtt_ms is not None else "?"
            server = Text.assemble(("● ", "green"), f"{link.url}  connected, round trip {rtt}")
        else:
            server = Text.assemble(
                ("● ", "red"), f"{link.url or 'server'}  DISCONNECTED {age(link.since, now)}",
                f"  ({link.error})" if link.error else "",
            )  # fmt: skip
        table = Table(box=None, expand=True, padding=(0, 1), header_style="bold dim")
        for title in ("stream", "msgs", "bytes", "seq", "first", "last", "cons"):
            left = title in ("stream", "seq")
            table.add_column(title, justify="left" if left else "right", no_wrap=True)
        rates = Table(box=None, expand=True, padding=(0, 1), show_header=False)
        rates.add_column("stream", no_wrap=True)
        rates.add_column("in", no_wrap=True, ratio=1)
        rates.add_column("out", no_wrap=True, ratio=1)
        for name, view in sorted(self.state.streams.items()):
            f = view.figures
            table.add_row(
                name, f"{f.messages:,}", size(f.bytes),
                f"{f.first_seq}..{f.last_seq}" if f.messages else f"empty @{f.last_seq}",
                age(f.first_ts, now), age(f.last_ts, now), str(f.consumers),
            )  # fmt: skip
            rates.add_row(
                name,
                *(
                    Text.assemble(f"{label} {values[-1] if values else 0:>6,.0f}/s ",
                                  (sparkline(list(values), SPARK_WIDTH), colour))
                    for label, values, colour in (
                        ("in ", view.rate_in, "cyan"), ("out", view.rate_out, "magenta")
                    )
                ),
            )  # fmt: skip
        if not self.state.streams:
            table.add_row("(no figures yet)")
        redraw(self, Group(server, table, rates), len(table.rows) + len(rates.rows))
