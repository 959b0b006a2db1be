"""console.state: folding, bounds, eviction order, filters, percentiles, alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from console.state import CLEARED_KEPT, ConsoleState, RowFilter, clock_time, percentile
from engine.alertbook import Book, Tracked
from engine.events.schemas import (
    AlertCleared,
    AlertRaised,
    AlertSeverity,
    LaneHealth,
    ListenerCounters,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    TaskSucceeded,
    UnparsedEvent,
    WorkerHeartbeat,
)
from engine.events.stats import TaskTypeStats
from engine.events.windows import window
from engine.monitor import ConsumerFigures, StreamFigures
from engine.percentiles import GROWTH
from tests.support.clock import T0, Clock, at


def run_task(state: ConsoleState, task_id: str, name: str = "psd.parse", ok: bool = True,
             t: float = 0, worker: str = "w1", ms: float = 10.0) -> None:  # fmt: skip
    state.fold(TaskQueued(task_id=task_id, task_name=name, timestamp=at(t)))
    state.fold(
        TaskStarted(task_id=task_id, task_name=name, worker_id=worker, timestamp=at(t + 0.1))
    )
    if ok:
        state.fold(TaskSucceeded(task_id=task_id, task_name=name, worker_id=worker,
                                 duration_ms=ms, timestamp=at(t + 0.2)))  # fmt: skip
    else:
        state.fold(TaskFailed(task_id=task_id, task_name=name, worker_id=worker, duration_ms=ms,
                              error_type="ValueError", error_message="boom",
                              timestamp=at(t + 0.2)))  # fmt: skip


def test_a_task_goes_queued_running_succeeded() -> None:
    state = ConsoleState()
    state.fold(TaskQueued(task_id="t1", task_name="psd.parse", timestamp=at(0)))
    assert state.rows["t1"].state == "queued"
    state.fold(TaskStarted(task_id="t1", task_name="psd.parse", worker_id="w1", timestamp=at(1)))
    assert (state.rows["t1"].state, state.rows["t1"].worker) == ("running", "w1")
    state.fold(TaskSucceeded(task_id="t1", task_name="psd.parse", worker_id="w1",
                             duration_ms=12.5, timestamp=at(2)))  # fmt: skip
    row = state.rows["t1"]
    assert (row.state, row.duration_ms, row.updated) == ("succeeded", 12.5, at(2))
    assert state.outcomes["succeeded"] == 1
    assert state.events == 3
    assert state.by_type == {"task.queued": 1, "task.started": 1, "task.succeeded": 1}


def test_out_of_order_events_never_move_a_task_back() -> None:
    state = ConsoleState()
    state.fold(TaskSucceeded(task_id="t1", task_name="x", worker_id="w", duration_ms=1,
                             timestamp=at(2)))  # fmt: skip
    state.fold(TaskStarted(task_id="t1", task_name="x", worker_id="w", timestamp=at(1)))
    state.fold(TaskQueued(task_id="t1", task_name="x", timestamp=at(0)))
    assert state.rows["t1"].state == "succeeded"
    assert state.outcomes["succeeded"] == 1


def test_retries_then_dead_letter() -> None:
    state = ConsoleState()
    for attempt in (1, 2):
        state.fold(TaskFailed(task_id="t1", task_name="x", worker_id="w", attempt=attempt,
                              duration_ms=1, error_type="TransientError", error_message="down",
                              will_retry=True, timestamp=at(attempt)))  # fmt: skip
    assert state.rows["t1"].state == "retrying"
    assert not state.failures
    state.fold(TaskDeadLettered(task_id="t1", task_name="x", stream="TASKS", consumer="workers",
                                stream_seq=7, deliveries=3, timestamp=at(5)))  # fmt: skip
    row = state.rows["t1"]
    assert row.state == "dead_lettered"
    assert list(state.failures) == ["t1"]
    assert state.outcomes["dead_lettered"] == 1


def test_a_workflow_folds_steps_outcome_and_its_orchestrator_task() -> None:
    state = ConsoleState()
    wid = "wf1"
    state.fold(PsdWorkflowSubmitted(workflow_id=wid, filename="a.psd", input_key="k", size_bytes=5,
                                    correlation_id=wid, timestamp=at(0)))  # fmt: skip
    state.fold(TaskStarted(task_id=wid, task_name="psd.process", worker_id="w9",
                           correlation_id=wid, timestamp=at(0.5)))  # fmt: skip
    run_task(state, "s1", "psd.validate", t=1)
    state.fold(PsdStepCompleted(workflow_id=wid, filename="a.psd", step="validate",
                                duration_ms=20, correlation_id=wid, timestamp=at(1.3)))  # fmt: skip
    row = state.rows[wid]
    assert (row.kind, row.name, row.state, row.worker) == ("workflow", "psd a.psd", "running", "w9")
    assert row.steps == [("validate", 20)]
    state.fold(PsdWorkflowCompleted(workflow_id=wid, filename="a.psd", duration_ms=99,
                                    manifest={"preview": {}}, correlation_id=wid,
                                    timestamp=at(3)))  # fmt: skip
    assert (row.state, row.duration_ms, row.manifest) == ("completed", 99, {"preview": {}})
    assert [e.event_type for e in state.trace(wid)] == [
        "psd.workflow.submitted", "task.started", "psd.step.completed", "psd.workflow.completed",
    ]  # fmt: skip
    assert "psd.process" not in {r.name for r in state.rows.values()}  # merged into the workflow


def test_a_failed_workflow_is_a_failure_with_step_and_code() -> None:
    state = ConsoleState()
    state.fold(PsdWorkflowFailed(workflow_id="wf", filename="b.psd", step="parse",
                                 error_code="corrupt", error_message="bad text",
                                 correlation_id="wf", timestamp=at(1)))  # fmt: skip
    row = state.failures["wf"]
    assert (row.state, row.step, row.error_type, row.error_message) == (
        "failed", "parse", "corrupt", "bad text")  # fmt: skip


def test_counters_stay_exact_while_rows_are_bounded() -> None:
    state = ConsoleState(max_rows=100)
    for n in range(5000):
        run_task(state, f"t{n}", t=n)
    assert state.events == 15_000
    assert state.outcomes["succeeded"] == 5000
    assert len(state.rows) <= 100 + 100 // 10
    assert state.evicted_rows == 5000 - len(state.rows)
    newest = state.visible_rows(limit=3)
    assert [r.key for r in newest] == ["t4999", "t4998", "t4997"]


def test_successes_are_evicted_before_failures() -> None:
    state = ConsoleState(max_rows=50)
    for n in range(30):
        run_task(state, f"bad{n}", ok=False, t=n)  # the oldest rows are failures
    for n in range(200):
        run_task(state, f"ok{n}", t=100 + n)
    kept = set(state.rows)
    assert {f"bad{n}" for n in range(30)} <= kept  # every failure is still listed
    assert len(state.failures) == 30


def test_failures_outlive_the_live_list_and_are_bounded_themselves() -> None:
    state = ConsoleState(max_rows=10, max_failures=20)
    for n in range(100):
        run_task(state, f"bad{n}", ok=False, t=n)
    assert len(state.rows) <= 11
    assert list(state.failures)[-1] == "bad99"
    assert len(state.failures) == 20
    assert state.outcomes["failed"] == 100


def test_traces_have_a_budget() -> None:
    state = ConsoleState(trace_budget=300)
    for n in range(1000):
        run_task(state, f"t{n}", t=n)
    assert sum(len(t) for t in state.traces.values()) <= 300
    assert len(state.trace("t999")) == 3
    assert state.trace("t0") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {"ok1", "bad1", "ok2"}),
        ("state:failed", {"bad1"}),
        ("-state:failed", {"ok1", "ok2"}),
        ("task:export", {"ok2"}),
        ("worker:w2", {"bad1"}),
        ("-worker:w2 task:psd", {"ok1", "ok2"}),
        ("boom", {"bad1"}),
        ("state:succ", {"ok1", "ok2"}),
        ("nothing-matches", set()),
    ],
)
def test_filters(text: str, expected: set[str]) -> None:
    state = ConsoleState()
    run_task(state, "ok1", "psd.parse", worker="w1")
    run_task(state, "bad1", "psd.parse", ok=False, worker="w2")
    run_task(state, "ok2", "psd.export_layers", worker="w1")
    assert {r.key for r in state.visible_rows(RowFilter(text))} == expected


def test_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 100) == 100.0


def task_stats(name: str, runs: list[tuple[float, float]], failed_at: float | None = None,
               waited_ms: float = 40.0) -> TaskTypeStats:  # fmt: skip
    """What the engine's task-stats listener stores after these runs (start second, ms)."""
    stats = TaskTypeStats(task_name=name)
    for n, (t, ms) in enumerate(runs):
        ids = {"task_id": f"{name}-{n}", "task_name": name}
        stats.apply(TaskQueued(**ids, timestamp=at(t)))
        stats.apply(TaskStarted(**ids, worker_id="w", queued_at=at(t),
                                timestamp=at(t + waited_ms / 1000)))  # fmt: skip
        stats.apply(TaskSucceeded(**ids, worker_id="w", duration_ms=ms, timestamp=at(t + 1)))
    if failed_at is not None:
        stats.apply(TaskFailed(task_id=f"{name}-x", task_name=name, worker_id="w",
                               duration_ms=500, error_type="E", error_message="m",
                               timestamp=at(failed_at)))  # fmt: skip
    return stats


