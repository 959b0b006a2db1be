"""Snapshots of the console's screens: main, a completed workflow's details, help.

Everything on screen is pinned: a fixed terminal size, a state folded from real event
objects with fixed ids and timestamps, a frozen clock, UTC as the local time zone, no
config file, and the artefacts the real PSD services make of the demo file. Regenerate
with ``pytest tests/console/test_snapshots.py --snapshot-update`` and look at the SVGs in
``tests/console/__snapshots__/test_snapshots/`` before committing them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import TabbedContent

from console.app import ConsoleApp
from console.state import ConsoleState
from console.widgets.detail import DetailScreen, LayerTree
from console.widgets.image import ImageView
from engine.events.schemas import (
    AlertCleared,
    AlertRaised,
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
    UnparsedEvent,
    WorkerHeartbeat,
)
from engine.events.stats import TaskTypeStats
from engine.monitor import ConsumerFigures, StreamFigures
from engine.routing import DEFAULT_LANE, WORKFLOW_LANE
from engine.services import psd
from engine.services.samples import make_demo_psd

SIZE = (160, 45)
NARROW = (100, 30)
SMALL = (80, 24)
FIXED_NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
START = FIXED_NOW - timedelta(minutes=10)
WF_OK = "7f3c9a1e5b2d4c6e8f0a1b2c3d4e5f60"
WF_BAD = "c0ffee00d15ea5e5deadbeef00000042"
TREE_KEY = f"{WF_OK}/layers.json"
PREVIEW_KEY = f"{WF_OK}/preview.png"
THUMBNAIL_KEY = f"{WF_OK}/thumbnail.png"
ORCHESTRATOR = "render-01:4242"
STEP_WORKER = "render-02:4310"
STEPS = (
    ("validate", "psd.validate", 14.2),
    ("parse", "psd.parse", 52.8),
    ("preview", "psd.preview", 812.5),
    ("export", "psd.export_layers", 236.0),
)
Fetcher = Callable[[str], Awaitable[bytes]]


class Clock:
    """The state's clock: moved while the figures are polled, then frozen at FIXED_NOW."""

    def __init__(self) -> None:
        self.now = FIXED_NOW

    def __call__(self) -> datetime:
        return self.now


