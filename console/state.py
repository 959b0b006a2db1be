"""The console's model: every event folded into bounded views and exact counters.

No Textual here. The pump folds events in as fast as they arrive; the screen
reads this model on a timer. Counters are exact however many events pass;
only what is kept for display is bounded (rows, failures, traces), and when
rows must go, successes go first: a failure is never evicted before a success.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from engine.alertbook import Book
from engine.alerts import Thresholds
from engine.counts import Counts, counts, is_workflow, label
from engine.events.schemas import (
    AlertCleared,
    AlertRaised,
    AlertSeverity,
    BaseEvent,
    PsdStepCompleted,
    PsdWorkflowCompleted,
    PsdWorkflowEvent,
    PsdWorkflowFailed,
    PsdWorkflowSubmitted,
    TaskDeadLettered,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskReplayed,
    TaskStarted,
    TaskSucceeded,
    UnparsedEvent,
    WorkerHeartbeat,
)
from engine.events.stats import TaskTypeStats
from engine.events.windows import WindowFigures, window
from engine.identity import utc_now
from engine.liveness import MISSED_BEATS, Liveness, command_of
from engine.monitor import ConsumerFigures, StreamFigures, missed_events
from engine.streams import TASKS

Clock = Callable[[], datetime]
RowKind = Literal["task", "workflow"]
WorkerState = Literal["alive", "lost", "stopped", "unjudged"]
GONE_AFTER_S = Thresholds().worker_gone_after_s  # the alerts' default, unless the app sets it
MAX_GONE = 10_000

# A state only moves forward: events of one task can arrive out of order.
_RANK = {
    "queued": 0,
    "submitted": 0,
    "running": 1,
    "retrying": 2,
    "succeeded": 3,
    "completed": 3,
    "failed": 3,
    "dead_lettered": 4,
}
MAX_STEPS = 100  # a workflow row keeps the timings of at most this many steps
CLEARED_KEPT = 20  # the engine's alerts that cleared, most recent first
BOOK_MARGIN = timedelta(seconds=10)  # a raise younger than this may not be in the book yet
FAILED_STATES = frozenset({"failed", "dead_lettered"})
DONE_STATES = frozenset({"succeeded", "completed"}) | FAILED_STATES


@dataclass(slots=True)
class Row:
    """One task or workflow as the task flow shows it."""

    key: str
    kind: RowKind
    name: str
    state: str
    created: datetime
    updated: datetime
    correlation_id: str
    worker: str | None = None
    attempt: int = 1
    duration_ms: float | None = None
    step: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    steps: list[tuple[str, float]] = field(default_factory=list)
    manifest: dict[str, object] | None = None
    stuck: bool = False  # an open workflow without progress for too long (mark_stuck)
    replayed_as: str | None = None  # a dead letter an operator replayed: the new task's id

    @property
    def shown_state(self) -> str:
        """The state as a person reads it: "stuck" says more than "running" there, and a
        dead letter that was replayed is dealt with."""
        if self.state == "dead_lettered" and self.replayed_as:
            return "replayed"
        return "stuck" if self.stuck else self.state

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def done(self) -> bool:
        return self.state in DONE_STATES


@dataclass(slots=True)
class WorkerView:
    beat: WorkerHeartbeat
    last_seen: datetime

    def silent_s(self, now: datetime) -> float:
        return (now - self.last_seen).total_seconds()

    def lost(self, now: datetime, missed_beats: int = MISSED_BEATS) -> bool:
        """Silent for ``missed_beats`` intervals (whether that is evidence: ConsoleState)."""
        return self.silent_s(now) > self.beat.interval_s * missed_beats


@dataclass(slots=True)
class ConsumerView:
    """Latest figures of a durable plus what the previous poll lets us derive."""

    figures: ConsumerFigures
    seen_at: datetime
    ack_rate: float = 0.0  # acknowledgements per second since the previous poll
    delivery_rate: float = 0.0

    @property
    def drain_seconds(self) -> float | None:
        """At the current ack rate, when the backlog is gone (inf: not draining)."""
        backlog = self.figures.pending + self.figures.ack_pending
        if backlog == 0:
            return 0.0
        return backlog / self.ack_rate if self.ack_rate > 0 else math.inf


@dataclass(slots=True)
class StreamView:
    figures: StreamFigures
    seen_at: datetime
    delivered: int  # deliveries to all its consumers so far (for the rate out)
    rate_in: deque[float] = field(default_factory=lambda: deque(maxlen=300))
    rate_out: deque[float] = field(default_factory=lambda: deque(maxlen=300))


@dataclass(frozen=True, slots=True)
class Alert:
    severity: Literal["warning", "error"]
    message: str


@dataclass(slots=True)
class RaisedAlert:
    """An alert of the engine's evaluator (AlertRaised) that has not cleared yet."""

    alert_id: str
    rule: str
    about: str
    severity: AlertSeverity
    text: str
    raised_at: datetime  # the first raise; an escalation keeps it
    updated: datetime  # the latest raise or escalation
    escalated: bool = False

    @property
    def subject(self) -> str:
        """The rule and what it is about ("worker_lost vm:42", or "stuck_workflows")."""
        return f"{self.rule} {self.about}".strip()


