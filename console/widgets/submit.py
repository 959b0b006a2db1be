"""`s`: pick a .psd/.psb, check it here, upload it with progress, start its workflow.

The picker goes anywhere: Enter on a folder opens it, ``..`` (or Backspace) goes up, and a
typed path, absolute, relative to the folder shown, ``~`` or ``~/x``, opens the folder it
names or submits the file it names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label, ProgressBar, Static

from engine.broker import OneManageBroker
from engine.submit import SubmitError, read_psd_file, submit_psd

SUFFIXES = (".psd", ".psb")


PARENT = ".."


class PsdTree(DirectoryTree):
    """Folders and PSD/PSB files only, hidden entries left out; ``..`` first under the root.

    Enter on a folder opens it here (the screen moves the root) rather than unfolding it:
    Space still unfolds one in place.
    """

    auto_expand = False

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        kept = [
            p for p in paths
            if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in SUFFIXES)
        ]  # fmt: skip
        root = Path(self.path)
        if kept and kept[0].parent == root and root.parent != root:
            kept.insert(0, root / PARENT)
        return kept


class SubmitScreen(ModalScreen[str | None]):
    """Returns the new workflow id, or None when cancelled."""

    DEFAULT_CSS = """
    SubmitScreen { align: center middle; }
    SubmitScreen > Vertical { width: 90%; height: 80%; border: round $accent;
                              background: $surface; padding: 0 1; }
    SubmitScreen PsdTree { height: 1fr; }
    SubmitScreen #submit-message { height: auto; }
    SubmitScreen ProgressBar { display: none; }
    SubmitScreen.uploading ProgressBar { display: block; }
    """
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", id="submit_cancel"),
        Binding("backspace", "parent", "Parent folder", id="submit_parent"),
    ]

    def __init__(self, start: Path, broker: OneManageBroker) -> None:
        super().__init__()
        self.start = start.expanduser().resolve()
        self.broker = broker  # the app's connection: submissions go through it

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                "[b]Submit a PSD/PSB[/b]  type a path (a folder opens, a file is submitted) "
                "or pick one; Enter on a folder opens it, .. or Backspace goes up"
            )
            yield Input(placeholder="path/to/file.psd, a folder, ~ or ..", id="submit-path")
            yield Static("", id="submit-folder")
            yield PsdTree(self.start)
            yield Static("", id="submit-message")
            yield ProgressBar(total=100, show_eta=False, id="submit-progress")

    @property
    def folder(self) -> Path:
        """The folder the tree shows, which a relative path is taken from."""
        return Path(self.query_one(PsdTree).path)

    def open_folder(self, folder: Path) -> None:
        tree = self.query_one(PsdTree)
        if Path(tree.path) != folder.resolve():
            tree.path = folder.resolve()
        self.query_one("#submit-folder", Static).update(f"in [b]{escape(str(tree.path))}[/]")

    def action_parent(self) -> None:
        self.open_folder(self.folder.parent)

    def on_directory_tree_directory_selected(self, event: DirectoryTree.DirectorySelected) -> None:
        event.stop()
        self.open_folder(event.path)

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one(Input).value = str(event.path)
        self.upload(event.path)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        typed = event.value.strip()
        if not typed:
            return
        path = self.folder / Path(typed).expanduser()  # an absolute path replaces the folder
        if path.is_dir():
            event.input.value = ""
            self._say("")
            self.open_folder(path)
        else:
            self.upload(path)

    def _say(self, text: str, style: str = "") -> None:
        self.query_one("#submit-message", Static).update(f"[{style}]{text}[/]" if style else text)

    def on_mount(self) -> None:
        self.open_folder(self.start)
        self._sent, self._total = 0, 0
        self._busy = False
        self.set_interval(0.1, self._show_progress)

    def _show_progress(self) -> None:
        # The upload reports from a thread: it only stores numbers; this timer draws them.
        if self._total:
            self.query_one(ProgressBar).update(total=self._total, progress=self._sent)

    @work(group="submit")
    async def upload(self, path: Path) -> None:
        """Check locally first (a wrong file is refused before any upload), then submit.

        One upload at a time, never cancelled half done: a second Enter meanwhile is
        refused, visibly, and the submission itself is shielded.
        """
        if self._busy:
            self._say(f"busy: a submission is under way; {path.name} not submitted", "bold yellow")
            return
        self._busy = True
        try:
            await self._upload(path)
        finally:
            self._busy = False

    async def _upload(self, path: Path) -> None:
        try:
            data = await asyncio.to_thread(
                read_psd_file, path, self.broker.settings.max_upload_bytes
            )
        except SubmitError as exc:
            self._say(str(exc), "bold red")
            return
        self.add_class("uploading")
        self._say(f"uploading {path.name} ({len(data):,} bytes)...")

        def progress(sent: int, total: int) -> None:
            self._sent, self._total = sent, total

        try:
            submission = await asyncio.shield(submit_psd(self.broker, data, path.name, progress))
        except Exception as exc:  # the server is away, a bucket is missing...
            self.remove_class("uploading")
            self._say(f"not submitted: {type(exc).__name__}: {exc}", "bold red")
            return
        self.dismiss(submission.workflow_id)
