"""Operator actions from the console, driven by keys, on the real session server and workers.

Each test acts on what it made (its ids) and waits on conditions: the console's
state, its notifications, and the events EVENTS stored; never on a fixed time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from textual.pilot import Pilot
from textual.widgets import Static
from textual.widgets._footer import FooterKey

import console.app
from console import actions
from console.app import ConsoleApp, ConsoleOptions
from console.state import ConsoleState
from console.widgets.confirm import ConfirmScreen
from console.widgets.detail import DetailScreen
from console.widgets.task_flow import TaskRows
from engine.actions import ActionOutcome
from engine.alerts import Thresholds
from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.events.publisher import publish_event
from engine.events.schemas import (
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskQueued,
    TaskReplayed,
    TaskStarted,
    TaskSucceeded,
)
from engine.identity import utc_now
from engine.results import await_result
from engine.services.samples import make_demo_psd
from engine.settings import Settings, load_settings
from engine.submit import submit_psd
from tests.console.test_app import SIZE, text_of
from tests.support.harness import EventCollector, WorkerProcess, stored_events
from tests.support.tasks import add
from tests.support.waiting import until

pytestmark = pytest.mark.slow  # real consoles, real workers

AppPilot = Pilot[None]


class ToldApp(ConsoleApp):
    """The console, keeping every notification it showed: Textual forgets them as they
    time out (4 s for some), and a slow machine must not make a test miss one."""

    CSS_PATH = str(Path(console.app.__file__).parent / "console.tcss")  # the console's own

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[str] = []

    def notify(self, message: str, *args: Any, **kwargs: Any) -> None:
        self.told.append(str(message))
        super().notify(message, *args, **kwargs)


def said(app: ConsoleApp) -> list[str]:
    """Every notification the console showed, oldest first."""
    assert isinstance(app, ToldApp)
    return list(app.told)


def saying(app: ConsoleApp, *words: str) -> str | None:
    """The first notification with all of ``words``."""
    return next((m for m in said(app) if all(w in m for w in words)), None)


async def select(pilot: AppPilot, app: ConsoleApp, key: str) -> None:
    """Back on the task flow, its cursor on the row ``key``, as a person gets there."""
    while len(app.screen_stack) > 1:
        app.pop_screen()
    await until(pilot, lambda: any(r.key == key for r in app.query_one(TaskRows).rows))
    rows = app.query_one(TaskRows)
    rows.focus()
    await pilot.press("home")
    for _ in range(len(rows.rows)):
        if rows.current is not None and rows.current.key == key:
            return
        await pilot.press("down")
    raise AssertionError(f"row {key} is not in the task flow")


async def asked(pilot: AppPilot, app: ConsoleApp, key: str) -> ConfirmScreen:
    """Press ``key``: the confirmation comes up."""
    await pilot.press(key)
    screen = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmScreen) else 0)
    assert isinstance(screen, ConfirmScreen)
    return screen


def events_of(events: EventCollector, kind: type[BaseEvent], **fields: object) -> list[BaseEvent]:
    return events.matching(
        lambda e: isinstance(e, kind) and all(getattr(e, k, None) == v for k, v in fields.items())
    )


async def console_with_worker(app: ConsoleApp, pilot: AppPilot) -> None:
    await until(pilot, lambda: app.worker_process is not None and app.state.workers)
    await until(pilot, lambda: app.state.caught_up)


# -- the model: stuck rows and actions followed from events (no server) ----------------------


def test_a_workflow_is_stuck_past_the_alerts_threshold_and_no_longer_once_it_moves() -> None:
    start = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
    now = [start]
    state = ConsoleState(clock=lambda: now[0])
    assert state.stuck_after_s == Thresholds().stuck_after_s  # the alert's, not a second one
    common = {"workflow_id": "w" * 32, "filename": "a.psd", "correlation_id": "w" * 32}
    state.fold(PsdWorkflowSubmitted(**common, input_key="k", size_bytes=1, timestamp=start))
    now[0] = start + timedelta(seconds=state.stuck_after_s - 1)
    assert state.mark_stuck() == [] and state.rows["w" * 32].shown_state == "submitted"
    now[0] = start + timedelta(seconds=state.stuck_after_s)
    version = state.version
    assert state.mark_stuck() == ["w" * 32] and state.version == version + 1  # views redraw
    row = state.rows["w" * 32]
    assert row.shown_state == "stuck" and actions.applies("cancel", row)
    state.fold(PsdStepCompleted(**common, step="validate", duration_ms=1, timestamp=now[0]))
    assert state.mark_stuck() == [] and row.shown_state == "running"
    state.fold(PsdWorkflowFailed(**common, step="x", error_code="cancelled", error_message="m"))
    now[0] += timedelta(hours=1)
    assert state.mark_stuck() == [] and not actions.applies("cancel", row)
    assert actions.applies("retry", row) and actions.applies("resubmit", row)


def test_a_stuck_workflow_cancelled_leaves_failures_showing_it_failed_not_stuck() -> None:
    """The Failures panel redraws on failures_version: ending "stuck" must bump it."""
    start = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
    now = [start]
    state = ConsoleState(clock=lambda: now[0])
    common = {"workflow_id": "s" * 32, "filename": "a.psd", "correlation_id": "s" * 32}
    state.fold(PsdWorkflowSubmitted(**common, input_key="k", size_bytes=1, timestamp=start))
    now[0] = start + timedelta(seconds=state.stuck_after_s)
    assert state.mark_stuck() == ["s" * 32]
    failed = {"step": "queued", "error_code": "cancelled", "error_message": "m"}
    state.fold(PsdWorkflowFailed(**common, **failed))
    row = state.rows["s" * 32]
    assert row.shown_state == "stuck"  # until the next look: the mark is the tick's
    failures = state.failures_version
    state.mark_stuck()
    assert row.shown_state == "failed" and state.failures_version > failures


def test_a_workflow_kicked_before_it_is_announced_is_one_workflow_row() -> None:
    """Submission kicks first, then announces: the orchestrator's task events come first."""
    state = ConsoleState()
    wid = "k" * 32
    task = {"task_id": wid, "task_name": "psd.process", "correlation_id": wid}
    flow = {"workflow_id": wid, "filename": "a.psd", "correlation_id": wid}
    state.fold(TaskQueued(**task))
    state.fold(TaskStarted(**task, worker_id="w:1"))
    state.fold(PsdWorkflowSubmitted(**flow, input_key="k", size_bytes=1))
    state.fold(PsdWorkflowCompleted(**flow, duration_ms=5, manifest={}))
    state.fold(TaskSucceeded(**task, worker_id="w:1", duration_ms=6))
    row = state.rows[wid]
    assert (row.kind, row.name, row.state, row.worker) == (
        "workflow",
        "psd a.psd",
        "completed",
        "w:1",
    )
    assert list(state.rows) == [wid]