class Events:
    """Real event objects with fixed ids, sources and times (offsets in seconds from START)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, cls: type[BaseEvent], seconds: float, **fields: Any) -> BaseEvent:
        self.count += 1
        fields.setdefault("source", ORCHESTRATOR)
        return cls(
            event_id=f"{self.count:032x}",
            timestamp=START + timedelta(seconds=seconds),
            **fields,
        )


def artefacts() -> dict[str, bytes]:
    """What the real PSD services make of the demo file: layer tree JSON and preview PNG."""
    data = make_demo_psd()
    preview = psd.render_preview(data)
    return {
        TREE_KEY: psd.parse(data).model_dump_json().encode(),
        PREVIEW_KEY: preview.png,
        THUMBNAIL_KEY: preview.thumbnail_png,
    }


def manifest(store: dict[str, bytes]) -> dict[str, Any]:
    """The manifest the workflow publishes, its facts taken from the real layer tree."""
    tree = psd.LayerTree.model_validate_json(store[TREE_KEY])
    kinds: dict[str, int] = {}
    for layer in tree.layers:
        kinds[layer.kind] = kinds.get(layer.kind, 0) + 1
    document = tree.document
    return {
        "workflow_id": WF_OK,
        "filename": "demo.psd",
        "document": document.model_dump(mode="json"),
        "layers": {
            "tree_key": TREE_KEY,
            "layers": len(tree.layers),
            "by_kind": dict(sorted(kinds.items())),
            "visible": sum(layer.effective_visible for layer in tree.layers),
            "max_depth": max(layer.depth for layer in tree.layers) + 1,
            "top_level": [layer.name for layer in tree.layers if layer.parent_id is None],
            "fonts": [],
        },
        "preview": {
            "key": PREVIEW_KEY,
            "thumbnail_key": THUMBNAIL_KEY,
            "width": document.width,
            "height": document.height,
            "source": "composite",
        },
        "layer_images": [],
    }


def workflow(ev: Events, wid: str, filename: str, t: float, **outcome: Any) -> list[BaseEvent]:
    """A PSD workflow as the engine publishes it; ``fail_at`` stops it at that step."""
    fail_at = outcome.get("fail_at")
    common = {"workflow_id": wid, "filename": filename, "correlation_id": wid}
    events = [
        ev(PsdWorkflowSubmitted, t, **common, input_key=f"sha256-{wid[:12]}", size_bytes=48_211),
        ev(TaskQueued, t + 0.004, task_id=wid, task_name="psd.process", correlation_id=wid),
        ev(TaskStarted, t + 0.011, task_id=wid, task_name="psd.process",
           worker_id=ORCHESTRATOR, correlation_id=wid, queued_at=START + timedelta(0, t + 0.004)),
    ]  # fmt: skip
    now = t + 0.012
    for index, (step, task, ms) in enumerate(STEPS):
        ids = {"task_id": f"{wid[:24]}{index:08d}", "task_name": task, "correlation_id": wid}
        events += [
            ev(TaskQueued, now + 0.001, **ids, causation_id=wid),
            ev(TaskStarted, now + 0.003, **ids, worker_id=STEP_WORKER, source=STEP_WORKER,
               queued_at=START + timedelta(0, now + 0.001)),
        ]  # fmt: skip
        done = now + 0.003 + ms / 1000
        if step == fail_at:
            events += [
                ev(TaskFailed, done, **ids, worker_id=STEP_WORKER, source=STEP_WORKER,
                   duration_ms=ms, error_type="PsdError",
                   error_message="corrupt: layer 7 channel data ends early"),
                ev(PsdWorkflowFailed, done + 0.002, **common, step=step, error_code="corrupt",
                   error_message="layer 7 channel data ends early",
                   duration_ms=round((done + 0.002 - t) * 1000, 1)),
                ev(TaskFailed, done + 0.003, task_id=wid, task_name="psd.process",
                   worker_id=ORCHESTRATOR, source=ORCHESTRATOR, correlation_id=wid,
                   duration_ms=round((done + 0.003 - t) * 1000, 1), error_type="WorkflowStepError",
                   error_message="parse: corrupt"),
            ]  # fmt: skip
            return events
        events += [
            ev(TaskSucceeded, done, **ids, worker_id=STEP_WORKER, source=STEP_WORKER,
               duration_ms=ms),
            ev(PsdStepCompleted, done + 0.002, **common, step=step, duration_ms=ms + 2,
               summary={"step": step}),
        ]  # fmt: skip
        now = done + 0.004
    total = round((now - t) * 1000, 1)
    events += [
        ev(PsdWorkflowCompleted, now + 0.001, **common, duration_ms=total,
           manifest=outcome["manifest"]),
        ev(TaskSucceeded, now + 0.002, task_id=wid, task_name="psd.process",
           worker_id=ORCHESTRATOR, duration_ms=total + 1, correlation_id=wid),
    ]  # fmt: skip
    return events


def task(ev: Events, task_id: str, name: str, t: float, outcome: str, ms: float = 8.0,
         worker: str = STEP_WORKER) -> list[BaseEvent]:  # fmt: skip
    """One standalone task: queued, started, then ``outcome``."""
    ids = {"task_id": task_id, "task_name": name}
    events = [ev(TaskQueued, t, **ids)]
    if outcome == "queued":
        return events
    events.append(ev(TaskStarted, t + 0.05, **ids, worker_id=worker, source=worker,
                     queued_at=START + timedelta(0, t)))  # fmt: skip
    end = t + 0.05 + ms / 1000
    if outcome == "succeeded":
        events.append(ev(TaskSucceeded, end, **ids, worker_id=worker, source=worker,
                         duration_ms=ms))  # fmt: skip
    elif outcome == "failed":
        events.append(ev(TaskFailed, end, **ids, worker_id=worker, source=worker,
                         duration_ms=ms, error_type="ValueError",
                         error_message="recipient list is empty"))  # fmt: skip
    elif outcome == "retrying":
        events += [
            ev(TaskFailed, end, **ids, worker_id=worker, source=worker, duration_ms=ms,
               error_type="TransientError", error_message="storage timed out", will_retry=True),
            ev(TaskStarted, end + 1, **ids, worker_id=worker, source=worker, attempt=2),
            ev(TaskFailed, end + 1.1, **ids, worker_id=worker, source=worker, duration_ms=ms,
               attempt=2, error_type="TransientError", error_message="storage timed out",
               will_retry=True),
        ]  # fmt: skip
    elif outcome == "dead_lettered":
        events.append(ev(TaskDeadLettered, end + 30, **ids, stream="TASKS", consumer="workers",
                         stream_seq=1207, deliveries=3, payload='{"args": []}'))  # fmt: skip
    return events


def heartbeat(ev: Events, worker: str, t: float, **fields: Any) -> BaseEvent:
    host, pid = worker.split(":")
    return ev(WorkerHeartbeat, t, worker_id=worker, host=host, pid=int(pid), source=worker,
              started_at=START - timedelta(hours=2), interval_s=5.0, **fields)  # fmt: skip


def consumer(stream: str, name: str, acked: int, pending: int, **extra: Any) -> ConsumerFigures:
    fields: dict[str, Any] = {
        "stream": stream, "name": name, "filter_subject": None, "pending": pending,
        "ack_pending": 0, "redelivered": 0, "waiting": 1, "ack_floor": acked,
        "delivered": acked, "deliveries": acked, "acked": acked,
        "last_active": FIXED_NOW - timedelta(seconds=1), "stream_messages": 5000,
    }  # fmt: skip
    fields.update(extra)
    return ConsumerFigures(**fields)


def poll_figures(state: ConsoleState, clock: Clock) -> None:
    """Twelve 1 Hz polls of the durables and streams, rates varying, ending at FIXED_NOW.

    The workers keep up with TASKS; task-stats is behind on EVENTS and catching up.
    """
    first = START - timedelta(days=2)
    tasks_seq = done = 1190
    events_seq = audited = 4650
    stats = events_seq - 400
    for second, tasks_in in enumerate((3, 5, 8, 12, 9, 6, 4, 7, 11, 14, 10, 6)):
        clock.now = FIXED_NOW - timedelta(seconds=11 - second)
        tasks_seq += tasks_in
        done += tasks_in - (1 if second == 11 else 0)
        events_seq += 4 * tasks_in
        audited += 4 * tasks_in
        stats += 4 * tasks_in + 25
        backlog = tasks_seq - done
        state.consumers_polled([
            consumer("TASKS", "workers", done, 0, filter_subject="tasks.default.>",
                     ack_pending=backlog, stream_messages=backlog),
            consumer("TASKS", "workflows", 4, 0, filter_subject="tasks.workflows.>",
                     stream_messages=backlog),
            consumer("EVENTS", "audit-log", audited, 0, stream_messages=events_seq),
            consumer("EVENTS", "task-stats", stats, events_seq - stats - 20,
                     filter_subject="events.task.>", ack_pending=20, redelivered=3,
                     stream_messages=events_seq),
        ])  # fmt: skip
        state.stream_polled(StreamFigures("TASKS", backlog, 2_048 * backlog, done + 1, tasks_seq,
                                          first, clock.now, 2))  # fmt: skip
        state.stream_polled(StreamFigures("EVENTS", events_seq, 1_843 * events_seq, 1,
                                          events_seq, first, clock.now, 2))  # fmt: skip
    clock.now = FIXED_NOW


def task_stats(events: list[BaseEvent]) -> list[TaskTypeStats]:
    """What the engine's task-stats listener would have stored for these events."""
    stats: dict[str, TaskTypeStats] = {}
    for event in sorted(events, key=lambda e: e.timestamp):
        if isinstance(event, TaskEvent):
            name = event.task_name
            lane = WORKFLOW_LANE if name == "psd.process" else DEFAULT_LANE  # as workers fold
            stats.setdefault(name, TaskTypeStats(task_name=name, lane=lane)).apply(event)
    return [stats[name] for name in sorted(stats)]


