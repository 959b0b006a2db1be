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
        # One row per id: a key with two faces (Pause / Resume, Zoom / Unzoom) shows both.
        described: dict[str, list[str]] = {}
        first: dict[str, Binding] = {}
        for binding in self.bindings:
            if binding.id is None:
                continue
            first.setdefault(binding.id, binding)
            what = binding.description or binding.action
            if what not in described.setdefault(binding.id, []):
                described[binding.id].append(what)
        for binding_id, binding in first.items():
            keys = self.keymap.get(binding_id, binding.key)
            shown = " / ".join(format_key(key.strip()) for key in keys.split(","))
            what = " / ".join(described[binding_id])
            if binding_id in self.states:
                what += f" panel [dim]({self.states[binding_id]})[/]"
            table.add_row(shown, what, binding_id)
        table.add_row("tab / shift+tab", "Next / previous panel", "")
        with VerticalScroll():
            yield Static("[b]OneManage console: keys[/b]\n")
            yield Static(table)
            yield Static(
                f"\nRemap any key by its binding id in [b]{default_path()}[/b]:\n"
                '  \\[keys]\n  submit = "ctrl+s"\n'
                "Filter with /: words, state:failed, task:NAME, worker:ID, -word to exclude;\n"
                "applied as you type, Enter keeps it, Esc clears it.\n"
                "1-5 show or hide a panel, z zooms the focused one (Tab moves the focus).\n"
                "Ctrl+P opens the command palette with every action."
            )
