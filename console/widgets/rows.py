"""A newest-first list of rows drawn line by line (the line API), with a cursor.

Drawing only the visible lines from a plain list keeps a refresh cheap however
fast rows change: the app hands a fresh list at ~10 Hz, never one widget per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.format import state_style
from console.state import Row

WIDTH_SAMPLE = 200  # rows whose content sizes the growing columns


@dataclass(frozen=True)
class Column:
    """A column's share of the list's width.

    ``width`` is its least (the gap to the next column included); a column with
    ``grow`` also takes a share of the room left, up to what its widest cell needs
    (``grow`` orders who gets an odd cell first); ``drop_under`` leaves it out of a
    list narrower than that, so a narrow terminal keeps the columns that matter
    instead of cutting all of them. The last shown column takes whatever is left.
    """

    title: str
    width: int
    cell: Callable[[Row], str]
    style: Callable[[Row], str] = lambda row: ""
    grow: int = 0
    drop_under: int = 0
    first_most: int = 0  # with grow: at most this many cells until the others have theirs


def state_column(width: int = 11, grow: int = 2) -> Column:
    """The coloured state of a row, shared by the task flow and the failures."""
    return Column(
        "state",
        width,
        lambda row: row.shown_state.replace("_", " "),
        lambda row: state_style(row.shown_state),
        grow=grow,
    )


def ellipsised(text: str, width: int) -> str:
    """``text`` in ``width`` cells: padded, or cut with an ellipsis that says it was cut."""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + "…" if width > 0 else ""


def _cell(text: str, width: int) -> str:
    """``text`` in ``width`` cells, the last one a gap to the next column."""
    if width <= 1:
        return ellipsised(text, width)
    return ellipsised(text, width - 1) + " "


def _shared(room: int, needs: dict[int, int]) -> dict[int, int]:
    """``room`` cells shared evenly among ``needs`` (index: cells wanted), none over its need.

    Even shares, not first come first served: a long name served first would leave
    the error of a failed row (the last column) with its least however wide the list.
    Odd cells go in the order of ``needs``.
    """
    takes = dict.fromkeys(needs, 0)
    pending = [i for i, need in needs.items() if need > 0]
    while room > 0 and pending:
        each = max(1, room // len(pending))
        for i in list(pending):
            take = min(each, needs[i] - takes[i], room)
            takes[i] += take
            room -= take
            if takes[i] == needs[i]:
                pending.remove(i)
            if room == 0:
                break
    return takes


def column_widths(
    columns: tuple[Column, ...], width: int, wanted: dict[int, int]
) -> list[tuple[Column, int]]:
    """The shown columns and their cells in a list ``width`` cells wide.

    ``wanted`` holds, by column index, the cells its widest content needs. The room
    left by the least widths is shared evenly among the growing columns, first up to
    ``first_most`` each (one long name must not starve a worker id), then up to what
    each wants; the last shown column gets what is left, so a row fills the list.
    """
    shown = [(i, c) for i, c in enumerate(columns) if width >= c.drop_under]
    cells = {i: c.width for i, c in shown}
    room = width - sum(cells.values())
    growing = sorted((i for i, c in shown if c.grow), key=lambda i: columns[i].grow)
    for capped in (True, False):
        needs = {}
        for i in growing:
            most = columns[i].first_most if capped and columns[i].first_most else width
            needs[i] = max(0, min(wanted.get(i, 0), most) - cells[i])
        for i, take in _shared(max(0, room), needs).items():
            cells[i] += take
            room -= take
    if room > 0 and shown:
        cells[shown[-1][0]] += room
    return [(c, cells[i]) for i, c in shown]


class RowList(ScrollView, can_focus=True):
    """Rows of a ConsoleState; Enter posts Chosen with the row's key."""

    DEFAULT_CSS = """
    RowList { height: 1fr; overflow-x: hidden; }
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

    def on_resize(self) -> None:
        """The selected row stays in sight: Enter must never open a row nobody can see."""
        self.virtual_size = Size(self.size.width, len(self.rows))
        self.call_after_refresh(self.scroll_to_region_if_needed)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[Row] = []
        self.cursor = 0
        self._cursor_key: str | None = None
        self._wanted: dict[int, int] = {}  # by column: the cells its widest content needs

    def header(self, width: int) -> str:
        return "".join(_cell(c.title, w) for c, w in self._widths(width))

    def set_rows(self, rows: list[Row]) -> None:
        """New rows; the cursor stays on the same row as newer ones arrive above it."""
        self.rows = rows
        sample = rows[:WIDTH_SAMPLE]  # the newest: a refresh at 10 Hz must stay cheap
        self._wanted = {
            i: max([cell_len(c.title)] + [cell_len(c.cell(row)) for row in sample]) + 1
            for i, c in enumerate(self.COLUMNS)
            if c.grow
        }
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
        return column_widths(self.COLUMNS, width, self._wanted)

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
