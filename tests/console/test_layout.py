"""Where the panels go at each size, the keys that toggle and zoom them, cut text, and the
selected row after a resize. A state folded from real event objects; no server needed."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.cells import cell_len
from rich.console import Console
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterKey

from console.app import ConsoleApp
from console.header import short_backend
from console.state import ConsoleState
from console.widgets.help import HelpScreen
from console.widgets.panels import Panels
from console.widgets.rows import Column, column_widths, ellipsised
from console.widgets.task_flow import TaskRows
from engine.events.schemas import TaskFailed, TaskQueued, TaskStarted
from tests.console.test_snapshots import artefacts, build_state
from tests.support.waiting import until

LONG = "reports.quarterly_revenue_by_region"


def a_state(tasks: int = 60) -> ConsoleState:
    """``tasks`` tasks, every third failed on a worker with a long name."""
    state = ConsoleState()
    start = datetime.now(UTC) - timedelta(minutes=5)
    for n in range(tasks):
        ids = {"task_id": f"task-{n:04d}", "task_name": LONG if n % 3 == 0 else "diag.noop"}
        at = start + timedelta(seconds=n)
        state.fold(TaskQueued(**ids, timestamp=at), 3 * n + 1)
        state.fold(TaskStarted(**ids, worker_id="render-eu-west-1b:31337", timestamp=at), 3 * n + 2)
        if n % 3 == 0:
            failed = TaskFailed(**ids, worker_id="render-eu-west-1b:31337", duration_ms=41.0,
                                error_type="ValueError", error_message="recipient list is empty",
                                timestamp=at)  # fmt: skip
            state.fold(failed, 3 * n + 3)
    return state


def shown(app: ConsoleApp) -> dict[str, bool]:
    panels = app.query_one(Panels)
    return {
        i: bool(app.query_one(f"#{i}").display and app.query_one(f"#{i}").parent.display)  # type: ignore[union-attr]
        for i in ("task-flow", "failures", "stream-health", "consumer-lag", "workers")
    } | {"narrow": panels.has_class("narrow")}


def footer_descriptions(app: ConsoleApp) -> list[str]:
    return [b.binding.description for b in app.screen.active_bindings.values() if b.binding.show]


def test_an_ellipsis_says_where_text_was_cut() -> None:
    assert ellipsised("render-02:4310", 9) == "render-0…"
    assert ellipsised("short", 9) == "short    "
    assert ellipsised("x", 0) == ""


def test_columns_share_the_room_evenly_and_the_last_takes_what_is_left() -> None:
    columns = (
        Column("time", 9, str),
        Column("name", 10, str, grow=1, first_most=20),
        Column("worker", 8, str, grow=2),
        Column("corr.", 9, str, drop_under=60),
        Column("detail", 10, str, grow=3),
    )
    wanted = {1: 40, 2: 15, 4: 50}
    narrow = column_widths(columns, 50, wanted)
    assert [c.title for c, _ in narrow] == ["time", "name", "worker", "detail"]
    assert [n for _, n in narrow] == [9, 15, 12, 14]  # 13 cells of room, 4 each, the odd one first
    # Wide: everyone served up to its first share, then the name gets what is left.
    wide = column_widths(columns, 120, wanted)
    assert dict((c.title, n) for c, n in wide) == {
        "time": 9, "name": 37, "worker": 15, "corr.": 9, "detail": 50,
    }  # fmt: skip
    roomy = column_widths(columns, 140, wanted)
    assert [n for _, n in roomy] == [9, 40, 15, 9, 67]  # all served: the rest to the last


async def test_the_system_panels_step_aside_when_narrow_and_come_back_by_key() -> None:
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        assert shown(app) == {"task-flow": True, "failures": True, "stream-health": True,
                              "consumer-lag": True, "workers": True, "narrow": False}  # fmt: skip
        await pilot.resize_terminal(100, 50)  # narrow but tall: the figures go under the lists
        await until(pilot, lambda: shown(app)["narrow"])
        assert all(shown(app).values())
        right, left = app.query_one("#right"), app.query_one("#left")
        assert right.region.y >= left.region.bottom and right.region.width == left.region.width
        await pilot.resize_terminal(100, 30)  # and short: out of the way
        await until(pilot, lambda: not shown(app)["workers"])
        assert not any(shown(app)[i] for i in ("stream-health", "consumer-lag", "workers"))
        flow = app.query_one("#task-flow")
        assert "5 Workers" in str(flow.border_subtitle)

        await pilot.press("5")
        await until(pilot, lambda: shown(app)["workers"])
        assert app.focused is app.query_one("#workers")
        assert "5 Workers" not in str(flow.border_subtitle)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert isinstance(app.screen, HelpScreen)
        assert app.screen.states["panel_workers"] == "shown"
        assert app.screen.states["panel_stream_health"] == "hidden"
        await pilot.press("escape")

        app.query_one("#task-rows").focus()
        await pilot.press("1")  # the task flow off: the focus goes on, to the failures
        await until(pilot, lambda: not shown(app)["task-flow"])
        assert app.focused is app.query_one("#failure-rows")
        await pilot.press("2")  # failures off: the workers are left...
        await pilot.press("5")  # ...and the last panel shown stays
        await pilot.pause()
        assert [k for k, v in shown(app).items() if v] == ["workers", "narrow"]


async def test_z_zooms_the_focused_panel_and_the_footer_says_how_back() -> None:
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert "Zoom" in footer_descriptions(app)
        app.query_one("#failure-rows").focus()
        await pilot.press("z")
        await until(pilot, lambda: not shown(app)["task-flow"])
        assert shown(app)["failures"]
        assert "Unzoom" in footer_descriptions(app) and "Zoom" not in footer_descriptions(app)
        assert "z: back" in str(app.query_one("#failures").border_subtitle)
        await pilot.press("z")
        await until(pilot, lambda: shown(app)["task-flow"] and shown(app)["failures"])
        assert "Zoom" in footer_descriptions(app)
        assert app.query_one(Footer).compact  # narrow: every key still fits


async def test_names_show_whole_where_there_is_room_and_cut_with_an_ellipsis_where_not() -> None:
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=(240, 45)) as pilot:
        rows = app.query_one(TaskRows)
        await until(pilot, lambda: len(rows.rows) == 60)
        failed = next(n for n, row in enumerate(rows.rows) if row.failed)
        line = "".join(s.text for s in rows.render_line(failed))
        assert LONG in line and "render-eu-west-1b:31337" in line
        await pilot.resize_terminal(80, 24)
        await until(pilot, lambda: rows.size.width < 80)
        await pilot.pause()
        line = "".join(s.text for s in rows.render_line(failed))
        assert LONG not in line and "reports.quarterl…" in line
        assert "failed" in line and "41.0 ms" in line and "ValueError" in line


async def test_a_failed_rows_error_gets_an_even_share_and_the_row_fills_the_list() -> None:
    """At 100 and 80 columns the error is not left at its least while the name takes 28 cells."""
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=(100, 30)) as pilot:
        rows = app.query_one(TaskRows)
        await until(pilot, lambda: len(rows.rows) == 60)
        for width, height in ((100, 30), (80, 24)):
            await pilot.resize_terminal(width, height)
            await until(pilot, lambda w=width: rows.size.width == w - 2)
            await pilot.pause()
            failed = next(n for n, row in enumerate(rows.rows) if row.failed)
            cells = [cell_len(s.text) for s in rows.render_line(failed)]
            assert sum(cells) == rows.scrollable_content_region.width, width
            name, error = cells[1], cells[-1]
            assert abs(name - error) <= 1, (width, cells)  # both cut: even shares


def test_the_short_backend_keeps_where_and_what_is_wrong_and_no_user() -> None:
    embedded = "embedded server nats://127.0.0.1:42117 (started) + worker host-1:4242"
    assert short_backend(embedded) == "embedded 127.0.0.1:42117"
    configured = "nats://ops:***@nats-a.example:4222, nats://nats-b.example:4222"
    assert short_backend(configured + "  [yellow]connecting…[/]") == (
        "nats-a.example:4222 +1 [yellow]connecting…[/]"
    )
    assert short_backend("[b red]cannot connect: OSError: refused[/]") == "[b red]cannot connect[/]"
    assert short_backend("offline view") == "offline view"


def shown_line(widget: Static) -> str:
    """The first line of a widget's content at its width: what a one-line widget shows."""
    console = Console(width=widget.content_size.width, file=io.StringIO(), record=True)
    console.print(widget.content)
    return console.export_text().splitlines()[0]