@dataclass(frozen=True, slots=True)
class ClearedAlert:
    """An engine alert that cleared (AlertCleared), kept a while so its end is seen too."""

    alert_id: str
    rule: str
    about: str
    text: str
    raised_at: datetime
    cleared_at: datetime

    @property
    def subject(self) -> str:
        return f"{self.rule} {self.about}".strip()


@dataclass(slots=True)
class Connection:
    url: str = ""
    connected: bool = False
    rtt_ms: float | None = None
    since: datetime | None = None
    disconnects: int = 0
    error: str | None = None
    connecting: bool = False  # the first attempt has no answer yet: not "unreachable"


class RowFilter:
    """`/` filter: words AND-ed; ``state:``, ``task:``, ``worker:`` fields; ``-`` negates.

    ``problems`` says what cannot match as meant (an unknown state, an unknown key), so a
    typo shows a warning instead of an empty list that looks like no such rows.
    """

    FIELDS = ("state", "task", "worker")
    STATES = tuple(_RANK)

    def __init__(self, text: str = "") -> None:
        self.text = text.strip()
        self.terms: list[tuple[bool, str | None, str]] = []
        self.problems: list[str] = []
        for word in self.text.split():
            negate = word.startswith("-") and len(word) > 1
            word = word[1:] if negate else word
            name, _, value = word.partition(":")
            if value and name in self.FIELDS:
                self.terms.append((negate, name, value.lower()))
                if name == "state" and not any(s.startswith(value.lower()) for s in self.STATES):
                    self.problems.append(
                        f"unknown state {value!r}: known are {', '.join(self.STATES)}"
                    )
            else:
                self.terms.append((negate, None, word.lower()))
                if value and name.isalpha():
                    self.problems.append(
                        f"unknown key {name + ':'!r} (searched as a word): known are "
                        + ", ".join(f"{f}:" for f in self.FIELDS)
                    )

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, row: Row) -> bool:
        for negate, name, value in self.terms:
            if name == "state":
                hit = row.state.startswith(value) or (value == "failed" and row.failed)
            elif name == "task":
                hit = value in row.name.lower()
            elif name == "worker":
                hit = value in (row.worker or "").lower()
            else:
                hit = any(
                    value in text.lower()
                    for text in (row.name, row.key, row.correlation_id, row.state,
                                 row.worker or "", row.error_message or "", row.step or "")
                )  # fmt: skip
            if hit == negate:
                return False
        return True


