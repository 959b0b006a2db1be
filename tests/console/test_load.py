"""The console under load: 50,000 events into the session's real nats-server while it runs.

The app reads EVENTS through its pump on the engine's broker connection (already
connected by the ``client`` fixture), keys are pressed while the events pour in, and
at the end every counter must equal what this run published, the kept rows, the
shown list and the traces must be within their bounds, and the app's message queue
must have stayed small. Nothing here is timed: bench/console.py measures speed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from console.app import ConsoleApp, ConsoleOptions
from console.state import ConsoleState
from console.widgets.task_flow import SHOWN, TaskFlow, TaskRows
from engine.events.schemas import (
    BaseEvent,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
    UnparsedEvent,
    parse_event,
)
from engine.streams import EVENTS
from tests.support import waiting

pytestmark = pytest.mark.slow

TASKS = 16_000
IN_FLIGHT = 100  # a task starts 50 events after it is queued and ends 50 after that
BATCH = 1_000
NAMES = ("load.resize", "load.encode", "load.upload", "load.notify")
GARBAGE = [  # (subject, payload): 4 not JSON, 3 of an unknown type, 3 of another major
    *[("events.load.garbage", b"{not json at all")] * 4,
    *[("events.load.mystery", b'{"event_type": "load.mystery", "event_version": "1.0"}')] * 3,
    *[("events.task.queued", b'{"event_type": "task.queued", "event_version": "2.0"}')] * 3,
]
QUEUE_BOUND = 50  # messages waiting in the app's queue at any sample
WAIT = 120.0  # seconds: a guard against hanging, not a speed requirement


def task_events(run: str, index: int) -> list[BaseEvent]:
    """One task's life: every 10th fails for good, every 16th is retried once first."""
    ids = {
        "task_id": f"{run}-{index:05d}",
        "task_name": NAMES[index % len(NAMES)],
        "correlation_id": f"{run}-batch{index // 8:04d}",
    }
    worker = f"load-{index % 3}:{1000 + index % 3}"
    life: list[BaseEvent] = [TaskQueued(**ids), TaskStarted(**ids, worker_id=worker)]
    if index % 16 == 5:
        life += [
            TaskFailed(**ids, worker_id=worker, duration_ms=3.0, error_type="TransientError",
                       error_message="storage timed out", will_retry=True),
            TaskStarted(**ids, worker_id=worker, attempt=2),
        ]  # fmt: skip
    attempt = 2 if index % 16 == 5 else 1
    if index % 10 == 3:
        life.append(TaskFailed(**ids, worker_id=worker, attempt=attempt, duration_ms=7.5,
                               error_type="ValueError",
                               error_message=f"bad input {index}"))  # fmt: skip
    else:
        life.append(TaskSucceeded(**ids, worker_id=worker, attempt=attempt, duration_ms=2.5))
    return life


