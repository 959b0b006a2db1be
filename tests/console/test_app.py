"""The console against the real session nats-server and a real worker, driven by keys."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from rich.console import Console
from textual.widgets import Static

from console.app import ConsoleApp, ConsoleOptions
from console.format import duration
from console.state import Row
from console.widgets.detail import DetailScreen
from console.widgets.failures import FailureRows
from console.widgets.help import HelpScreen
from console.widgets.streams import StreamHealth
from console.widgets.submit import SubmitScreen
from console.widgets.task_flow import TaskFlow, TaskRows
from console.widgets.workers import Workers
from engine import embedded
from engine.broker import OneManageBroker
from engine.embedded import EmbeddedServer
from engine.events.publisher import publish_event
from engine.events.schemas import (
    AlertCleared,
    AlertRaised,
    BaseEvent,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
)
from engine.events.stats import fold_task_events
from engine.events.windows import window
from engine.services.samples import make_demo_psd
from engine.settings import Settings
from tests.conftest import NatsServer
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.slow  # real apps on the session server; some start a worker

SIZE = (160, 45)


async def publish_history(client: OneManageBroker, correlation: str, tasks: int) -> list[str]:
    """Real events on EVENTS for ``tasks`` tasks, half succeeded, half failed."""
    ids = []
    for n in range(tasks):
        task_id = f"{correlation}-{n}"
        ids.append(task_id)
        common = {"task_id": task_id, "task_name": "history.task", "correlation_id": correlation}
        await publish_event(client, TaskQueued(**common))
        await publish_event(client, TaskStarted(**common, worker_id="old:1"))
        if n % 2:
            failed = TaskFailed(
                **common, worker_id="old:1", duration_ms=5, error_type="ValueError",
                error_message="boom",
            )  # fmt: skip
            await publish_event(client, failed)
        else:
            await publish_event(client, TaskSucceeded(**common, worker_id="old:1", duration_ms=5))
    return ids


def text_of(panel: Static) -> str:
    """A panel's content as the screen shows it, in plain text."""
    console = Console(width=panel.content_size.width or 68, file=io.StringIO(), record=True)
    console.print(panel.content)
    return console.export_text()


def rows_of(app: ConsoleApp, correlation: str) -> list[Row]:
    return [r for r in app.state.rows.values() if r.correlation_id == correlation]


async def test_it_opens_populated_from_history(client: OneManageBroker) -> None:
    correlation = uuid.uuid4().hex
    ids = await publish_history(client, correlation, 6)
    app = ConsoleApp(ConsoleOptions(since=timedelta(minutes=5)))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.caught_up and len(rows_of(app, correlation)) == 6)
        states = {r.key: r.state for r in rows_of(app, correlation)}
        assert states == {i: ("failed" if n % 2 else "succeeded") for n, i in enumerate(ids)}

        def listed() -> bool:  # after a refresh of both lists
            shown = {r.key for r in app.query_one(TaskRows).rows}
            failures = {r.key for r in app.query_one(FailureRows).rows}
            return set(ids) <= shown and {ids[1], ids[3], ids[5]} <= failures

        await until(pilot, listed)
        await until(pilot, lambda: app.state.connection.connected and app.state.streams)


