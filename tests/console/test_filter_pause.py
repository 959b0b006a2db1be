"""The filter as it is typed, Esc to clear it, a warning for what cannot match; the footer
saying Resume while paused. A state folded from real event objects; no server needed."""

from __future__ import annotations

from textual.widgets import Input, Static

from console.app import ConsoleApp
from console.state import RowFilter
from console.widgets.task_flow import TaskFlow, TaskRows
from tests.console.test_layout import a_state
from tests.support.waiting import until

SIZE = (160, 45)


async def type_text(pilot: object, text: str) -> None:
    for key in text:
        await pilot.press("space" if key == " " else key)  # type: ignore[attr-defined]


def footer_says(app: ConsoleApp, key: str) -> str:
    return app.screen.active_bindings[key].binding.description


def test_a_filter_names_what_it_cannot_match() -> None:
    assert RowFilter("state:fail worker:render").problems == []
    (problem,) = RowFilter("state:bogus").problems
    assert "unknown state 'bogus'" in problem and "dead_lettered" in problem
    (problem,) = RowFilter("sate:failed").problems
    assert "unknown key 'sate:'" in problem and "state:, task:, worker:" in problem
    assert RowFilter("render-02:4310").problems == []  # a worker id is a word, not a key


async def test_the_filter_applies_as_typed_and_esc_clears_it() -> None:
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=SIZE) as pilot:
        rows = app.query_one(TaskRows)
        await until(pilot, lambda: len(rows.rows) == 60)
        await pilot.press("slash")
        field = app.query_one("#filter", Input)
        assert app.focused is field
        await type_text(pilot, "state:fail")  # no Enter
        await until(pilot, lambda: len(rows.rows) == 20)
        assert all(r.state == "failed" for r in rows.rows)
        await type_text(pilot, " -task-0003")
        await until(pilot, lambda: len(rows.rows) == 19)

        await pilot.press("escape")
        await until(pilot, lambda: len(rows.rows) == 60)
        assert not field.has_class("active") and field.value == ""
        assert app.focused is rows
        assert "filter:" not in str(app.query_one(TaskFlow).border_title)

        await pilot.press("slash")
        await type_text(pilot, "state:failed")
        await pilot.press("enter")  # Enter keeps it and closes the field
        await until(pilot, lambda: not field.has_class("active") and app.focused is rows)
        assert len(rows.rows) == 20


async def test_an_unknown_state_shows_a_warning_not_an_empty_list_alone() -> None:
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=SIZE) as pilot:
        rows = app.query_one(TaskRows)
        await until(pilot, lambda: len(rows.rows) == 60)
        warning = app.query_one("#task-flow-warning", Static)
        assert not warning.display
        await pilot.press("slash")
        await type_text(pilot, "state:bogus")
        await until(pilot, lambda: warning.display and not rows.rows)
        text = str(warning.render())
        assert "unknown state 'bogus'" in text and "queued" in text and "failed" in text
        await pilot.press("escape")
        await until(pilot, lambda: not warning.display and len(rows.rows) == 60)


async def test_the_footer_says_resume_while_paused() -> None:
    app = ConsoleApp(state=a_state(), connect=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert footer_says(app, "space") == "Pause"
        await pilot.press("space")
        assert app.query_one(TaskFlow).paused
        await until(pilot, lambda: footer_says(app, "space") == "Resume")
        await pilot.press("space")
        assert not app.query_one(TaskFlow).paused
        await until(pilot, lambda: footer_says(app, "space") == "Pause")