def test_task_figures_are_the_shared_statistics_of_the_last_hour() -> None:
    """The same window `onemanage status` computes, for the task types busy within it."""
    clock = Clock()
    state = ConsoleState(clock=clock)
    assert state.task_windows() == [] and state.stats_read_at is None
    run_task(state, "t1", "seen.here.only")  # folded events no longer make figures
    parse = task_stats("psd.parse", [(n * 30, 10.0 * (n + 1)) for n in range(20)], failed_at=300)
    idle = task_stats("psd.idle", [(-7200, 5.0)])  # ran two hours ago
    clock.now = at(900)
    state.stats_polled([idle, parse])
    assert state.stats_read_at == at(900) and state.stats_error is None
    ((name, hour),) = state.task_windows()
    expected = window(parse.recent, at(900))
    assert name == "psd.parse"
    assert (hour.succeeded, hour.failed) == (20, 1)
    for q in (50, 95, 99):
        assert hour.run_ms(q) == expected.run_ms(q)
        assert hour.wait_ms(q) == expected.wait_ms(q)
    assert hour.wait_ms(50) is not None and 40 <= hour.wait_ms(50) <= 40 * GROWTH
    assert hour.run_ms(99) is not None and 500 <= hour.run_ms(99) <= 500 * GROWTH  # the failure
    clock.now = at(900 + 3600)
    assert state.task_windows() == []  # the hour has moved on