def test_an_activity_follows_its_new_row_to_the_end() -> None:
    state = ConsoleState()
    log = actions.ActionLog()
    replay = log.start("replay", "old" + "0" * 29)
    replay.accepted(ActionOutcome("replay", replay.target, "new" + "0" * 29, "queued as new"))
    assert log.follow(state) == [] and replay.stage == "queued"
    common = {"task_id": "new" + "0" * 29, "task_name": "t", "correlation_id": "c"}
    state.fold(TaskStarted(**common, worker_id="w:1"))
    assert log.follow(state) == [] and replay.text == "replayed as new00000…: running"
    state.fold(TaskSucceeded(**common, worker_id="w:1", duration_ms=2))
    assert log.follow(state) == [replay] and replay.text == "replayed as new00000…: succeeded"
    assert log.follow(state) == []  # told once
    assert log.about("old" + "0" * 29) == log.about("new" + "0" * 29) == [replay.text]


async def test_the_footer_and_the_palette_offer_what_applies_to_the_selected_row() -> None:
    """Offline: a stuck workflow selected offers cancel, a dead letter replay; never both."""
    state = ConsoleState()
    stuck, dead = "5" * 32, "d" * 32
    state.fold(
        PsdWorkflowSubmitted(
            workflow_id=stuck, filename="p.psd", correlation_id=stuck, input_key="k",
            size_bytes=1, timestamp=utc_now() - timedelta(hours=1),
        )
    )  # fmt: skip
    state.fold(
        TaskDeadLettered(
            task_id=dead, task_name="t", correlation_id=dead, stream="TASKS",
            consumer="workers", stream_seq=1, deliveries=3,
        )
    )  # fmt: skip
    # A broker of its own, never started: the process's one must not read its settings before
    # the session's server is up (the client fixture sets them).
    app = ToldApp(state=state, connect=False, connection=create_broker(Settings()))
    async with app.run_test(size=SIZE) as pilot:
        for key, offered in ((stuck, {"cancel", "resubmit", "copy"}), (dead, {"replay", "copy"})):
            await select(pilot, app, key)
            row = await until(pilot, app.action_row)
            assert row.key == key
            shown = {n for n in actions.SPECS if app.check_action("act", (n,))}
            assert shown == offered, key
            titles = {c.title for c in app.get_system_commands(app.screen)}
            for name in actions.SPECS:
                label = f"{actions.SPECS[name].label} {app.state.rows[key].kind} {key[:8]}"
                assert (label in titles) == (name in offered), label
        assert app.state.rows[stuck].shown_state == "stuck"
        await pilot.press("y")  # copy: reading, works offline too
        await until(pilot, lambda: saying(app, "copied task id", dead))
        # In a detail at 100 columns its actions show whole: the list's keys step aside.
        await pilot.resize_terminal(100, 30)
        app.open_details(stuck)
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        await pilot.pause()
        keys = [k for k in app.screen.query(FooterKey) if k.display and k.region.width]
        shown = {k.description for k in keys}
        assert {"Cancel", "Resubmit", "Copy"} <= shown and not {"Filter", "Pause"} & shown, shown
        where = [(k.description, k.region.right) for k in keys]
        assert max(right for _, right in where) <= 100, where