def build_state(store: dict[str, bytes]) -> ConsoleState:
    clock = Clock()
    state = ConsoleState(clock=clock)
    ev = Events()
    events: list[BaseEvent] = [
        heartbeat(ev, "render-03:977", 400, processed=311, failed=2),  # lost: no beat since
        heartbeat(ev, "render-04:1200", 500, state="stopping", processed=90),
    ]
    events += task(ev, "a1b2c3d4e5f60718293a4b5c6d7e8f90", "diag.ping", 20, "succeeded", 1.2)
    events += task(ev, "0badf00d0badf00d0badf00d0badf00d", "report.email", 60, "failed", 140)
    events += workflow(ev, WF_OK, "demo.psd", 120, manifest=manifest(store))
    events += task(ev, "5eed5eed5eed5eed5eed5eed5eed5eed", "diag.noop", 200, "succeeded", 0.4)
    events += task(ev, "feedfacefeedfacefeedfacefeedface", "thumbs.rebuild", 240, "retrying", 2300)
    events += workflow(ev, WF_BAD, "poster-final-v3.psb", 300, fail_at="parse")
    events += task(ev, "deadbeefdeadbeefdeadbeefdeadbeef", "report.email", 330, "dead_lettered",
                   95)  # fmt: skip
    events += task(ev, "1234abcd1234abcd1234abcd1234abcd", "psd.preview", 560, "running")
    events += task(ev, "9876fedc9876fedc9876fedc9876fedc", "diag.ping", 590, "queued")
    for n in range(6):
        events += task(ev, f"{n:02d}c0de{n:02d}c0de{n:02d}c0de{n:02d}c0de{n:02d}", "diag.noop",
                       400 + 30 * n, "succeeded", 0.3 + n / 10)  # fmt: skip
    lag = {"alert_id": "a1e27000" * 4, "rule": "consumer_lag", "about": "EVENTS/task-stats"}
    lost = {"alert_id": "a1e27001" * 4, "rule": "worker_lost", "about": "render-05:311"}
    events += [  # the engine's evaluator: one raised and escalated, one raised and cleared
        ev(AlertRaised, 100, **lost, severity="warning", text="no heartbeat for 15 s"),
        ev(AlertCleared, 450, **lost, text="heartbeats again", raised_at=START + timedelta(0, 100)),
        ev(AlertRaised, 480, **lag, severity="warning", text="80 pending for 2 min"),
        ev(AlertRaised, 570, **lag, severity="critical", text="80 pending for 3 min, not draining",
           escalated=True),
    ]  # fmt: skip
    events += [
        heartbeat(ev, ORCHESTRATOR, 597, running=1, processed=1_204, failed=3,
                  lanes=["workers", "workflows"]),
        heartbeat(ev, STEP_WORKER, 598, running=0, processed=5_871, failed=11,
                  lanes=["workers"]),
    ]  # fmt: skip
    # A long name on a long worker id: cut with an ellipsis where the width runs out.
    events += task(ev, "10ng10ng10ng10ng10ng10ng10ng10ng", "reports.quarterly_revenue_by_region",
                   585, "failed", 41, worker="render-eu-west-1b:31337")  # fmt: skip
    # In the order the stream stores them: by time.
    for seq, event in enumerate(sorted(events, key=lambda e: e.timestamp), start=1):
        state.fold(event, seq)
    state.fold(UnparsedEvent("not_json", "Expecting value: line 1 column 1", raw="<html>"), 9001)
    state.fold(
        UnparsedEvent("incompatible_version", "task.queued '2.0' is not readable as 1.0",
                      "task.queued", "2.0", "e" * 32),
        9002,
    )  # fmt: skip
    poll_figures(state, clock)
    state.stats_polled(task_stats(events))
    state.connection.url = "127.0.0.1:4222"
    state.connection.connected = True
    state.connection.rtt_ms = 0.42
    state.connection.since = START - timedelta(hours=1)
    state.caught_up = True
    return state


