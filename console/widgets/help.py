"""`?`: every binding with its id, its keys (after remapping, as the footer shows them) and
what it does, and Tab, which moves between the panels."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widgets import Static

from console.config import default_path


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-height: 90%; border: round $accent;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close", id="help_close")]

    def __init__(
        self,
        bindings: Iterable[Binding],
        keymap: dict[str, str],
        states: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.bindings = [b for b in bindings if b.id]
        self.keymap = keymap
        self.states = states or {}  # by binding id: a panel's "shown", "hidden" or "zoomed"

    def compose(self) -> ComposeResult:
        table = Table(box=None, expand=True, header_style="bold")
        table.add_column("keys", style="bold cyan", no_wrap=True)
        table.add_column("action")
        table.add_column("binding id", style="dim")
        seen: set[str] = set()
        for binding in self.bindings:
            if binding.id in seen or binding.id is None:
                continue
            seen.add(binding.id)
            keys = self.keymap.get(binding.id, binding.key)
            shown = " / ".join(format_key(key.strip()) for key in keys.split(","))
            what = binding.description or binding.action
            if binding.id in self.states:
                what += f" panel [dim]({self.states[binding.id]})[/]"
            table.add_row(shown, what, binding.id)
        table.add_row("tab / shift+tab", "Next / previous panel", "")
        with VerticalScroll():
            yield Static("[b]OneManage console: keys[/b]\n")
            yield Static(table)
            yield Static(
                f"\nRemap any key by its binding id in [b]{default_path()}[/b]:\n"
                '  \\[keys]\n  submit = "ctrl+s"\n'
                "Filter with /: words, state:failed, task:NAME, worker:ID, -word to exclude.\n"
                "Ctrl+P opens the command palette with every action."
            )