# -- submission that cannot strand -------------------------------------------------------


async def test_three_quick_presses_of_d_make_three_completed_workflows(
    client: OneManageBroker, events: EventCollector
) -> None:
    app = ToldApp(ConsoleOptions(since=timedelta(seconds=5), with_worker=True))
    async with app.run_test(size=SIZE) as pilot:
        await console_with_worker(app, pilot)
        await pilot.press("d", "d", "d")  # as fast as keys come: nothing in between

        def started() -> list[str]:
            return [m for m in said(app) if m.startswith("demo workflow ")]

        await until(pilot, lambda: len(started()) == 3, 120)
        submitted = events_of(events, PsdWorkflowSubmitted, filename="demo.psd")
        ids = {e.workflow_id for e in submitted if isinstance(e, PsdWorkflowSubmitted)}
        assert len(ids) == 3, ids
        assert sorted(i[:8] for i in ids) == sorted(m.split()[2] for m in started())

        def all_completed() -> bool:
            rows = [app.state.rows.get(i) for i in ids]
            return all(r is not None and r.state == "completed" for r in rows)

        await until(pilot, all_completed, 180)
        assert not [app.state.rows[i] for i in ids if app.state.rows[i].stuck]
        # Each press opened its details over the last: one detail screen, never a stack.
        assert [type(s) for s in app.screen_stack[1:]] == [DetailScreen]
        assert isinstance(app.screen, DetailScreen) and app.screen.key in ids
        await pilot.press("q")
    stored = await stored_events(client, "events.psd.>", timedelta(minutes=5))
    for workflow_id in ids:
        outcomes = [
            e for e in stored
            if isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed)
            and e.workflow_id == workflow_id
        ]  # fmt: skip
        assert [type(e) for e in outcomes] == [PsdWorkflowCompleted]


# -- cancel ------------------------------------------------------------------------------


async def test_a_stuck_workflow_cancelled_from_the_console_ends_once_cancelled(
    client: OneManageBroker, events: EventCollector
) -> None:
    """Announced, never kicked: no worker will ever move it. Stuck, then cancelled."""
    workflow_id = uuid.uuid4().hex
    await publish_event(
        client,
        PsdWorkflowSubmitted(
            workflow_id=workflow_id,
            filename="never-kicked.psd",
            input_key=f"{workflow_id}/input",
            size_bytes=1,
            correlation_id=workflow_id,
            timestamp=utc_now() - timedelta(minutes=30),  # older than the stuck threshold
        ),
    )
    app = ToldApp(ConsoleOptions(since=timedelta(minutes=1), with_worker=True))
    async with app.run_test(size=SIZE) as pilot:
        await console_with_worker(app, pilot)
        await until(pilot, lambda: (row := app.state.rows.get(workflow_id)) and row.stuck)
        await select(pilot, app, workflow_id)
        assert app.query_one(TaskRows).current.shown_state == "stuck"  # type: ignore[union-attr]
        question = await asked(pilot, app, "x")
        assert workflow_id in question.body and "stuck" in question.body
        await pilot.press("y")
        ended = await until(pilot, lambda: saying(app, "cancelled: workflow ended failed"), 120)
        assert ended == "cancelled: workflow ended failed, code cancelled"
        row = app.state.rows[workflow_id]
        assert (row.state, row.error_type, row.stuck) == ("failed", "cancelled", False)
        app.open_details(workflow_id)
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert app.action_log.about(workflow_id) == [ended]
        header = await until(pilot, lambda: text_of(app.screen.query_one("#detail-header", Static)))
        assert ended in header and " failed " in header
        await pilot.press("q")
    failed = [
        e for e in await stored_events(client, "events.psd.workflow.failed", timedelta(minutes=5))
        if isinstance(e, PsdWorkflowFailed) and e.workflow_id == workflow_id
    ]  # fmt: skip
    assert [e.error_code for e in failed] == ["cancelled"]