@pytest.fixture(scope="module")
def store() -> dict[str, bytes]:
    return artefacts()


@pytest.fixture(autouse=True)
def pinned_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC, and no user config file (the help screen shows its path)."""
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent/.config")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def serving(store: dict[str, bytes]) -> Fetcher:
    async def fetch(key: str) -> bytes:
        return store[key]

    return fetch


def open_workflow(store: dict[str, bytes], tab: str | None = None) -> Callable[[Pilot], Any]:
    """run_before: the completed workflow's detail screen, artefacts loaded, on ``tab``."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, ConsoleApp)
        app.push_screen(DetailScreen(app.state, WF_OK, fetch_artefact=serving(store)))
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        assert screen.query_one(LayerTree).display and screen.query_one(ImageView).display
        if tab is not None:
            await pilot.press(tab)
            await pilot.pause()
            assert (
                screen.query_one(TabbedContent).active
                == {"l": "tab-layers", "p": "tab-preview"}[tab]
            )

    return run_before


def console(store: dict[str, bytes]) -> ConsoleApp:
    return ConsoleApp(state=build_state(store), connect=False)


def test_main_screen(snap_compare: Any, store: dict[str, bytes]) -> None:
    """Status line, alerts, task flow, failures, stream health, consumer lag, workers."""
    assert snap_compare(console(store), terminal_size=SIZE)