async def test_demo_completes_and_enter_opens_its_trace(client: OneManageBroker) -> None:
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5), with_worker=True))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.workers and app.worker_process is not None)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        workflow_id = app.screen.key
        await until(
            pilot, lambda: (row := app.state.rows.get(workflow_id)) and row.state == "completed"
        )
        row = app.state.rows[workflow_id]
        assert row.manifest and row.manifest["document"]["width"] == 800
        assert [step for step, _ in row.steps] == ["validate", "parse", "preview", "export"]

        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen))
        rows = app.query_one(TaskRows)
        rows.focus()
        await pilot.press("home")
        for _ in range(len(rows.rows)):
            if rows.current is not None and rows.current.key == workflow_id:
                break
            await pilot.press("down")
        assert rows.current is not None and rows.current.key == workflow_id
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert app.screen.key == workflow_id

        def whole() -> list[BaseEvent]:  # the orchestrator's own success comes through an outbox
            trace = app.state.trace(workflow_id)
            ended = any(isinstance(e, TaskSucceeded) and e.task_id == workflow_id for e in trace)
            return trace if ended else []

        trace = await until(pilot, whole)
        # In time order the outcome is the workflow's last event: after it only the success of
        # psd.process itself (whose task id is the workflow's).
        kinds = [e.event_type for e in trace]
        assert kinds.count("psd.workflow.completed") == 1
        after = trace[kinds.index("psd.workflow.completed") + 1 :]
        assert [(e.event_type, getattr(e, "task_id", None)) for e in after] == [
            ("task.succeeded", workflow_id)
        ]
        await pilot.press("q")  # stops the worker it started


async def test_a_broken_file_becomes_a_failure_row(client: OneManageBroker, tmp_path: Path) -> None:
    not_psd = tmp_path / "notes.psd"
    not_psd.write_text("this is text")
    broken = tmp_path / "broken.psd"
    broken.write_bytes(make_demo_psd()[:300])
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5), with_worker=True))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.workers)
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SubmitScreen))
        path_input = app.screen.query_one("#submit-path")
        path_input.focus()
        path_input.value = str(not_psd)
        await pilot.press("enter")
        message = app.screen.query_one("#submit-message")
        await until(pilot, lambda: "not a PSD" in str(message.render()))
        assert isinstance(app.screen, SubmitScreen)  # refused here, nothing uploaded

        path_input.value = str(broken)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        workflow_id = app.screen.key
        await until(pilot, lambda: workflow_id in app.state.failures)
        failure = app.state.failures[workflow_id]
        assert (failure.step, failure.error_type) == ("validate", "truncated")
        await pilot.press("escape")
        await until(pilot, lambda: workflow_id in {r.key for r in app.query_one(FailureRows).rows})
        await pilot.press("q")


async def test_filter_and_pause(client: OneManageBroker) -> None:
    correlation = uuid.uuid4().hex
    await publish_history(client, correlation, 8)
    app = ConsoleApp(ConsoleOptions(since=timedelta(minutes=5)))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(rows_of(app, correlation)) == 8)
        await pilot.press("slash")
        for key in f"state:failed {correlation[:12]}":
            await pilot.press("space" if key == " " else key)
        await pilot.press("enter")
        rows = app.query_one(TaskRows)
        await until(pilot, lambda: len(rows.rows) == 4)
        assert all(r.state == "failed" for r in rows.rows)
        assert "filter: state:failed" in str(app.query_one(TaskFlow).border_title)

        await pilot.press("slash")
        app.query_one("#filter").value = f"-state:failed {correlation[:12]}"
        await pilot.press("enter")
        await until(pilot, lambda: {r.state for r in rows.rows} == {"succeeded"})

        await pilot.press("space")
        assert app.query_one(TaskFlow).paused
        shown = [r.key for r in rows.rows]
        seen = app.state.events
        late = uuid.uuid4().hex
        await publish_history(client, late, 2)
        await until(pilot, lambda: app.state.events >= seen + 6)  # counted while paused
        app.query_one("#filter").value = ""
        flow = app.query_one(TaskFlow)
        # A refresh ran since: the title counts the rows the paused list does not show.
        await until(pilot, lambda: f"({len(app.state.rows):,} kept" in str(flow.border_title))
        assert [r.key for r in rows.rows] == shown  # but the list waits
        await pilot.press("space")
        assert not app.query_one(TaskFlow).paused
        await pilot.press("slash")
        app.query_one("#filter").value = late
        await pilot.press("enter")
        await until(pilot, lambda: len(rows.rows) == 2)


