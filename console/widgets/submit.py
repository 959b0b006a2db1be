"""`s`: pick a .psd/.psb, check it here, upload it with progress, start its workflow."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Label, ProgressBar, Static

from engine.broker import OneManageBroker
from engine.submit import SubmitError, read_psd_file, submit_psd

SUFFIXES = (".psd", ".psb")


class PsdTree(DirectoryTree):
    """Folders and PSD/PSB files only; hidden entries left out."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [
            p for p in paths
            if not p.name.startswith(".") and (p.is_dir() or p.suffix.lower() in SUFFIXES)
        ]  # fmt: skip


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
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="submit_cancel")]

    def __init__(self, start: Path, broker: OneManageBroker) -> None:
        super().__init__()
        self.start = start
        self.broker = broker  # the app's connection: submissions go through it

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Submit a PSD/PSB[/b]  type a path or pick a file, Enter submits")
            yield Input(placeholder="path/to/file.psd", id="submit-path")
            yield PsdTree(self.start)
            yield Static("", id="submit-message")
            yield ProgressBar(total=100, show_eta=False, id="submit-progress")

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one(Input).value = str(event.path)
        self.upload(event.path)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.upload(Path(event.value.strip()).expanduser())

    def _say(self, text: str, style: str = "") -> None:
        self.query_one("#submit-message", Static).update(f"[{style}]{text}[/]" if style else text)

    def on_mount(self) -> None:
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
