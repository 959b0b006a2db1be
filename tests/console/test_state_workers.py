"""console.state: the shared counts, workers that age out or cannot be judged, groups, and a
failed workflow listed once."""

from __future__ import annotations

from console.state import ConsoleState
from engine.counts import counts
from engine.events.schemas import (
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    WorkerHeartbeat,
)
from engine.events.stats import TaskTypeStats
from engine.routing import DEFAULT_LANE, WORKFLOW_LANE
from tests.support.clock import T0, Clock, at


def beat(worker_id: str, t: float, command: str | None = None, state: str = "running",
         interval: float = 5.0) -> WorkerHeartbeat:  # fmt: skip
    host, pid = worker_id.split(":")
    return WorkerHeartbeat.model_validate(
        {"worker_id": worker_id, "host": host, "pid": int(pid), "started_at": T0,
         "interval_s": interval, "timestamp": at(t), "command": command, "state": state}
    )  # fmt: skip


def connected_state(clock: Clock, gone_after_s: float = 60.0) -> ConsoleState:
    state = ConsoleState(clock=clock, gone_after_s=gone_after_s)
    state.connection.connected, state.connection.since = True, at(-600)
    return state


def test_counts_tell_workflows_from_tasks_by_lane_and_count_each_outcome_once() -> None:
    stats = [
        TaskTypeStats(task_name="psd.process", lane=WORKFLOW_LANE, succeeded=4, failed=1,
                      retried=2, dead_lettered=1),
        TaskTypeStats(task_name="psd.validate", lane=DEFAULT_LANE, succeeded=4, failed=1,
                      retried=3),
        TaskTypeStats(task_name="test.add", succeeded=7, dead_lettered=2),  # lane unknown: a task
    ]  # fmt: skip
    c = counts(stats)
    assert (c.workflows_completed, c.workflows_failed) == (4, 2)
    assert (c.tasks_ok, c.tasks_failed, c.tasks_dead_lettered, c.tasks_retried) == (11, 1, 2, 3)
    assert c.line() == "tasks ok 11 failed 1 dead 2  │  workflows done 4 failed 2"
    state = ConsoleState(clock=Clock())
    assert state.counts() is None  # not read yet: nothing made up
    state.stats_polled(stats)
    assert state.counts() == c
    assert [name for name, _ in state.task_windows()] == []  # nothing in the window: no rows


def test_a_silent_worker_is_lost_then_gone_and_counted() -> None:
    clock = Clock()
    state = connected_state(clock, gone_after_s=60)
    state.fold(beat("h:1", 0))
    state.fold(beat("h:2", 0))
    clock.now = at(20)
    state.fold(beat("h:2", 20))
    assert state.worker_state(state.workers["h:1"], clock.now) == "lost"
    assert any("1 worker(s) lost: h:1" in a.message for a in state.alerts())
    clock.now = at(61)
    state.fold(beat("h:2", 61))
    groups = state.worker_groups()
    assert [views[0].beat.worker_id for _, views in groups] == ["h:2"]  # h:1 aged out
    assert set(state.gone) == {"h:1"}
    assert not any("lost" in a.message for a in state.alerts())
    state.fold(beat("h:1", 0))  # a late copy of its last beat does not bring it back
    assert "h:1" not in state.workers
    state.fold(beat("h:1", 62))  # it beats again: back, no longer gone
    assert "h:1" in state.workers and not state.gone


def test_a_stopped_worker_ages_out_without_counting_as_gone() -> None:
    clock = Clock()
    state = connected_state(clock, gone_after_s=60)
    state.fold(beat("h:1", 0, state="stopping"))
    clock.now = at(61)
    assert state.worker_groups() == [] and not state.gone


def test_no_lost_verdict_while_disconnected_or_just_reconnected() -> None:
    clock = Clock()
    state = connected_state(clock, gone_after_s=60)
    state.fold(beat("h:1", 0))
    state.connection.connected = False  # the server is away: no beat can arrive
    clock.now = at(30)
    view = state.workers["h:1"]
    assert state.worker_state(view, clock.now) == "unjudged"
    assert not any("lost" in a.message for a in state.alerts())
    clock.now = at(120)  # silent past gone-after, but the console could not have heard it
    assert [v.beat.worker_id for _, views in state.worker_groups() for v in views] == ["h:1"]
    state.connection.connected, state.connection.since = True, at(120)  # back
    clock.now = at(130)  # less than a beat window (3 x 5 s) since it reconnected
    assert state.worker_state(view, clock.now) == "unjudged"
    assert state.worker_groups() and not state.gone
    clock.now = at(136)  # a whole window connected and still no beat: now it is evidence
    assert state.worker_state(view, clock.now) == "lost"
    assert state.worker_groups() == [] and set(state.gone) == {"h:1"}


def test_processes_of_one_worker_command_are_one_group() -> None:
    clock = Clock()
    state = connected_state(clock)
    state.fold(beat("h:11", 0, command="h:10"))
    state.fold(beat("h:12", 0, command="h:10"))
    state.fold(beat("h:20", 0))  # started some other way: a group of its own
    groups = state.worker_groups()
    assert [(command, [v.beat.worker_id for v in views]) for command, views in groups] == [
        ("h:10", ["h:11", "h:12"]),
        ("h:20", ["h:20"]),
    ]


def test_a_failed_workflow_is_one_failure_with_its_steps_error() -> None:
    state = ConsoleState(clock=Clock())
    wid, step = "wf1", "step-of-wf1"
    state.fold(PsdWorkflowSubmitted(workflow_id=wid, filename="bad.psd", input_key="k",
                                    size_bytes=3, correlation_id=wid, timestamp=at(0)))  # fmt: skip
    state.fold(TaskStarted(task_id=wid, task_name="psd.process", worker_id="w", timestamp=at(1),
                           correlation_id=wid))  # fmt: skip
    state.fold(TaskQueued(task_id=step, task_name="psd.validate", correlation_id=wid,
                          timestamp=at(1)))  # fmt: skip
    state.fold(TaskFailed(task_id=step, task_name="psd.validate", worker_id="w", duration_ms=1,
                          error_type="InvalidPsdError", error_message="no 8BPS signature",
                          correlation_id=wid, timestamp=at(2)))  # fmt: skip
    state.fold(PsdWorkflowFailed(workflow_id=wid, filename="bad.psd", step="validate",
                                 error_code="invalid_psd", error_message="no 8BPS signature",
                                 correlation_id=wid, timestamp=at(3)))  # fmt: skip
    state.fold(TaskFailed(task_id=wid, task_name="psd.process", worker_id="w", duration_ms=2,
                          error_type="WorkflowStepError", error_message="validate failed",
                          correlation_id=wid, timestamp=at(3)))  # fmt: skip
    rows = state.failure_rows()
    assert [(r.key, r.step, r.error_type, r.error_message) for r in rows] == [
        (wid, "validate", "invalid_psd", "no 8BPS signature")
    ]
    # A step failure seen after its workflow failed is not listed either.
    state.fold(TaskFailed(task_id="late", task_name="psd.parse", worker_id="w", duration_ms=1,
                          error_type="E", error_message="m", correlation_id=wid,
                          timestamp=at(4)))  # fmt: skip
    assert [r.key for r in state.failure_rows()] == [wid]
