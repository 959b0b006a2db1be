"""The question before an operator action: what will happen, to which id; y/Enter or n/Esc.

An action that asks for a place (download) shows a field with the default filled
in; Enter in it confirms with what it holds. Dismissed with None (back) or the
field's text ("" when there is no field).
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static


class ConfirmScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 80; max-width: 95%; height: auto; border: thick $warning;
                               background: $surface; padding: 0 1; }
    ConfirmScreen #confirm-title { text-style: bold; }
    ConfirmScreen #confirm-body { height: auto; margin: 1 0; }
    ConfirmScreen #confirm-keys { color: $text-muted; }
    """
    BINDINGS = [
        Binding("y,enter", "confirm", "Confirm", id="confirm_yes"),
        Binding("n,escape", "back", "Back", id="confirm_no"),
    ]

    def __init__(self, title: str, body: str, field: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.field = field  # the default value of a field to fill in, or no field

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, id="confirm-title")
            yield Static(self.body, id="confirm-body", markup=False)
            if self.field is not None:
                yield Input(self.field, id="confirm-field")
            with_field = self.field is not None
            keys = "Enter confirm · Esc back" if with_field else "y/Enter confirm · n/Esc back"
            yield Label(keys, id="confirm-keys")

    def on_mount(self) -> None:
        if self.field is not None:
            self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.dismiss(event.value.strip())

    def action_confirm(self) -> None:
        if self.field is None:
            self.dismiss("")
        elif value := self.query_one(Input).value.strip():
            self.dismiss(value)

    def action_back(self) -> None:
        self.dismiss(None)