def pipeline(run: str) -> list[BaseEvent]:
    """All tasks' events as a busy system interleaves them: many tasks in flight at once."""
    lives = [task_events(run, index) for index in range(TASKS)]
    ordered: list[BaseEvent] = []
    # Step k publishes the first event of task k, the middle ones of task k - 50 and the last
    # one of task k - 100: queued, then started later, then finished later still.
    for step in range(TASKS + IN_FLIGHT):
        if step < TASKS:
            ordered.append(lives[step][0])
        if 0 <= step - IN_FLIGHT // 2 < TASKS:
            ordered += lives[step - IN_FLIGHT // 2][1:-1]
        if 0 <= step - IN_FLIGHT < TASKS:
            ordered.append(lives[step - IN_FLIGHT][-1])
    return ordered


def expected_counts(events: list[BaseEvent]) -> tuple[Counter[str], Counter[str]]:
    """(by event type, by terminal outcome) of a run's events."""
    by_type = Counter(event.event_type for event in events)
    outcomes: Counter[str] = Counter()
    for event in events:
        if isinstance(event, TaskSucceeded):
            outcomes["succeeded"] += 1
        elif isinstance(event, TaskFailed) and not event.will_retry:
            outcomes["failed"] += 1
    return by_type, outcomes


@dataclass
class Samples:
    """What the app and the pump hold while the events pour in."""

    queue: list[int] = field(default_factory=list)  # the app's message queue
    kept: list[int] = field(default_factory=list)  # rows in the state
    shown: list[int] = field(default_factory=list)  # rows in the task flow's list
    lag: list[int] = field(default_factory=list)  # stored by the server, not yet folded
    buffered: list[int] = field(default_factory=list)  # in the pump's client-side buffer


def pump_buffer(app: ConsoleApp) -> int:
    """Messages the pump's reader holds received and not folded yet."""
    assert app.pump is not None
    return app.pump.tail.buffered if app.pump.tail is not None else 0


async def sample(app: ConsoleApp, published: list[int], samples: Samples) -> None:
    while True:
        samples.queue.append(app._message_queue.qsize())
        samples.kept.append(len(app.state.rows))
        samples.shown.append(len(app.query_one(TaskRows).rows))
        if published:
            samples.lag.append(max(published[-1] - app.state.last_seq, 0))
        samples.buffered.append(pump_buffer(app))
        await asyncio.sleep(0.005)


async def until(pilot: Pilot[None], ready: Callable[[], object], what: str) -> None:
    await waiting.until(pilot, ready, WAIT, what)


async def refreshed(pilot: Pilot[None], rows: TaskRows, what: str) -> None:
    """Until the app's refresh timer has set the list again (from a newer state)."""
    before = rows.rows
    await until(pilot, lambda: rows.rows is not before, what)


async def publish(client: Any, batch: list[tuple[str, bytes]], published: list[int]) -> None:
    """A batch through publish_async, unique Nats-Msg-Id each; acks awaited with a timeout."""
    futures = [
        await client.js.publish_async(subject, payload, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        for subject, payload in batch
    ]
    acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
    published.extend(ack.seq for ack in acks)
    assert all(ack.stream == EVENTS and not ack.duplicate for ack in acks)


@pytest.fixture
def no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A developer's key remapping must not change what the keys below do."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))


async def test_console_absorbs_50k_events_while_keys_work(
    client: Any, no_user_config: None
) -> None:
    run = f"load{uuid.uuid4().hex[:10]}"
    events = pipeline(run)
    assert len(events) == 50_000
    payloads = [(event.subject, event.model_dump_json().encode()) for event in events]
    # The garbage goes in among the events, not all at one end.
    for position, item in zip(range(1_000, 50_000, 5_000), GARBAGE, strict=True):
        payloads.insert(position, item)
    want_types, want_outcomes = expected_counts(events)
    assert want_types == {"task.queued": 16_000, "task.started": 17_000,
                          "task.failed": 2_600, "task.succeeded": 14_400}  # fmt: skip
    assert want_outcomes == {"succeeded": 14_400, "failed": 1_600}
    want_unreadable = Counter({"not_json": 4, "unknown_type": 3, "incompatible_version": 3})

    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=2)), connect=True)
    state: ConsoleState = app.state
    samples = Samples()
    published: list[int] = []
    async with app.run_test(size=(160, 45)) as pilot:
        await until(pilot, lambda: app.pump is not None, "the pump to start")
        assert not app.owns_connection  # it reuses the session's broker connection
        # A marker, so that the baseline is taken after everything stored before this run.
        marker = await client.js.publish(
            "events.task.queued",
            TaskQueued(task_id=f"{run}-marker", task_name="load.marker").model_dump_json().encode(),
        )
        await until(pilot, lambda: state.last_seq >= marker.seq, "the marker to be folded")
        base_seq, base_events = state.last_seq, state.events
        base_types, base_outcomes = state.by_type.copy(), state.outcomes.copy()
        base_unreadable = state.unreadable.copy()

        flow = app.query_one(TaskFlow)
        rows = app.query_one(TaskRows)
        sampler = asyncio.create_task(sample(app, published, samples))
        try:
            batches = [payloads[i : i + BATCH] for i in range(0, len(payloads), BATCH)]
            for number, batch in enumerate(batches):
                await publish(client, batch, published)
                if number == 5:  # pause: the list freezes, the counting goes on
                    await until(pilot, lambda: len(rows.rows) > 3, "rows to pause on")
                    await pilot.press("space")
                    assert flow.paused and "PAUSED" in str(flow.border_title)
                    assert "PAUSED" in app.status_line()
                    frozen, counted = [row.key for row in rows.rows], state.events
                    assert len(frozen) > 3
                    await pilot.press("home", "down", "down", "down")
                    assert rows.cursor == 3 and rows.current is not None
                    assert rows.current.key == frozen[3]
                elif number == 9:
                    await until(pilot, lambda: state.events > counted, "events while paused")  # noqa: B023
                    assert [row.key for row in rows.rows] == frozen
                    await pilot.press("space")
                    assert not flow.paused
                    assert [row.key for row in rows.rows] != frozen
                elif number == 14:  # filter: only failures are listed from now on
                    await pilot.press("slash")
                    field_ = app.query_one("#filter", Input)
                    assert field_.has_focus and field_.has_class("active")
                    await pilot.press(*"state:failed", "enter")
                    assert flow.row_filter.text == "state:failed"
                    assert not field_.has_class("active") and rows.has_focus
                    assert rows.rows and all(row.failed for row in rows.rows)
                elif number in (20, 30):
                    await refreshed(pilot, rows, "a refresh with new rows")
                    assert rows.rows and all(row.failed for row in rows.rows)
                elif number == 35:  # filter on this run's encode tasks, then clear it
                    await pilot.press("slash", "end", "ctrl+u", *f"task:encode {run}", "enter")
                    assert rows.rows
                    assert all(r.name == "load.encode" and run in r.key for r in rows.rows)
                    await pilot.press("slash", "end", "ctrl+u", "enter")
                    assert not flow.row_filter
            await until(pilot, lambda: state.last_seq >= max(published), "every event to be folded")
            await refreshed(pilot, rows, "a refresh after the last fold")
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)

        # Counters and bounds, read together without yielding to the pump.
        end_seq, end_events = state.last_seq, state.events
        got_types = state.by_type - base_types
        got_outcomes = state.outcomes - base_outcomes
        got_unreadable = state.unreadable - base_unreadable
        shown = len(rows.rows)
        kept, traced = len(state.rows), sum(len(trace) for trace in state.traces.values())

        # Events other tests' processes stored meanwhile, read back by sequence.
        mine = set(published)
        foreign = [seq for seq in range(base_seq + 1, end_seq + 1) if seq not in mine]
        foreign_tasks = 0
        for seq in foreign:
            other = parse_event((await client.js.get_msg(EVENTS, seq)).data)
            if isinstance(other, UnparsedEvent):
                want_unreadable[other.reason] += 1
            else:
                want_types[other.event_type] += 1
                foreign_tasks += isinstance(other, TaskEvent)

        assert len(published) == 50_010 and mine <= set(range(base_seq + 1, end_seq + 1))
        assert end_events - base_events == 50_010 + len(foreign)
        assert got_types == want_types
        assert got_unreadable == want_unreadable
        if foreign_tasks:  # another process's tasks may have finished meanwhile too
            assert all(got_outcomes[k] >= n for k, n in want_outcomes.items())
        else:
            assert got_outcomes == want_outcomes
        assert kept <= state.max_rows + state.max_rows // 10
        assert max(samples.kept) <= state.max_rows + state.max_rows // 10
        assert state.evicted_rows >= TASKS - kept
        assert shown <= SHOWN and max(samples.shown) <= SHOWN
        assert traced <= state.trace_budget
        assert max(samples.queue) <= QUEUE_BOUND, samples.queue
        # The pump pulls a batch at a time: it never holds more than one batch unfolded.
        assert app.pump is not None and app.pump.tail is not None
        assert max(samples.buffered) <= app.pump.tail.batch
        assert state.connection.error is None

        app.query_one("#task-rows").focus()
        await pilot.press("q")  # the real way out: stops the pump, keeps the shared connection
    assert app.pump is None
    assert client.is_connected
    mean = sum(samples.queue) / len(samples.queue)
    print(
        f"\nmessage queue max {max(samples.queue)}, mean {mean:.1f}"
        f" ({len(samples.queue)} samples); stored-not-folded max {max(samples.lag):,};"
        f" pump client buffer max {max(samples.buffered):,}; foreign events {len(foreign)}"
    )