# -- replay ------------------------------------------------------------------------------


async def test_a_dead_letter_replayed_from_the_console_runs_linked_to_it(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    """test.add kicked where no worker knows it ends a dead letter; replayed, a worker that
    knows it runs it."""
    stranger = start_workers(modules=("engine.builtin",))
    await stranger.ready(events)
    kicked = await add.kiq(2, 3)
    (dead,) = await events.wait_for(
        lambda e: isinstance(e, TaskDeadLettered) and e.task_id == kicked.task_id, timeout=120
    )
    await asyncio.to_thread(stranger.stop)
    knower = start_workers()
    await knower.ready(events)
    app = ToldApp(ConsoleOptions(since=timedelta(minutes=2)))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: (r := app.state.rows.get(kicked.task_id)) and r.failed)
        await select(pilot, app, kicked.task_id)
        question = await asked(pilot, app, "R")
        assert kicked.task_id in question.body
        await pilot.press("y")
        (replayed,) = await events.wait_for(
            lambda e: isinstance(e, TaskReplayed) and e.replay_of == kicked.task_id, timeout=60
        )
        assert isinstance(replayed, TaskReplayed)
        new_id = replayed.new_task_id
        await events.wait_for(
            lambda e: isinstance(e, TaskSucceeded) and e.task_id == new_id, timeout=60
        )
        text = await until(pilot, lambda: saying(app, f"replayed as {new_id[:8]}", "succeeded"))
        assert text
        assert events_of(events, TaskStarted, task_id=new_id)
        assert replayed.correlation_id == dead.correlation_id  # the original's trace has it
        result = await await_result(client, new_id, 30)
        assert result.return_value == 5  # the stored payload ran: add(2, 3)
        # Dealt with: the original's row says so, and the banner no longer counts it.
        original = app.state.rows[kicked.task_id]
        await until(pilot, lambda: original.shown_state == "replayed")
        assert kicked.task_id in app.state.replayed
        waiting = app.state.outcomes["dead_lettered"] - len(app.state.replayed)
        banner = [a.message for a in app.state.alerts() if "dead-lettered" in a.message]
        assert banner == ([f"{waiting} dead-lettered task(s) not replayed"] if waiting else [])
        app.open_details(kicked.task_id)
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        assert any(new_id[:8] in line for line in app.action_log.about(kicked.task_id))

        def header() -> str:
            return text_of(app.screen.query_one("#detail-header", Static))

        # The link is the events' (TaskReplayed), not only this console's memory of it.
        await until(pilot, lambda: f"replayed as {new_id}" in header())
        await pilot.press("q")


# -- retry, resubmit, download, copy ------------------------------------------------------


