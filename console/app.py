"""onemanage-console: what the system is doing, live, and a keyboard to act on it.

With no server configured it starts the embedded nats-server and one worker,
and stops both on exit; with a server configured it only connects (add
--with-worker for a local worker). It replays the recent EVENTS history, then
follows live, as the operator role: direct gets and figures, never a consumer, an
ack, a delete or a purge. Events fold into console.state; a 10 Hz timer draws.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import importlib.metadata
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.markup import escape
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from console import actions
from console import config as console_config
from console.format import age
from console.header import HeaderFacts, header_line
from console.pump import Pump
from console.state import ConsoleState, Row, clock_time
from console.widgets.confirm import ConfirmScreen
from console.widgets.consumers import ConsumerLag
from console.widgets.detail import DetailScreen
from console.widgets.failures import Failures
from console.widgets.help import HelpScreen
from console.widgets.panels import Panels
from console.widgets.rows import RowList
from console.widgets.streams import StreamHealth
from console.widgets.submit import SubmitScreen
from console.widgets.task_flow import TaskFlow
from console.widgets.workers import Workers
from engine import embedded, monitor, roles
from engine.actions import ActionRefused
from engine.alerts import ThresholdsError, load_thresholds
from engine.app import broker
from engine.broker import OneManageBroker
from engine.credentials import PRIVATE_FILE, append_private, private_dir
from engine.downloads import DownloadError, download_artefacts
from engine.errors import PermissionDeniedError
from engine.eventlines import parse_duration
from engine.identity import HOST
from engine.parentdeath import terminate_with_parent
from engine.redaction import redact, redact_logging

logger = logging.getLogger(__name__)

REFRESH_HZ = 10
SERVER_CHECK_SECONDS = 1.0  # how often the console looks whether its embedded server died
ACTIONS_HZ = 4  # actions under way, stuck rows and the footer's action keys are looked at
ALERT_LINES = 3  # the banner's height at most (console.tcss)


@runtime_checkable
class Panel(Protocol):
    """A view the 10 Hz timer redraws from the state (it returns early when nothing changed)."""

    def update_view(self) -> None: ...


@dataclass
class ConsoleOptions:
    since: timedelta = timedelta(hours=1)
    with_worker: bool = False
    config_path: Path | None = None
    keys: dict[str, str] = field(default_factory=dict)


class ConsoleApp(App[None]):
    """The console. ``connect=False`` shows a given state only (snapshot tests)."""

    CSS_PATH = "console.tcss"
    TITLE = "OneManage"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("space", "pause", "Pause", id="pause"),
        Binding("space", "resume", "Resume", id="pause"),  # the footer says what space does
        Binding("s", "submit", "Submit", id="submit"),
        Binding("d", "demo", "Demo", id="demo"),
        Binding("escape", "back", "Back", id="back", show=False),
        # On the selected row or the detail shown; the footer shows those that apply there.
        Binding("x", "act('cancel')", "Cancel", id="cancel"),
        Binding("r", "act('retry')", "Retry", id="retry"),
        Binding("R", "act('replay')", "Replay", id="replay"),
        Binding("u", "act('resubmit')", "Resubmit", id="resubmit"),
        Binding("w", "act('download')", "Download", id="download"),
        Binding("y", "act('copy')", "Copy", id="copy_id"),
    ]

    def __init__(
        self,
        options: ConsoleOptions | None = None,
        state: ConsoleState | None = None,
        connect: bool = True,
        connection: OneManageBroker = broker,
    ) -> None:
        super().__init__()
        self.broker = connection  # this process's one connection, unless a test gives another
        self.options = options or ConsoleOptions()
        self.state = state or ConsoleState()
        self.connect = connect
        self.pump: Pump | None = None
        self.owns_connection = False  # false when the process's broker was already started
        self.worker_process: subprocess.Popen[bytes] | None = None
        self.backend = "connecting…" if connect else "offline view"
        self.state.connection.connecting = connect  # no "unreachable" before an answer
        self.config_problems: list[str] = []
        self.action_log = actions.ActionLog()
        self._action_keys: tuple[object, ...] = ()

    # -- layout -------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(id="status")
        yield Static(id="alerts")
        yield Panels(self.state)
        yield Input(
            placeholder="filter: words, state:failed, task:NAME, worker:ID, -word", id="filter"
        )
        yield Footer()

    def on_mount(self) -> None:
        known = {b.id for b in self.all_bindings() if b.id}
        loaded = console_config.load(self.options.config_path, known)
        self.config_problems = loaded.problems
        self.set_keymap({**loaded.keys, **self.options.keys})
        for problem in self.config_problems:
            self.notify(problem, title="config", severity="warning", timeout=10)
        self.query_one("#task-rows").focus()
        self.refresh_views()
        self.set_interval(1 / REFRESH_HZ, self.refresh_views)
        self.start_actions()
        if self.connect:
            self.start_backend()

    def all_bindings(self) -> list[Binding]:
        """Every binding of the app and its screens, for the help screen and the keymap."""
        from console.widgets import detail, submit

        found: list[Binding] = [b for b in self.BINDINGS if isinstance(b, Binding)]
        for owner in (
            RowList,
            Panels,
            HelpScreen,
            submit.SubmitScreen,
            detail.DetailScreen,
            ConfirmScreen,
        ):
            found += [b for b in owner.BINDINGS if isinstance(b, Binding)]
        return found

    @property
    def main(self) -> Screen[None]:
        """The screen with the panels, under any detail, help or submit screen."""
        return self.screen_stack[0]

    def refresh_views(self) -> None:
        """The 10 Hz timer: the model is read here, never pushed per event."""
        if not self.screen_stack:
            return  # the app is closing: its screens are gone
        main = self.main  # also while a detail or help screen is on top
        if not main.query("#status"):
            return  # the app is closing: its widgets are gone
        for view in (TaskFlow, Failures, StreamHealth, ConsumerLag, Workers):
            for panel in main.query(view):
                if isinstance(panel, Panel):
                    panel.update_view()
        self._update(main.query_one("#status", Static), self.status_line(), layout=False)
        banner = main.query_one("#alerts", Static)
        lines = self.alert_lines()
        banner.set_class(bool(lines), "active")
        text = "\n".join(lines)
        grew = text.count("\n") != str(getattr(banner, "_text", "")).count("\n")
        self._update(banner, text, layout=grew)

    def alert_lines(self, room: int = ALERT_LINES) -> list[str]:
        """The banner: alerts worst first; engine alerts that cleared lately where room is left.

        A cleared line tells whoever saw the alert that it ended, and when.
        """
        now = self.state.clock()
        alerts = self.state.alerts()
        lines = [
            f"[{'bold white on red' if a.severity == 'error' else 'bold black on yellow'}]"
            f" {'✖' if a.severity == 'error' else '⚠'} {escape(a.message)} [/]"
            for a in alerts[:room]
        ]
        if len(alerts) > room:
            lines[-1] += f"  [dim](+{len(alerts) - room} more)[/]"
        for cleared in self.state.recently_cleared()[: room - len(lines)]:
            lines.append(
                f"[green] ✔ cleared {clock_time(cleared.cleared_at, now)} "
                f"{escape(cleared.subject)} "
                f"after {age(cleared.raised_at, cleared.cleared_at)}: {escape(cleared.text)}[/]"
            )
        return lines

    def _update(self, widget: Static, text: str, layout: bool = True) -> None:
        """Set ``text`` only when it changed: a redraw at 10 Hz is not free, a layout less so.

        ``layout=False`` where the height cannot change (a one-line status).
        """
        if getattr(widget, "_text", None) != text:
            widget._text = text  # type: ignore[attr-defined]
            widget.update(text, layout=layout)

    def status_line(self, width: int | None = None) -> str:
        """The header, fitted to ``width`` (console.header); the #status line's own by default."""
        s = self.state
        markers = []
        if self.main.query_one(TaskFlow).paused:
            markers.append("[b black on yellow] PAUSED [/]")
        if s.unreadable:
            markers.append(f"[yellow]unreadable {sum(s.unreadable.values()):,}[/]")
        if self.connect and self.broker.role == "viewer":  # why its actions are refused
            markers.append("[b]viewer: read-only[/]")
        facts = HeaderFacts(self.backend, s.events, s.caught_up, s.counts(), tuple(markers))
        if width is None:
            width = self.main.query_one("#status").content_region.width or None
        return header_line(facts, width)

    # -- backend ------------------------------------------------------------------

    @work(exclusive=True, group="backend")
    async def start_backend(self) -> None:
        """Server (embedded or configured), a worker if wanted, then the pump."""
        settings = self.broker.settings
        try:
            if settings.embedded:
                server = await asyncio.to_thread(embedded.ensure, settings.data_dir)
                self.broker.embedded_server = server
                self.backend = (
                    f"embedded server {server.url} ({'started' if server.owned else 'reused'})"
                )
                self._start_worker(server.url)
            else:
                self.backend = redact(", ".join(settings.nats_url))
                if self.options.with_worker:
                    self._start_worker(None)
            if not self.broker.is_connected:
                where = self.backend
                self.backend += "  [yellow]connecting…[/]"
                await self.broker.startup()
                self.backend = where
                self.owns_connection = True
        except Exception as exc:
            self.backend = redact(f"[b red]cannot connect: {type(exc).__name__}: {exc}[/]")
            self.state.connection.connecting = False
            logger.exception("console cannot start")
            return
        self.state.connection.url = redact(self.broker.servers()[0]).removeprefix("nats://")
        self._apply_thresholds()
        self.pump = Pump(self.state, self.broker, self.options.since)
        self.pump.start()
        if settings.embedded:
            self.watch_embedded_server()

    @work(exclusive=True, group="embedded-server")
    async def watch_embedded_server(self) -> None:
        """Start the embedded server again when it dies under the console (on its last port:
        the connection and the worker find it by themselves). Quit stops the one running
        then, restarted or not, if the console started it (Connection.close releases it)."""
        while True:
            await asyncio.sleep(SERVER_CHECK_SECONDS)
            server = self.broker.embedded_server
            if server is None:  # the connection was closed: quitting
                return
            if not await asyncio.to_thread(server.exited):
                continue
            logger.warning("embedded nats-server pid %d exited; starting it again", server.pid)
            try:
                restarted = await asyncio.to_thread(embedded.ensure, self.broker.settings.data_dir)
            except embedded.EmbeddedServerError as exc:
                logger.warning("embedded nats-server did not start again: %s", exc)
                continue
            if self.broker.embedded_server is not server:  # closed meanwhile
                if restarted.owned:
                    await asyncio.to_thread(restarted.stop)
                return
            self.broker.embedded_server = restarted
            how = "restarted" if restarted.owned else "found running"
            worker = f" + worker pid {self.worker_process.pid}" if self.worker_process else ""
            self.backend = f"embedded server {restarted.url} ({how}, pid {restarted.pid}){worker}"

    def _start_worker(self, url: str | None) -> None:
        env = dict(os.environ)
        if url:
            env["ONEMANAGE_NATS_URL"] = url
            env["ONEMANAGE_CREDENTIALS_DIR"] = str(
                embedded.credentials_dir(self.broker.settings.data_dir)
            )
        log_path = self.broker.settings.data_dir / "console-worker.log"
        with os.fdopen(append_private(log_path), "ab") as log:
            self.worker_process = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "worker", "-p", "1"],
                env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=terminate_with_parent,
            )  # fmt: skip
        # The id its Workers group has: the host:pid of its `onemanage worker` command.
        self.backend += f" + worker {HOST}:{self.worker_process.pid}"

    async def stop_backend(self) -> None:
        """Worker first (it drains), then our connection; the server last, if unused."""
        self.workers.cancel_group(self, "embedded-server")  # no restart of what quit stops
        if self.pump is not None:
            pump, self.pump = self.pump, None
            await pump.stop()
        process, self.worker_process = self.worker_process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, 15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        if self.owns_connection:
            self.owns_connection = False
            with contextlib.suppress(Exception):
                await self.broker.shutdown()

    async def on_unmount(self) -> None:
        await self.stop_backend()

    async def action_quit(self) -> None:
        self.backend = "stopping..."
        await self.stop_backend()
        self.exit()

    # -- actions ------------------------------------------------------------------

    def action_help(self) -> None:
        states = self.main.query_one(Panels).states()
        self.push_screen(HelpScreen(self.all_bindings(), dict(self._keymap), states))

    def action_filter(self) -> None:
        while len(self.screen_stack) > 1:  # the filter belongs to the task flow
            self.pop_screen()
        field_ = self.main.query_one("#filter", Input)
        field_.value = self.main.query_one(TaskFlow).row_filter.text
        field_.add_class("active")
        field_.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":  # live, as it is typed
            self.main.query_one(TaskFlow).set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":  # Enter keeps the filter and closes the field
            self.main.query_one(TaskFlow).set_filter(event.value)
            self._close_filter()

    def _close_filter(self) -> None:
        self.main.query_one("#filter", Input).remove_class("active")
        self.refresh_views()
        self.main.query_one("#task-rows").focus()

    async def action_back(self) -> None:
        field_ = self.main.query_one("#filter", Input)
        if field_.has_class("active"):  # Esc clears the filter and closes the field
            field_.value = ""
            self.main.query_one(TaskFlow).set_filter("")
            self._close_filter()
        elif len(self.screen_stack) > 1:
            self.pop_screen()

    def action_pause(self) -> None:
        self.main.query_one(TaskFlow).toggle_pause()  # the title and status line say PAUSED
        self.refresh_bindings()  # the footer: Resume while paused, Pause while not
        self.refresh_views()  # show it now, not at the next tick

    def action_resume(self) -> None:
        self.action_pause()

    def on_row_list_chosen(self, event: RowList.Chosen) -> None:
        self.open_details(event.key)

    def open_details(self, key: str) -> None:
        """The detail of ``key``; one already on top is replaced, so details never stack."""
        fetch = functools.partial(monitor.artefact, self.broker) if self.connect else None
        screen = DetailScreen(self.state, key, fetch, self.action_log.about)
        if isinstance(self.screen, DetailScreen):
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def action_submit(self) -> None:
        if not self._can_submit():
            return

        def submitted(workflow_id: str | None) -> None:
            if workflow_id:
                self.notify(f"workflow {workflow_id[:8]} started", timeout=4)
                self.open_details(workflow_id)

        self.push_screen(SubmitScreen(Path.cwd(), self.broker), submitted)

    def _can_submit(self) -> bool:
        if self.connect and self.broker.is_connected:
            return True
        self.notify("not connected to a server", severity="error")
        return False

    @work(group="demo")
    async def action_demo(self) -> None:
        """Submit a generated layered PSD, so a new user sees a whole workflow.

        Each press is its own worker and its submission is shielded: a later press,
        or leaving, never cancels one half done (that stranded a workflow once).
        """
        if not self._can_submit():
            return
        from engine.services.samples import make_demo_psd
        from engine.submit import submit_psd

        data = await asyncio.to_thread(make_demo_psd)
        try:
            submission = await asyncio.shield(submit_psd(self.broker, data, "demo.psd"))
        except Exception as exc:
            self.notify(f"demo not submitted: {exc}", severity="error")
            return
        self.notify(f"demo workflow {submission.workflow_id[:8]} started", timeout=4)
        self.open_details(submission.workflow_id)

    # -- operator actions ---------------------------------------------------------

    def _apply_thresholds(self) -> None:
        """Stuck and gone mean what the engine's alerts mean (engine.alerts), one file for both.

        An offline view reads no settings: its state is all it shows.
        """
        try:
            limits = load_thresholds(self.broker.settings)
        except ThresholdsError as exc:  # `onemanage check` reports it too
            self.notify(f"{exc}; the defaults apply", title="alerts", severity="warning")
            return
        self.state.stuck_after_s = limits.stuck_after_s
        self.state.gone_after_s = limits.worker_gone_after_s

    def start_actions(self) -> None:
        """A tick follows the actions under way and marks stuck rows."""
        self.set_interval(1 / ACTIONS_HZ, self.follow_actions)

    def follow_actions(self) -> None:
        """Stuck rows marked, actions moved on from the events, the footer's keys kept true."""
        self.state.mark_stuck()
        for activity in self.action_log.follow(self.state):
            self.notify(activity.text, title=activity.name, timeout=8)
        row = self.action_row()
        keys = (id(self.screen), row.key if row else None, row.shown_state if row else None)
        if keys != self._action_keys:
            self._action_keys = keys
            self.refresh_bindings()

    def action_row(self) -> Row | None:
        """What an action acts on: the detail shown, else the selected row of a list."""
        screen = self.screen
        if isinstance(screen, DetailScreen):
            return screen.row
        if screen is self.main and isinstance(self.focused, RowList):
            return self.focused.current
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Pause or Resume, whichever applies; an operator action's key only where it applies.

        A detail screen leaves the list's own keys (filter, pause) to the list, so its
        footer has room for the actions on what it shows.
        """
        if action in ("filter", "pause", "resume") and isinstance(self.screen, DetailScreen):
            return False
        if action in ("pause", "resume") and self.screen_stack:
            flows = self.main.query(TaskFlow)
            paused = bool(flows) and flows.first().paused
            return paused == (action == "resume")
        if action == "act" and parameters:
            return actions.applies(str(parameters[0]), self.action_row())
        return True

    def action_act(self, name: str) -> None:
        self.act(name, self.action_row())

    def act(self, name: str, row: Row | None) -> None:
        """Refused (the role), or asked (what, to which id), then run; a copy just copies."""
        spec = actions.SPECS[name]
        if row is None or not spec.applies(row):
            self.notify(f"{spec.label}: nothing selected it applies to", severity="warning")
            return
        refusal = roles.refusal(self.broker.role, name)
        if refusal is not None:
            self.notify(
                f"{refusal}; for this console: onemanage-console --role operator",
                title=f"{spec.label} refused",
                severity="error",
                timeout=10,
            )
            return
        if not spec.acts:
            self.copy_to_clipboard(row.key)
            self.notify(f"copied {row.kind} id {row.key}", title="Copy id", timeout=10)
            return
        if not self._can_submit():
            return
        field_ = None
        if name == "download":
            field_ = str(actions.download_dir(row.key, Path.cwd()))
        key = row.key

        def answered(answer: str | None) -> None:
            if answer is not None:
                self.perform_action(name, key, Path(answer).expanduser() if answer else None)

        self.push_screen(ConfirmScreen(f"{spec.label}?", spec.question(row), field_), answered)

    @work(group="actions")
    async def perform_action(self, name: str, target: str, out: Path | None) -> None:
        """One confirmed action; shielded, so leaving a screen never cuts it half done."""
        activity = self.action_log.start(name, target)
        try:
            if name == "download":
                assert out is not None

                def progress(written: int, total: int) -> None:
                    activity.written = (written, total)
                    activity.text = f"download {target[:8]}: {written}/{total} files"

                written = await asyncio.shield(
                    download_artefacts(self.broker, target, out, progress)
                )
                activity.finished(f"{len(written)} files written to {out}")
            else:
                activity.accepted(await asyncio.shield(actions.perform(self.broker, name, target)))
                self.notify(activity.text, title=name, timeout=4)
        except (ActionRefused, PermissionDeniedError, DownloadError) as exc:
            activity.refused(str(exc))
        except Exception as exc:  # the server away, a timeout: said, never swallowed
            logger.exception("action %s on %s", name, target)
            activity.failed(redact(f"{type(exc).__name__}: {exc}"))
        if activity.ended:  # at once: the tick would say it too, a little later
            activity.notified = True
            self.notify(
                activity.text,
                title=name,
                severity="information" if activity.stage == "done" else "error",
                timeout=10,
            )

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "Submit a PSD", "Pick a .psd/.psb file and start its workflow", self.action_submit
        )
        yield SystemCommand(
            "Submit the demo PSD", "Generate a layered PSD and process it", self.action_demo
        )
        yield SystemCommand(
            "Filter tasks", "Filter the task flow (state:failed, task:NAME...)", self.action_filter
        )
        yield SystemCommand(
            "Pause / resume", "Freeze the task flow; counting goes on", self.action_pause
        )
        yield SystemCommand("Help: keys", "Every binding, its id and its keys", self.action_help)
        rows = self.main.query(RowList)
        current = next((r.current for r in rows if r.has_focus and r.current), None)
        if current is not None:
            yield SystemCommand(
                "Open details",
                f"The whole story of {current.name}",
                lambda: self.open_details(current.key),
            )
        target = screen.row if isinstance(screen, DetailScreen) else None
        if screen is self.main and isinstance(screen.focused, RowList):
            target = screen.focused.current
        for spec in actions.SPECS.values():
            if target is not None and spec.applies(target):
                yield SystemCommand(
                    f"{spec.label} {target.kind} {target.key[:8]}",
                    spec.question(target).splitlines()[0],
                    functools.partial(self.act, spec.name, target),
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onemanage-console", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('onemanage')}"
    )
    parser.add_argument("--since", type=parse_duration, default=timedelta(hours=1),
                        help="how much EVENTS history to replay at start (default 1h)")  # fmt: skip
    parser.add_argument("--with-worker", action="store_true",
                        help="also start a local worker when a server is configured "
                             "(default: only on the embedded server)")  # fmt: skip
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"key remapping file (default {console_config.default_path()})",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module defining your own event types, so they read as events "
        "(repeatable; default: none)",
    )
    parser.add_argument(
        "--role",
        choices=("operator", "viewer"),
        default="operator",
        help="whose credentials to connect with: operator submits and acts on tasks and "
        "workflows, viewer only watches (default: operator)",
    )
    args = parser.parse_args(argv)
    for module in args.imports:
        importlib.import_module(module)
    data_dir = private_dir(broker.settings.data_dir)
    log_path = data_dir / "console.log"
    logging.basicConfig(  # never stderr: it would draw over the screen
        filename=log_path,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log_path.chmod(PRIVATE_FILE)
    redact_logging()
    broker.role = args.role  # operator: watches, submits and acts; viewer: watches (engine.roles)
    options = ConsoleOptions(
        since=args.since, with_worker=args.with_worker, config_path=args.config
    )
    ConsoleApp(options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