async def test_an_engine_alert_shows_in_the_banner_until_it_clears(
    client: OneManageBroker,
) -> None:
    """The raise read from history, then its escalation and its clear live, as the engine sends."""
    alert_id, about = uuid.uuid4().hex, f"TASKS/lagging-{uuid.uuid4().hex[:8]}"
    common = {"alert_id": alert_id, "rule": "consumer_lag", "about": about}
    raised = AlertRaised(**common, severity="warning", text="backlog 600 for 2m")
    await publish_event(client, raised)
    app = ConsoleApp(ConsoleOptions(since=timedelta(minutes=5)))
    async with app.run_test(size=SIZE) as pilot:
        banner = app.main.query_one("#alerts")

        def shown() -> str:
            return str(banner.render())

        await until(pilot, lambda: f"ALERT consumer_lag {about}: backlog 600 for 2m" in shown())
        assert banner.has_class("active")

        await publish_event(
            client, AlertRaised(**common, severity="critical", text="backlog 9000", escalated=True)
        )
        await until(pilot, lambda: f"ALERT consumer_lag {about}: backlog 9000" in shown())
        assert "backlog 600" not in shown()

        await publish_event(
            client, AlertCleared(**common, text="backlog 0", raised_at=raised.timestamp)
        )
        await until(pilot, lambda: f"ALERT consumer_lag {about}" not in shown())
        assert alert_id not in app.state.raised_alerts
        # Under the alerts, where the banner has room (other tests' history may fill it).
        (cleared,) = [line for line in app.alert_lines(room=20) if about in line]
        assert "cleared" in cleared and "after" in cleared and "backlog 0" in cleared


async def test_the_workers_panel_shows_the_engines_task_statistics(
    client: OneManageBroker,
) -> None:
    """Folded into the shared bucket the way the task-stats listener does, read by the pump."""
    name = f"st.{uuid.uuid4().hex[:8]}"  # short: the name column has a dozen cells
    now = datetime.now(UTC)
    events: list[TaskEvent] = []
    for n, (waited_ms, ran_ms) in enumerate([(3.0, 40.0), (5.0, 60.0), (8.0, 2500.0)]):
        common = {"task_id": f"{name}-{n}", "task_name": name}
        started = now + timedelta(milliseconds=waited_ms)
        events += [
            TaskQueued(**common, timestamp=now),
            TaskStarted(**common, worker_id="w:1", queued_at=now, timestamp=started),
            TaskSucceeded(**common, worker_id="w:1", duration_ms=ran_ms, timestamp=started),
        ]
    events.append(
        TaskFailed(task_id=f"{name}-x", task_name=name, worker_id="w:1", duration_ms=7.0,
                   error_type="ValueError", error_message="boom", timestamp=now)
    )  # fmt: skip
    stored, _ = await fold_task_events(client, events)
    hour = window(stored.recent, datetime.now(UTC))
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5)))
    async with app.run_test(size=SIZE) as pilot:
        panel = app.query_one(Workers)
        line = await until(
            pilot, lambda: next((ln for ln in text_of(panel).splitlines() if name in ln), "")
        )
        figures = [f"{hour.succeeded}", f"{hour.failed}"]
        figures += [duration(hour.wait_ms(q)) for q in (50, 95)]
        figures += [duration(hour.run_ms(q)) for q in (50, 95, 99)]
        assert line.split(name, 1)[1].split() == " ".join(figures).split(), line
        assert figures[:2] == ["3", "1"] and app.state.stats_error is None


async def test_remapped_keys(client: OneManageBroker, tmp_path: Path) -> None:
    config = tmp_path / "console.toml"
    config.write_text('[keys]\npause = "p"\nhelp = "f1"\nno_such_action = "x"\n')
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5), config_path=config))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        assert app.query_one(TaskFlow).paused
        await pilot.press("space")  # no longer bound to pause
        assert app.query_one(TaskFlow).paused
        assert app.config_problems and "no_such_action" in app.config_problems[0]
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "p" in app.screen.keymap.get("pause", "")
        await pilot.press("escape")
        await pilot.press("question_mark")  # the old help key is gone
        await pilot.pause()  # until the app is idle: the key was handled
        assert not isinstance(app.screen, HelpScreen)