async def test_retry_and_resubmit_make_new_linked_workflows_and_download_writes_files(
    client: OneManageBroker, events: EventCollector, tmp_path: Path
) -> None:
    broken = (await submit_psd(client, make_demo_psd()[:300], "broken.psd")).workflow_id
    good = (await submit_psd(client, make_demo_psd(), "good.psd")).workflow_id
    app = ToldApp(ConsoleOptions(since=timedelta(minutes=1), with_worker=True))
    async with app.run_test(size=SIZE) as pilot:
        await console_with_worker(app, pilot)
        await until(pilot, lambda: (r := app.state.rows.get(broken)) and r.state == "failed", 120)
        await until(pilot, lambda: (r := app.state.rows.get(good)) and r.state == "completed", 120)

        made = {}
        for key, name, target in (("r", "retry", broken), ("u", "resubmit", good)):
            await select(pilot, app, target)
            question = await asked(pilot, app, key)
            assert target in question.body
            await pilot.press("y")
            # Announced by the console and again by its orchestrator, under one event id.
            found = await events.wait_for(
                lambda e, t=target: isinstance(e, PsdWorkflowSubmitted) and e.resubmitted_from == t,
                timeout=60,
            )
            made[name] = found[0].workflow_id  # type: ignore[attr-defined]
        assert made["retry"] != broken and made["resubmit"] != good
        for name, target in (("retry", broken), ("resubmit", good)):
            again = events_of(events, PsdWorkflowSubmitted, resubmitted_from=target)
            assert {e.workflow_id for e in again} == {made[name]}  # type: ignore[attr-defined]
        # The retry of a broken file fails again, the resubmit of a good one completes:
        # the console follows each to its end and says so.
        retried = await until(
            pilot, lambda: saying(app, f"retried as {made['retry'][:8]}", "failed"), 120
        )
        assert retried.startswith(f"retried as {made['retry'][:8]}…: failed (truncated: "), retried
        resubmitted = await until(
            pilot, lambda: saying(app, f"resubmitted as {made['resubmit'][:8]}", "completed"), 120
        )
        assert resubmitted == f"resubmitted as {made['resubmit'][:8]}…: completed"

        # Download, from the detail view, to a place typed over the default.
        app.open_details(good)
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        question = await asked(pilot, app, "w")
        field = question.query_one("#confirm-field")
        assert field.value == str(Path.cwd() / good[:8])  # type: ignore[attr-defined]
        out = tmp_path / "artefacts"
        field.value = str(out)  # type: ignore[attr-defined]
        await pilot.press("enter")
        written = await until(pilot, lambda: saying(app, "files written to", str(out)), 60)
        count = int(written.split()[0])
        files = [p for p in out.rglob("*") if p.is_file()]
        assert len(files) == count and (out / "manifest.json").exists()
        assert Image.open(out / "preview.png").size == (800, 600)
        assert app.action_log.about(good)[-1] == written  # the detail view shows it too

        # Copy: the full id, in the notification too (tmux may not pass the clipboard on).
        await pilot.press("y")
        copied = await until(pilot, lambda: saying(app, "copied", good))
        assert copied.endswith(good)
        await pilot.press("q")


# -- the viewer ---------------------------------------------------------------------------


@pytest.fixture
async def viewer(nats_server: object, client: OneManageBroker) -> AsyncIterator[OneManageBroker]:
    """A connection of another process, as the generated viewer credentials allow."""
    connection = create_broker(load_settings())
    connection.role = "viewer"
    await connection.startup()
    yield connection
    await connection.shutdown()


async def test_a_viewer_console_is_refused_each_action_before_it_asks(
    client: OneManageBroker, viewer: OneManageBroker
) -> None:
    """Nothing is asked and nothing is sent: the server never sees a forbidden publish."""
    stem = uuid.uuid4().hex[:24]
    running, failed, dead = f"{stem}aaaaaaaa", f"{stem}bbbbbbbb", f"{stem}cccccccc"
    for workflow_id in (running, failed):
        common = {"workflow_id": workflow_id, "filename": "v.psd", "correlation_id": workflow_id}
        await publish_event(
            client, PsdWorkflowSubmitted(**common, input_key=f"{workflow_id}/in", size_bytes=1)
        )
    await publish_event(
        client,
        PsdWorkflowFailed(
            workflow_id=failed, filename="v.psd", correlation_id=failed, step="validate",
            error_code="truncated", error_message="short",
        ),
    )  # fmt: skip
    await publish_event(
        client,
        TaskDeadLettered(
            task_id=dead, task_name="test.add", correlation_id=dead, stream="TASKS",
            consumer="workers", stream_seq=1, deliveries=3,
        ),
    )  # fmt: skip
    app = ToldApp(ConsoleOptions(since=timedelta(minutes=1)), connection=viewer)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: all(k in app.state.rows for k in (running, failed, dead)))
        assert "viewer: read-only" in app.status_line(80)  # the header says why, at any width
        for target, key, action in (
            (running, "x", "cancel"),
            (failed, "r", "retry"),
            (failed, "u", "resubmit"),
            (dead, "R", "replay"),
        ):
            before = len(said(app))
            await select(pilot, app, target)
            await pilot.press(key)
            refusal = await until(pilot, lambda b=before: said(app)[b:])
            assert "the viewer role may not" in refusal[0], (action, refusal)
            assert not isinstance(app.screen, ConfirmScreen)
        # Reading is a viewer's: the id is still copied.
        await select(pilot, app, failed)
        await pilot.press("y")
        await until(pilot, lambda: saying(app, "copied", failed))
