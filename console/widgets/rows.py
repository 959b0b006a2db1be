"""A newest-first list of rows drawn line by line (the line API), with a cursor.

Drawing only the visible lines from a plain list keeps a refresh cheap however
fast rows change: the app hands a fresh list at ~10 Hz, never one widget per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.cells import set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.format import state_style
from console.state import Row


@dataclass(frozen=True)
class Column:
    title: str
    width: int  # 0: takes the room the others leave
    cell: Callable[[Row], str]
    style: Callable[[Row], str] = lambda row: ""


def state_column(width: int) -> Column:
    """The coloured state of a row, shared by the task flow and the failures."""
    return Column(
        "state",
        width,
        lambda row: row.shown_state.replace("_", " "),
        lambda row: state_style(row.shown_state),
    )


def _cell(text: str, width: int) -> str:
    """``text`` cut or padded to ``width`` cells, the last one a gap to the next column."""
    if width <= 1:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + " "


class RowList(ScrollView, can_focus=True):
    """Rows of a ConsoleState; Enter posts Chosen with the row's key."""

    DEFAULT_CSS = """
    RowList { height: 1fr; }
    RowList > .rowlist--cursor { background: $accent 40%; }
    """
    COMPONENT_CLASSES = {"rowlist--cursor"}
    BINDINGS = [
        Binding("enter", "choose", "Details", id="details"),
        Binding("up", "move(-1)", "Up", show=False, id="row_up"),
        Binding("down", "move(1)", "Down", show=False, id="row_down"),
        Binding("pageup", "move(-20)", "Page up", show=False, id="row_page_up"),
        Binding("pagedown", "move(20)", "Page down", show=False, id="row_page_down"),
        Binding("home", "move(-1000000)", "First", show=False, id="row_first"),
        Binding("end", "move(1000000)", "Last", show=False, id="row_last"),
    ]
    COLUMNS: tuple[Column, ...] = ()

    class Chosen(Message):
        """A person pressed Enter on a row."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def on_focus(self) -> None:
        self.refresh()  # the cursor shows only where the keys go

    def on_blur(self) -> None:
        self.refresh()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[Row] = []
        self.cursor = 0
        self._cursor_key: str | None = None

    def header(self, width: int) -> str:
        return "".join(_cell(c.title, w) for c, w in self._widths(width))

    def set_rows(self, rows: list[Row]) -> None:
        """New rows; the cursor stays on the same row as newer ones arrive above it."""
        self.rows = rows
        if self._cursor_key is not None:
            for index, row in enumerate(rows):
                if row.key == self._cursor_key:
                    self.cursor = index
                    break
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self._cursor_key = rows[self.cursor].key if rows else None
        self.virtual_size = Size(self.size.width, len(rows))
        self.refresh()

    @property
    def current(self) -> Row | None:
        return self.rows[self.cursor] if self.rows else None

    def action_move(self, delta: int) -> None:
        if not self.rows:
            return
        self.cursor = max(0, min(self.cursor + delta, len(self.rows) - 1))
        self._cursor_key = self.rows[self.cursor].key
        self.scroll_to_region_if_needed()
        self.refresh()

    def scroll_to_region_if_needed(self) -> None:
        top, height = int(self.scroll_offset.y), self.scrollable_content_region.height
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + height:
            self.scroll_to(y=self.cursor - height + 1, animate=False)

    def action_choose(self) -> None:
        if self.current is not None:
            self.post_message(self.Chosen(self.current.key))

    def _widths(self, width: int) -> list[tuple[Column, int]]:
        fixed = sum(c.width for c in self.COLUMNS)
        flexible = [c for c in self.COLUMNS if c.width == 0]
        room = max(width - fixed, 8 * len(flexible))
        share = room // max(len(flexible), 1)
        return [(c, c.width or share) for c in self.COLUMNS]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = int(self.scroll_offset.y) + y
        if index >= len(self.rows):
            return Strip.blank(width)
        row = self.rows[index]
        cursor = index == self.cursor and self.has_focus  # shown only where the keys go
        highlight = self.get_component_rich_style("rowlist--cursor") if cursor else None
        segments = []
        for column, cells in self._widths(width):
            style = Style.parse(column.style(row) or "none")
            if highlight is not None:
                style = style + highlight
            segments.append(Segment(_cell(column.cell(row), cells), style))
        return Strip(segments).adjust_cell_length(width, highlight)