def clock_time(moment: datetime, now: datetime) -> str:
    """Local wall time; the date too when it is not today's, so an old time is not misread."""
    local = moment.astimezone()
    same_day = local.date() == now.astimezone().date()
    return local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class ConsoleState:
    """Everything the console shows, folded from events and figures."""

    def __init__(
        self,
        max_rows: int = 2000,
        max_failures: int = 1000,
        trace_budget: int = 20_000,
        clock: Clock = utc_now,
        gone_after_s: float = GONE_AFTER_S,
    ) -> None:
        self.max_rows = max_rows
        self.gone_after_s = gone_after_s
        self.max_failures = max_failures
        self.trace_budget = trace_budget
        self.trace_cap = max(1, min(2000, trace_budget))  # events kept per correlation id
        self.clock = clock
        self.rows: OrderedDict[str, Row] = OrderedDict()
        self.failures: OrderedDict[str, Row] = OrderedDict()
        self.traces: OrderedDict[str, list[BaseEvent]] = OrderedDict()
        self._trace_events = 0
        self.workers: dict[str, WorkerView] = {}
        self.gone: dict[str, datetime] = {}  # workers aged out (no goodbye): their last beat
        self.streams: dict[str, StreamView] = {}
        self.consumers: dict[str, ConsumerView] = {}
        self.connection = Connection()
        # The engine's shared statistics (engine.events.stats), read by the pump: the same
        # figures `onemanage status` shows, from every worker, not only the events seen here.
        self.task_stats: list[TaskTypeStats] = []
        self.stats_read_at: datetime | None = None
        self.stats_error: str | None = None  # why the last read failed; None once one works
        # The evaluator raises a rule about one thing once until it clears, so this holds
        # no more than what it has raised; the cleared ones are bounded.
        self.raised_alerts: dict[str, RaisedAlert] = {}
        self.cleared_alerts: deque[ClearedAlert] = deque(maxlen=CLEARED_KEPT)
        # Exact counters.
        self.events = 0
        self.by_type: Counter[str] = Counter()
        self.unreadable: Counter[str] = Counter()
        self.last_unreadable: deque[UnparsedEvent] = deque(maxlen=20)
        self.outcomes: Counter[str] = Counter()  # terminal states of tasks and workflows
        self.evicted_rows = 0
        self.last_seq = 0
        self.caught_up = False
        self.version = 0  # bumped on every change, so views redraw only when needed
        self.failures_version = 0  # bumped when a row fails
        self.replayed: set[str] = set()  # dead letters replayed (their task ids)
        # The engine's own view of open workflows (engine.liveness), fed by fold, so "stuck"
        # here is what the stuck_workflows alert means; its threshold is the alert's.
        self.liveness = Liveness(clock(), clock())
        self.stuck_after_s = Thresholds().stuck_after_s

    # -- events -------------------------------------------------------------------

    def fold(self, event: BaseEvent | UnparsedEvent, seq: int = 0) -> None:
        """Take one event (or an unreadable payload) into the model."""
        self.events += 1
        self.version += 1
        if seq:
            self.last_seq = max(self.last_seq, seq)
        if isinstance(event, UnparsedEvent):
            self.unreadable[event.reason] += 1
            self.last_unreadable.append(event)
            return
        self.by_type[event.event_type] += 1
        if isinstance(event, WorkerHeartbeat):
            if event.worker_id in self.gone and event.timestamp <= self.gone[event.worker_id]:
                return  # a late copy of a beat from before it was counted gone
            known = self.workers.get(event.worker_id)
            if known is not None and event.timestamp < known.last_seen:
                return  # out of order: the newer beat stays
            self.gone.pop(event.worker_id, None)
            self.workers[event.worker_id] = WorkerView(event, event.timestamp)
            return
        if isinstance(event, AlertRaised | AlertCleared):
            self._engine_alert(event)  # about the system, not part of a task's trace
            return
        self._trace(event)
        if isinstance(event, PsdWorkflowEvent):
            self.liveness.take(event)
        if isinstance(event, TaskEvent):
            self._task(event)
        elif isinstance(event, PsdWorkflowSubmitted | PsdStepCompleted):
            self._workflow_progress(event)
        elif isinstance(event, TaskReplayed):
            self._replayed(event)
        elif isinstance(event, PsdWorkflowCompleted | PsdWorkflowFailed):
            self._workflow_outcome(event)

    def _trace(self, event: BaseEvent) -> None:
        correlation = event.correlation_id or getattr(event, "task_id", None)
        if correlation is None:
            return
        trace = self.traces.get(correlation)
        if trace is None:
            trace = self.traces[correlation] = []
        else:
            self.traces.move_to_end(correlation)
            if isinstance(event, PsdWorkflowSubmitted) and any(
                seen.event_id == event.event_id for seen in trace
            ):
                return  # announced again by its orchestrator, past the duplicate window
        if len(trace) >= self.trace_cap:  # one busy id must not take the whole budget
            del trace[0]
            self._trace_events -= 1
        trace.append(event)
        self._trace_events += 1
        while self._trace_events > self.trace_budget and len(self.traces) > 1:
            _, dropped = self.traces.popitem(last=False)
            self._trace_events -= len(dropped)

    def _row(self, key: str, kind: RowKind, name: str, event: BaseEvent, state: str) -> Row:
        row = self.rows.get(key)
        if row is None:
            row = Row(
                key=key,
                kind=kind,
                name=name,
                state=state,
                created=event.timestamp,
                updated=event.timestamp,
                correlation_id=event.correlation_id or key,
            )
            self.rows[key] = row
            self._evict()
        elif kind == "workflow" and row.kind == "task":
            # Its orchestrator's task was kicked before the workflow was announced, so
            # its task events can come first: the row is the workflow's from now on.
            row.kind, row.name = "workflow", name
        return row

    def _advance(self, row: Row, state: str, event: BaseEvent) -> bool:
        """Move ``row`` to ``state`` unless it is already further; True if it moved."""
        row.updated = max(row.updated, event.timestamp)
        if _RANK[state] < _RANK[row.state]:
            return False
        was_done = row.done
        row.state = state
        if row.done and not was_done:
            self.outcomes[state] += 1
        if row.failed and not self._in_failed_workflow(row):
            self.failures_version += 1
            self.failures[row.key] = row
            self.failures.move_to_end(row.key)
            while len(self.failures) > self.max_failures:
                self.failures.popitem(last=False)
        return True

    def _in_failed_workflow(self, row: Row) -> bool:
        """A step of a workflow that failed: the workflow's failure already says it."""
        workflow = self.rows.get(row.correlation_id)
        return (
            row.kind == "task"
            and workflow is not None
            and workflow is not row
            and workflow.kind == "workflow"
            and workflow.failed
        )

    def _task(self, event: TaskEvent) -> None:
        workflow = self.rows.get(event.task_id)
        if workflow is not None and workflow.kind == "workflow":
            # The orchestrator's own task: its worker and start belong to the workflow row.
            if isinstance(event, TaskStarted):
                workflow.worker = event.worker_id
                self._advance(workflow, "running", event)
            return
        row = self._row(event.task_id, "task", event.task_name, event, "queued")
        if isinstance(event, TaskQueued):
            self._advance(row, "queued", event)
        elif isinstance(event, TaskStarted):
            if self._advance(row, "running", event):
                row.worker, row.attempt = event.worker_id, event.attempt
        elif isinstance(event, TaskSucceeded):
            if self._advance(row, "succeeded", event):
                row.worker, row.attempt = event.worker_id, event.attempt
                row.duration_ms = event.duration_ms
        elif isinstance(event, TaskFailed):
            row.error_type, row.error_message = event.error_type, event.error_message
            row.worker, row.attempt, row.duration_ms = (
                event.worker_id,
                event.attempt,
                event.duration_ms,
            )
            self._advance(row, "retrying" if event.will_retry else "failed", event)
        elif isinstance(event, TaskDeadLettered):
            row.error_type = "dead letter"
            row.attempt = max(row.attempt, event.deliveries)  # the server counted them all
            row.error_message = (
                f"gave up after {event.deliveries} deliveries"
                if event.reason == "max_deliveries"
                else f"refused ({event.reason}): {event.error}"
            )
            self._advance(row, "dead_lettered", event)

    def _workflow_progress(self, event: PsdWorkflowSubmitted | PsdStepCompleted) -> None:
        row = self._row(event.workflow_id, "workflow", f"psd {event.filename}", event, "submitted")
        if isinstance(event, PsdStepCompleted) and len(row.steps) < MAX_STEPS:
            row.steps.append((event.step, event.duration_ms))
            row.step = event.step
            self._advance(row, "running", event)

    def _replayed(self, event: TaskReplayed) -> None:
        """A dead letter an operator replayed is dealt with: its row and the banner say so."""
        row = self.rows.get(event.replay_of)
        if row is None or row.state != "dead_lettered":
            return  # not one this console counted (older than its history)
        row.replayed_as = event.new_task_id
        self.replayed.add(row.key)
        self.failures_version += 1

    def _workflow_outcome(self, event: PsdWorkflowCompleted | PsdWorkflowFailed) -> None:
        row = self._row(event.workflow_id, "workflow", f"psd {event.filename}", event, "submitted")
        row.duration_ms = event.duration_ms
        if isinstance(event, PsdWorkflowCompleted):
            row.manifest = event.manifest
            row.step = None
            self._advance(row, "completed", event)
        else:
            row.step = event.step
            row.error_type, row.error_message = event.error_code, event.error_message
            self._advance(row, "failed", event)
            steps = [
                key
                for key, failed in self.failures.items()
                if failed.kind == "task" and failed.correlation_id == row.key
            ]
            for key in steps:  # one failure: the workflow, its step's error inside it
                del self.failures[key]
            self.failures_version += bool(steps)

    def _engine_alert(self, event: AlertRaised | AlertCleared) -> None:
        """A raise, an escalation (same alert_id: it replaces severity and text) or a clear."""
        if any(c.alert_id == event.alert_id for c in self.cleared_alerts):
            return  # a late copy of an alert that already cleared
        if isinstance(event, AlertCleared):
            self.raised_alerts.pop(event.alert_id, None)
            self.cleared_alerts.append(
                ClearedAlert(
                    alert_id=event.alert_id,
                    rule=event.rule,
                    about=event.about,
                    text=event.text,
                    raised_at=event.raised_at,
                    cleared_at=event.timestamp,
                )
            )
            return
        raised = self.raised_alerts.get(event.alert_id)
        if raised is None:
            self.raised_alerts[event.alert_id] = RaisedAlert(
                alert_id=event.alert_id,
                rule=event.rule,
                about=event.about,
                severity=event.severity,
                text=event.text,
                raised_at=event.timestamp,
                updated=event.timestamp,
                escalated=event.escalated,
            )
            return
        raised.raised_at = min(raised.raised_at, event.timestamp)
        if event.timestamp >= raised.updated:  # an older copy must not undo an escalation
            raised.severity, raised.text = event.severity, event.text
            raised.updated = event.timestamp
            raised.escalated = raised.escalated or event.escalated

    def _evict(self) -> None:
        """Keep at most max_rows rows: oldest successes first, then oldest failures, then any.

        Runs once per tenth of max_rows new rows, so folding stays O(1) amortised.
        """
        if len(self.rows) <= self.max_rows + max(1, self.max_rows // 10):
            return
        passes: tuple[Callable[[Row], bool], ...] = (
            lambda row: row.state in ("succeeded", "completed"),
            lambda row: row.failed,
            lambda row: True,
        )
        for evictable in passes:
            for key in [key for key, row in self.rows.items() if evictable(row)]:
                if len(self.rows) <= self.max_rows:
                    return
                del self.rows[key]
                self.evicted_rows += 1

    def mark_stuck(self) -> list[str]:
        """Flag the workflows without progress for ``stuck_after_s``; returns their ids.

        The open workflows and their last progress are engine.liveness's, the
        comparison the stuck_workflows alert's (engine.alerts): one definition.
        """
        late = {
            wid for wid, seconds in self.liveness.stuck(self.clock())
            if seconds >= self.stuck_after_s
        }  # fmt: skip
        changed = False
        for row in self.rows.values():
            stuck = row.kind == "workflow" and row.key in late and not row.done
            if row.stuck != stuck:
                row.stuck, changed = stuck, True
        if changed:  # a stuck row that failed (cancelled) is in Failures: redraw both
            self.version += 1
            self.failures_version += 1
        return sorted(late)

    # -- figures ------------------------------------------------------------------

    def stream_polled(self, figures: StreamFigures) -> None:
        """A stream's figures: rate in from its last sequence, rate out from its consumers."""
        now = self.clock()
        delivered = sum(
            c.figures.deliveries
            for c in self.consumers.values()
            if c.figures.stream == figures.name
        )
        view = self.streams.get(figures.name)
        if view is None:
            self.streams[figures.name] = StreamView(figures, now, delivered)
        else:
            seconds = max((now - view.seen_at).total_seconds(), 1e-3)
            view.rate_in.append(max(figures.last_seq - view.figures.last_seq, 0) / seconds)
            view.rate_out.append(max(delivered - view.delivered, 0) / seconds)
            view.figures, view.seen_at, view.delivered = figures, now, delivered
        self.version += 1

    def consumers_polled(self, figures: list[ConsumerFigures]) -> None:
        """The durables' figures; poll them before the streams (rates out come from here)."""
        now = self.clock()
        fresh: dict[str, ConsumerView] = {}
        for f in figures:
            key = f"{f.stream}/{f.name}"
            old = self.consumers.get(key)
            view = ConsumerView(f, now)
            if old is not None:
                seconds = max((now - old.seen_at).total_seconds(), 1e-3)
                view.ack_rate = max(f.acked - old.figures.acked, 0) / seconds
                view.delivery_rate = max(f.deliveries - old.figures.deliveries, 0) / seconds
            fresh[key] = view
        self.consumers = fresh
        self.version += 1

    def stats_polled(self, stats: list[TaskTypeStats]) -> None:
        self.task_stats, self.stats_read_at, self.stats_error = stats, self.clock(), None
        self.version += 1

    def book_polled(self, book: Book, read_started: datetime) -> None:
        """What the evaluator's book says is raised now, merged with the alert events.

        The book is written before its events are published, so it is never behind
        them: a raised alert older than the console's history is added from it, and
        one it no longer holds has cleared even if the clear event never came. A
        raise shortly before the read began may still be on its way into the book,
        so only those older than ``BOOK_MARGIN`` are taken for cleared.
        """
        held = {t.alert_id: t for t in book.raised() if t.alert_id is not None}
        for alert_id, tracked in held.items():
            if alert_id in self.raised_alerts or any(
                c.alert_id == alert_id for c in self.cleared_alerts
            ):
                continue
            when = tracked.raised_at or read_started
            self.raised_alerts[alert_id] = RaisedAlert(
                alert_id=alert_id,
                rule=tracked.rule,
                about=tracked.about,
                severity="critical" if tracked.level >= 2 else "warning",
                text=tracked.text,
                raised_at=when,
                updated=when,
            )
        for alert_id, raised in list(self.raised_alerts.items()):
            if alert_id not in held and raised.updated < read_started - BOOK_MARGIN:
                del self.raised_alerts[alert_id]
                self.cleared_alerts.append(
                    ClearedAlert(
                        alert_id=alert_id,
                        rule=raised.rule,
                        about=raised.about,
                        text="cleared (the evaluator's book no longer holds it)",
                        raised_at=raised.raised_at,
                        cleared_at=read_started,
                    )
                )
        self.version += 1

    def stats_unavailable(self, error: str) -> None:
        """A read of the statistics failed: the last ones read stay, marked by ``error``."""
        self.stats_error = error
        self.version += 1

    # -- reading ------------------------------------------------------------------

    def visible_rows(self, row_filter: RowFilter | None = None, limit: int = 1000) -> list[Row]:
        """Newest first, filtered, at most ``limit``."""
        shown: list[Row] = []
        for row in reversed(self.rows.values()):
            if row_filter is None or row_filter.matches(row):
                shown.append(row)
                if len(shown) >= limit:
                    break
        return shown

    def failure_rows(self) -> list[Row]:
        return list(reversed(self.failures.values()))

    def trace(self, correlation_id: str) -> list[BaseEvent]:
        return sorted(self.traces.get(correlation_id, []), key=lambda e: e.timestamp)

    def task_windows(self, seconds: float = 3600.0) -> list[tuple[str, WindowFigures]]:
        """Per task type that did anything in the last ``seconds``: its counts and histograms."""
        now = self.clock()
        shown = []
        for stats in sorted(self.task_stats, key=lambda s: not is_workflow(s)):
            figures = window(stats.recent, now, seconds)
            if figures.run or figures.wait or figures.queued or figures.dead_lettered:
                shown.append((label(stats), figures))
        return shown

    def counts(self) -> Counts | None:
        """The shared counts (engine.counts), None before the statistics were first read."""
        return None if self.stats_read_at is None else counts(self.task_stats)

    # -- workers ------------------------------------------------------------------

    def judging(self, view: WorkerView, now: datetime) -> bool:
        """Whether a missing beat of this worker is evidence: the console has been
        connected for a whole beat window, so it would have received the beats.

        While disconnected, or in the first window after connecting, it could not
        have: no verdict then (neither lost nor gone).
        """
        c = self.connection
        window = view.beat.interval_s * MISSED_BEATS
        return c.connected and c.since is not None and (now - c.since).total_seconds() > window

    def worker_state(self, view: WorkerView, now: datetime) -> WorkerState:
        if view.beat.state == "stopping":
            return "stopped"
        if not view.lost(now):
            return "alive"
        return "lost" if self.judging(view, now) else "unjudged"

    def age_workers(self) -> None:
        """Workers silent without a goodbye for over ``gone_after_s`` leave the list (gone);
        stopped ones once as old. Only while judging (see ``judging``)."""
        now = self.clock()
        for worker_id, view in list(self.workers.items()):
            if view.silent_s(now) <= max(self.gone_after_s, view.beat.interval_s * MISSED_BEATS):
                continue
            if not self.judging(view, now):
                continue
            del self.workers[worker_id]
            self.version += 1
            if view.beat.state == "running":
                self.gone[worker_id] = view.last_seen
                while len(self.gone) > MAX_GONE:
                    del self.gone[next(iter(self.gone))]

    def worker_groups(self) -> list[tuple[str, list[WorkerView]]]:
        """Workers by their ``onemanage worker`` command (aged first), sorted by id."""
        self.age_workers()
        groups: dict[str, list[WorkerView]] = {}
        for _, view in sorted(self.workers.items()):
            groups.setdefault(command_of(view.beat), []).append(view)
        return sorted(groups.items())

    def engine_alerts(self) -> list[RaisedAlert]:
        """The evaluator's alerts still raised: critical first, then the oldest first."""
        return sorted(
            self.raised_alerts.values(),
            key=lambda a: (a.severity != "critical", a.raised_at, a.alert_id),
        )

    def recently_cleared(self, within: timedelta = timedelta(minutes=5)) -> list[ClearedAlert]:
        """The evaluator's alerts that cleared in the last ``within``, newest first."""
        since = self.clock() - within
        return [c for c in reversed(self.cleared_alerts) if c.cleared_at >= since]

    def alerts(self) -> list[Alert]:
        """What needs a person's eyes now, worst first."""
        now = self.clock()
        alerts: list[Alert] = []
        if not self.connection.connected and not self.connection.connecting:
            alerts.append(
                Alert("error", f"server {self.connection.url or '?'} unreachable; reconnecting")
            )
        # The engine's evaluator judged these over time (hysteresis): before the console's own.
        for raised in self.engine_alerts():
            alerts.append(
                Alert(
                    "error" if raised.severity == "critical" else "warning",
                    f"ALERT {raised.subject}: {raised.text} "
                    f"(since {clock_time(raised.raised_at, now)})",
                )
            )
        waiting = self.outcomes["dead_lettered"] - len(self.replayed)
        if waiting > 0:
            alerts.append(Alert("error", f"{waiting} dead-lettered task(s) not replayed"))
        self.age_workers()
        lost = [w for w in self.workers.values() if self.worker_state(w, now) == "lost"]
        if lost:
            alerts.append(
                Alert(
                    "warning",
                    f"{len(lost)} worker(s) lost: {', '.join(w.beat.worker_id for w in lost)}",
                )
            )
        live = [w for w in self.workers.values() if w.beat.state == "running" and not w.lost(now)]
        degraded = [w for w in live if w.beat.degraded_lanes]
        if degraded:
            lanes = sorted({lane for w in degraded for lane in w.beat.degraded_lanes})
            alerts.append(
                Alert(
                    "error",
                    f"{len(degraded)} worker(s) degraded: lane(s) {', '.join(lanes)} not pulling",
                )
            )
        for durable, count in sorted(missed_events(w.beat for w in live).items()):
            alerts.append(
                Alert(
                    "error",
                    f"listener {durable} missed {count} event(s): EVENTS discarded them "
                    "at its limits before it read them",
                )
            )
        backlog = sum(
            c.figures.pending for c in self.consumers.values() if c.figures.stream == TASKS
        )
        if backlog and not live:
            alerts.append(Alert("error", f"{backlog} task(s) waiting and no live worker"))
        for key, view in self.consumers.items():
            if view.figures.impossible:
                f = view.figures
                alerts.append(
                    Alert(
                        "warning",
                        f"{key}: impossible figures (pending {f.pending} > {f.stream_messages} "
                        "stored): server bug? (nats-server#4539)",
                    )
                )
            elif view.figures.pending and (drain := view.drain_seconds or 0.0) > 300:
                eta = "never at this rate" if math.isinf(drain) else f"{drain / 60:.0f} min"
                alerts.append(
                    Alert("warning", f"{key}: backlog {view.figures.pending}, drains {eta}")
                )
        done = self.outcomes["succeeded"] + self.outcomes["completed"]
        failed = self.outcomes["failed"]
        if failed and failed / max(done + failed, 1) > 0.2:
            alerts.append(Alert("warning", f"{failed} of {done + failed} finished tasks failed"))
        if self.unreadable:
            reasons = ", ".join(f"{n} {r}" for r, n in self.unreadable.most_common())
            last = self.last_unreadable[-1] if self.last_unreadable else None
            latest = f"; latest: {last.detail[:70]}" if last else ""
            alerts.append(
                Alert(
                    "warning",
                    f"{sum(self.unreadable.values())} unreadable event(s): {reasons}{latest}",
                )
            )
        return alerts
