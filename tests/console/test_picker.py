"""The submit picker goes anywhere: typed folders (absolute, relative, ~, ~/x), the `..` entry,
Backspace, Enter on a folder; a typed file is checked and submitted (real temp folders, the
session's real server for the one upload)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Static

from console.app import ConsoleApp
from console.widgets.submit import PARENT, PsdTree, SubmitScreen
from engine.broker import OneManageBroker
from engine.services.samples import make_demo_psd
from tests.support.waiting import until


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/a/{b/deep.psd, sub/, notes.psd}, and a home of its own with x/ in it."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "b" / "deep.psd").write_bytes(make_demo_psd())
    (tmp_path / "a" / "notes.psd").write_text("this is text")
    (tmp_path / "home" / "x").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path.resolve()


def tree_of(app: ConsoleApp) -> PsdTree:
    return app.screen.query_one(PsdTree)


def message(app: ConsoleApp) -> str:
    return str(app.screen.query_one("#submit-message", Static).render())


async def type_path(app: ConsoleApp, pilot: object, text: str) -> None:
    field = app.screen.query_one("#submit-path", Input)
    field.focus()
    field.value = text
    await pilot.press("enter")  # type: ignore[attr-defined]


def listed(tree: PsdTree) -> list[str]:
    return [str(node.label) for node in tree.root.children]


async def test_typed_folders_and_parents_move_the_tree(
    folders: Path, client: OneManageBroker
) -> None:
    app = ConsoleApp(state=None, connect=False)
    async with app.run_test(size=(120, 40)) as pilot:
        chosen: list[str | None] = []
        app.push_screen(SubmitScreen(folders / "a" / "b", client), chosen.append)
        await until(pilot, lambda: isinstance(app.screen, SubmitScreen))
        tree = tree_of(app)
        assert Path(tree.path) == folders / "a" / "b"
        await until(pilot, lambda: listed(tree) == [PARENT, "deep.psd"])

        tree.focus()
        await pilot.press("backspace")  # up by key
        await until(pilot, lambda: Path(tree.path) == folders / "a")
        await until(pilot, lambda: listed(tree) == [PARENT, "b", "sub", "notes.psd"])
        assert "in " + str(folders / "a") in str(app.screen.query_one("#submit-folder").render())

        await type_path(app, pilot, "b")  # relative to the folder shown
        await until(pilot, lambda: Path(tree.path) == folders / "a" / "b")
        assert message(app) == ""  # a folder is not "not a regular file"
        await type_path(app, pilot, "../sub")
        await until(pilot, lambda: Path(tree.path) == folders / "a" / "sub")
        await type_path(app, pilot, "~")
        await until(pilot, lambda: Path(tree.path) == folders / "home")
        await type_path(app, pilot, "~/x")
        await until(pilot, lambda: Path(tree.path) == folders / "home" / "x")
        await type_path(app, pilot, str(folders / "a"))  # absolute
        await until(pilot, lambda: Path(tree.path) == folders / "a")
        await until(pilot, lambda: listed(tree)[:1] == [PARENT])

        tree.focus()  # the ".." entry, first under the root
        tree.move_cursor(tree.root.children[0])
        await pilot.press("enter")
        await until(pilot, lambda: Path(tree.path) == folders)
        await until(pilot, lambda: "a" in listed(tree))
        tree.move_cursor(next(n for n in tree.root.children if str(n.label) == "a"))
        await pilot.press("enter")  # Enter on a folder opens it
        await until(pilot, lambda: Path(tree.path) == folders / "a")

        await type_path(app, pilot, "nope.psd")
        await until(pilot, lambda: "no such file" in message(app))
        await type_path(app, pilot, "notes.psd")  # a file: checked here, refused before upload
        await until(pilot, lambda: "not a PSD" in message(app))
        assert isinstance(app.screen, SubmitScreen) and not chosen

        await type_path(app, pilot, "b/deep.psd")  # a file: submitted
        await until(pilot, lambda: chosen and chosen[0])
        assert not isinstance(app.screen, SubmitScreen)