async def test_the_header_keeps_the_markers_and_the_counts_at_100_and_80_columns() -> None:
    state = build_state(artefacts())
    counted = state.counts()
    assert counted is not None and state.unreadable
    app = ConsoleApp(state=state, connect=False)
    async with app.run_test(size=(160, 45)) as pilot:
        app.backend = "embedded server nats://127.0.0.1:42117 (started) + worker render-eu-1b:31337"
        await pilot.press("space")
        status = app.query_one("#status", Static)
        await until(pilot, lambda: "PAUSED" in shown_line(status))
        assert "127.0.0.1:42117" in shown_line(status) and counted.line() in shown_line(status)
        for width, height in ((100, 30), (80, 24)):
            await pilot.resize_terminal(width, height)
            await until(pilot, lambda w=width: status.content_size.width == w - 2)
            await until(pilot, lambda w=width: cell_len(shown_line(status).rstrip()) <= w - 2)
            line = shown_line(status)
            assert "PAUSED" in line and "unreadable 2" in line, line
            assert counted.tasks_text() in line, line
        await pilot.press("space")  # no longer paused: room for the workflows at 80 too
        await until(pilot, lambda: "PAUSED" not in shown_line(status))
        assert counted.line() in shown_line(status) and "unreadable 2" in shown_line(status)


async def test_the_footer_fits_at_80_columns_and_leaves_room_at_100() -> None:
    """Narrow, the panel keys and Ctrl+P are left to Help; every other key shows whole."""
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=(80, 24)) as pilot:
        for width, height, room in ((80, 24, 0), (100, 30, 20)):
            await pilot.resize_terminal(width, height)
            await until(pilot, lambda w=width: app.query_one(Footer).size.width == w)
            await pilot.pause()
            keys = [k for k in app.query_one(Footer).query(FooterKey) if k.display]
            shown = [k.description for k in keys if k.parent is not None and k.parent.display]
            assert "Panels" not in " ".join(shown) and "palette" not in shown, shown
            assert {"Details", "Zoom", "Quit", "Help", "Filter", "Pause", "Submit"} <= set(shown)
            right = max(k.region.right for k in keys)
            assert right + room <= width, (width, right, shown)


async def test_the_selected_row_stays_in_sight_after_a_resize() -> None:
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=(160, 45)) as pilot:
        rows = app.query_one(TaskRows)
        await until(pilot, lambda: len(rows.rows) == 60)
        rows.focus()
        for _ in range(30):
            await pilot.press("down")
        assert rows.cursor == 30
        await pilot.resize_terminal(80, 24)

        def in_sight() -> bool:
            top = int(rows.scroll_offset.y)
            return rows.size.height < 20 and top <= rows.cursor < top + rows.size.height

        await until(pilot, in_sight)
        key = rows.current.key if rows.current else None
        await pilot.press("enter")
        await until(pilot, lambda: getattr(app.screen, "key", None) == key)