def test_a_failed_read_of_the_statistics_keeps_the_last_ones() -> None:
    state = ConsoleState(clock=Clock())
    state.stats_polled([task_stats("psd.parse", [(0, 10.0)])])
    version = state.version
    state.stats_unavailable("TimeoutError: nats: timeout")
    assert state.stats_error == "TimeoutError: nats: timeout" and state.version > version
    assert [name for name, _ in state.task_windows()] == ["psd.parse"]
    state.stats_polled([])
    assert state.stats_error is None and state.task_windows() == []


def test_unreadable_events_are_counted_by_reason() -> None:
    state = ConsoleState()
    state.fold(UnparsedEvent("not_json", "x"))
    state.fold(UnparsedEvent("incompatible_version", "y", "task.queued", "2.0"))
    state.fold(UnparsedEvent("not_json", "z"))
    assert state.events == 3
    assert state.unreadable == {"not_json": 2, "incompatible_version": 1}
    assert any("3 unreadable" in a.message for a in state.alerts())


def test_workers_are_lost_after_missed_heartbeats() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    state.connection.connected, state.connection.since = True, at(-60)  # it would have heard
    state.fold(WorkerHeartbeat(worker_id="h:1", host="h", pid=1, started_at=T0, interval_s=5,
                               timestamp=T0))  # fmt: skip
    clock.now = at(10)
    assert not state.workers["h:1"].lost(clock.now)
    clock.now = at(16)
    assert state.workers["h:1"].lost(clock.now)
    assert any("lost" in a.message for a in state.alerts())


def test_a_refused_task_says_why_it_is_a_dead_letter() -> None:
    state = ConsoleState(clock=Clock())
    state.fold(
        TaskDeadLettered(
            task_id="t1", task_name="test.add", stream="TASKS", consumer="workers", stream_seq=7,
            deliveries=1, reason="undecodable", error="ValidationError: task_id missing",
        )
    )  # fmt: skip
    row = state.rows["t1"]
    assert row.state == "dead_lettered"
    assert row.error_message == "refused (undecodable): ValidationError: task_id missing"