def test_main_screen_at_100x30(snap_compare: Any, store: dict[str, bytes]) -> None:
    """The task flow takes the width: time, name, state, worker, duration and error; the
    system figures step aside (its bottom line says which keys bring them back)."""
    assert snap_compare(console(store), terminal_size=NARROW)


def test_main_screen_at_80x24(snap_compare: Any, store: dict[str, bytes]) -> None:
    """The same columns at 80: names and workers ellipsised, corr. and step left out."""
    assert snap_compare(console(store), terminal_size=SMALL)


def test_workers_panel_shown_then_zoomed_at_100x30(
    snap_compare: Any, store: dict[str, bytes]
) -> None:
    """`5` brings the Workers panel back under the lists, `z` gives it the whole screen."""
    assert snap_compare(console(store), terminal_size=NARROW, press=["5", "z"])


def test_detail_of_a_completed_workflow_timeline(
    snap_compare: Any, store: dict[str, bytes]
) -> None:
    """The demo workflow's header and timeline, its last own event's JSON on the right."""
    assert snap_compare(console(store), terminal_size=SIZE, run_before=open_workflow(store))


def test_detail_of_a_completed_workflow_layers(snap_compare: Any, store: dict[str, bytes]) -> None:
    """The layer tree of the real demo file, top layer first."""
    assert snap_compare(console(store), terminal_size=SIZE, run_before=open_workflow(store, "l"))


def test_detail_of_a_completed_workflow_preview(snap_compare: Any, store: dict[str, bytes]) -> None:
    """The real preview PNG in half-blocks."""
    assert snap_compare(console(store), terminal_size=SIZE, run_before=open_workflow(store, "p"))


def test_help_screen(snap_compare: Any, store: dict[str, bytes]) -> None:
    """Every binding with its keys and id, over the main screen."""
    assert snap_compare(console(store), terminal_size=SIZE, press=["question_mark"])