async def test_a_lost_server_shows_a_banner_and_the_app_reconnects(
    nats_server: NatsServer, client: OneManageBroker
) -> None:
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5)))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.state.connection.connected and app.state.streams)
        await until(pilot, lambda: app.state.stats_read_at is not None)
        nats_server.kill()
        await until(pilot, lambda: not app.state.connection.connected, timeout=30)
        alerts = app.main.query_one("#alerts")
        await until(pilot, lambda: "unreachable" in str(alerts.render()), timeout=30)
        assert alerts.has_class("active")
        workers = app.query_one(Workers)
        await until(pilot, lambda: "statistics unavailable" in text_of(workers), timeout=30)

        nats_server.restart()
        await until(pilot, lambda: app.state.connection.connected, timeout=30)
        # The statistics loop went on through the failures: read again, the error gone.
        await until(pilot, lambda: app.state.stats_error is None, timeout=30)
        await until(pilot, lambda: "statistics unavailable" not in text_of(workers), timeout=30)
        correlation = uuid.uuid4().hex
        await until(pilot, lambda: client.is_connected, timeout=30)
        await publish_history(client, correlation, 2)
        await until(pilot, lambda: len(rows_of(app, correlation)) == 2, timeout=60)
        assert app.state.connection.disconnects >= 1


async def test_the_first_frames_say_connecting_until_the_server_answers(tmp_path: Path) -> None:
    """A server that accepts and never speaks: "connecting…", no "unreachable" banner, until
    the attempt times out; then the answer, and the banner."""
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    settings = Settings(nats_url=[f"nats://127.0.0.1:{port}"], connect_timeout=1.0,
                        data_dir=tmp_path)  # fmt: skip
    app = ConsoleApp(
        ConsoleOptions(since=timedelta(seconds=5)), connection=OneManageBroker(settings)
    )
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            banner = app.main.query_one("#alerts")
            assert "connecting…" in app.status_line()
            assert "unreachable" not in str(banner.render())
            assert "connecting…" in text_of(app.query_one(StreamHealth))
            await until(pilot, lambda: "cannot connect" in app.backend, timeout=60)
            await until(pilot, lambda: "unreachable" in str(banner.render()))
    finally:
        silent.close()


async def test_a_normal_start_goes_from_connecting_to_connected(client: OneManageBroker) -> None:
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5)))
    async with app.run_test(size=SIZE) as pilot:
        assert app.state.connection.connecting or app.state.connection.connected
        await until(pilot, lambda: app.state.connection.connected)
        assert not app.state.connection.connecting
        assert "connecting…" not in app.status_line()
        assert not any("unreachable" in a.message for a in app.state.alerts())


async def test_quit_stops_the_embedded_server_restarted_under_the_console(tmp_path: Path) -> None:
    """Its server killed by pid, the console starts it again on the same port and goes on;
    quit stops the new one (the console started it), by its pid."""
    settings = Settings(nats_url=[], credentials_dir=None, data_dir=tmp_path / "data")
    own = OneManageBroker(settings)
    own.role = "operator"
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5)), connection=own)
    pids: list[int] = []
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.state.connection.connected, timeout=60)
            first = own.embedded_server
            assert first is not None and first.owned
            pids.append(first.pid)
            os.kill(first.pid, signal.SIGKILL)

            def restarted() -> EmbeddedServer | None:
                server = own.embedded_server
                return server if server is not None and server.pid != first.pid else None

            again = await until(pilot, restarted, timeout=60)
            pids.append(again.pid)
            assert again.owned and again.port == first.port
            assert f"restarted, pid {again.pid}" in app.backend
            await until(pilot, lambda: own.is_connected and app.state.connection.connected,
                        timeout=60)  # fmt: skip
            await pilot.press("q")
        await eventually(lambda: not psutil.pid_exists(again.pid), 30, "the restarted server")
        assert embedded.find_running(settings.data_dir) is None
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if app.worker_process is not None and app.worker_process.poll() is None:
            os.killpg(app.worker_process.pid, signal.SIGKILL)