def test_a_degraded_worker_and_missed_events_are_alerts() -> None:
    """A worker whose lane stopped pulling is not healthy; discarded events are not silent."""
    clock = Clock()
    state = ConsoleState(clock=clock)
    for pid, missed in ((1, 40), (2, 25)):  # two processes of one durable see the same gap
        state.fold(
            WorkerHeartbeat(
                worker_id=f"h:{pid}", host="h", pid=pid, started_at=T0, interval_s=5,
                timestamp=T0,
                listeners={"audit-log": ListenerCounters(missed=missed)},
                lane_health={"workers": LaneHealth(state="degraded" if pid == 1 else "ok")},
            )
        )  # fmt: skip
    messages = [a.message for a in state.alerts()]
    assert "1 worker(s) degraded: lane(s) workers not pulling" in messages
    assert any(m.startswith("listener audit-log missed 40 event(s)") for m in messages), messages


def _consumer(pending: int, acked: int, stream_messages: int = 1000) -> ConsumerFigures:
    return ConsumerFigures(
        stream="TASKS", name="workers", filter_subject="tasks.default.>", pending=pending,
        ack_pending=0, redelivered=0, waiting=1, ack_floor=acked, delivered=acked,
        deliveries=acked, acked=acked, last_active=None, stream_messages=stream_messages,
    )  # fmt: skip


def test_drain_estimates_and_impossible_figures() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    state.consumers_polled([_consumer(pending=1000, acked=0)])
    clock.now = at(10)
    state.consumers_polled([_consumer(pending=900, acked=100)])
    view = state.consumers["TASKS/workers"]
    assert view.ack_rate == 10.0
    assert view.drain_seconds == 90.0
    state.consumers_polled([_consumer(pending=5000, acked=100, stream_messages=10)])
    assert state.consumers["TASKS/workers"].figures.impossible
    assert any("impossible" in a.message for a in state.alerts())


def test_stream_rates_in_and_out() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    figures = StreamFigures("TASKS", 0, 0, 1, 100, None, None, 1)
    state.consumers_polled([_consumer(pending=0, acked=0)])
    state.stream_polled(figures)
    clock.now = at(2)
    state.consumers_polled([_consumer(pending=0, acked=50)])
    state.stream_polled(StreamFigures("TASKS", 0, 0, 1, 300, None, None, 1))
    view = state.streams["TASKS"]
    assert list(view.rate_in) == [100.0]
    assert list(view.rate_out) == [25.0]


def test_one_busy_correlation_cannot_take_more_than_the_budget() -> None:
    state = ConsoleState(trace_budget=1000)
    for n in range(5000):
        state.fold(TaskQueued(task_id=f"t{n}", task_name="x", correlation_id="busy",
                              timestamp=at(n)))  # fmt: skip
    assert sum(len(t) for t in state.traces.values()) <= 1000
    assert state.trace("busy")[-1].task_id == "t4999"  # the newest are kept


def raise_alert(state: ConsoleState, alert_id: str, t: float,
                severity: AlertSeverity = "warning",
                text: str = "backlog 500", escalated: bool = False,
                about: str = "TASKS/workers") -> None:  # fmt: skip
    state.fold(AlertRaised(alert_id=alert_id, rule="consumer_lag", about=about,
                           severity=severity, text=text, escalated=escalated,
                           timestamp=at(t)))  # fmt: skip


def clear_alert(state: ConsoleState, alert_id: str, t: float, raised: float,
                about: str = "TASKS/workers") -> None:  # fmt: skip
    state.fold(AlertCleared(alert_id=alert_id, rule="consumer_lag", about=about,
                            text="backlog 3", raised_at=at(raised), timestamp=at(t)))  # fmt: skip


def test_an_engine_alert_is_raised_escalated_and_cleared() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    state.connection.connected = True
    raise_alert(state, "a1", 0)
    since = clock_time(at(0), clock.now)
    assert [(a.severity, a.message) for a in state.alerts()] == [
        ("warning", f"ALERT consumer_lag TASKS/workers: backlog 500 (since {since})")
    ]
    raise_alert(state, "a1", 60, severity="critical", text="backlog 5000", escalated=True)
    (raised,) = state.engine_alerts()
    assert (raised.severity, raised.text, raised.escalated) == ("critical", "backlog 5000", True)
    assert raised.raised_at == at(0)  # still the first raise
    assert [(a.severity, a.message) for a in state.alerts()] == [
        ("error", f"ALERT consumer_lag TASKS/workers: backlog 5000 (since {since})")
    ]
    clock.now = at(200)
    clear_alert(state, "a1", 180, raised=0)
    assert state.engine_alerts() == [] and state.alerts() == []
    (cleared,) = state.recently_cleared()
    assert (cleared.alert_id, cleared.raised_at, cleared.cleared_at) == ("a1", at(0), at(180))
    clock.now = at(180 + 301)
    assert state.recently_cleared() == []  # out of the banner after five minutes
    assert [c.alert_id for c in state.cleared_alerts] == ["a1"]  # still kept


def test_late_copies_never_undo_an_escalation_or_a_clear() -> None:
    state = ConsoleState(clock=Clock())
    raise_alert(state, "a1", 60, severity="critical", text="worse", escalated=True)
    raise_alert(state, "a1", 0, text="first")  # the raise, read after its escalation
    (raised,) = state.engine_alerts()
    assert (raised.severity, raised.text, raised.raised_at) == ("critical", "worse", at(0))
    clear_alert(state, "a1", 120, raised=0)
    raise_alert(state, "a1", 60, severity="critical")  # a copy after the clear
    clear_alert(state, "a1", 120, raised=0)  # and the clear twice
    assert state.engine_alerts() == []
    assert [c.alert_id for c in state.recently_cleared()] == ["a1"]


def test_engine_alerts_critical_first_and_cleared_ones_bounded() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    raise_alert(state, "old-warning", 0, about="TASKS/a")
    raise_alert(state, "new-critical", 10, severity="critical", about="TASKS/b")
    raise_alert(state, "new-warning", 20, about="TASKS/c")
    assert [a.alert_id for a in state.engine_alerts()] == [
        "new-critical", "old-warning", "new-warning",
    ]  # fmt: skip
    for n in range(CLEARED_KEPT + 5):
        raise_alert(state, f"flap-{n}", 30 + n, about=f"TASKS/f{n}")
        clear_alert(state, f"flap-{n}", 31 + n, raised=30 + n, about=f"TASKS/f{n}")
    kept = [c.alert_id for c in state.recently_cleared()]
    assert len(kept) == CLEARED_KEPT
    assert kept[0] == f"flap-{CLEARED_KEPT + 4}" and kept[-1] == "flap-5"  # newest first
    assert len(state.engine_alerts()) == 3
    assert not any(e.event_type.startswith("alert.") for t in state.traces.values() for e in t)


def test_a_clear_whose_raise_is_older_than_the_history_is_still_shown() -> None:
    clock = Clock()
    state = ConsoleState(clock=clock)
    clock.now = at(7200)
    clear_alert(state, "a1", 7100, raised=0)
    (cleared,) = state.recently_cleared()
    assert cleared.raised_at == at(0)


def test_clock_time_shows_the_date_of_another_day() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).astimezone()
    assert clock_time(now - timedelta(seconds=5), now) == (now - timedelta(seconds=5)).strftime(
        "%H:%M:%S"
    )
    assert clock_time(now - timedelta(days=2), now) == (now - timedelta(days=2)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def test_the_evaluators_book_adds_what_history_missed_and_removes_what_cleared() -> None:
    """An alert raised before the replayed hour shows from the book; one the book dropped goes,
    even when its clear event never came; one raised just before the read is kept."""
    clock = Clock()
    state = ConsoleState(clock=clock)
    state.connection.connected = True
    raise_alert(state, "old", 0)
    raise_alert(state, "fresh", 95)
    book = Book(
        alerts={
            "stuck_workflows:": Tracked(
                rule="stuck_workflows",
                about="",
                alert_id="before",
                level=2,
                raised_at=at(-7200),
                text="3 workflow(s) without progress",
            ),
            "consumer_lag:x": Tracked(rule="consumer_lag", about="x", over=1),  # not raised
        }
    )
    clock.now = at(100)
    state.book_polled(book, read_started=at(100))
    assert {a.alert_id: a.severity for a in state.engine_alerts()} == {
        "before": "critical",
        "fresh": "warning",  # 5 s old: its raise may not have been in the book yet
    }
    (cleared,) = state.recently_cleared()
    assert cleared.alert_id == "old" and "no longer holds it" in cleared.text
    assert state.alerts()[0].message.startswith("ALERT stuck_workflows: 3 workflow(s)")
