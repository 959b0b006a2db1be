"""Versioned events: BaseEvent, every event type, the registry and parse_event().

Versions are MAJOR.MINOR. A minor bump only adds optional fields, so a reader
accepts any minor of its major (newer minors' unknown fields are ignored); a
major bump changes meaning, so other majors are refused. Readers never trust
a payload: parse_event() returns an UnparsedEvent with the reason instead of
raising, so one bad message cannot stop a listener or the console.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.identity import process_identity, utc_now

_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def new_id() -> str:
    return uuid.uuid4().hex


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) of a "MAJOR.MINOR" string; ValueError for anything else."""
    match = _VERSION.match(version) if isinstance(version, str) else None
    if match is None:
        raise ValueError(f"not a MAJOR.MINOR version: {version!r}")
    return int(match.group(1)), int(match.group(2))


def is_version_compatible(received: str, supported: str) -> bool:
    """Can a reader written for ``supported`` handle an event of version ``received``?

    Same major: yes (older minors lack only optional fields, newer minors add
    fields the reader ignores). Another major, or a malformed version: no.
    """
    try:
        return parse_version(received)[0] == parse_version(supported)[0]
    except ValueError:
        return False


EVENT_TYPES: dict[str, type[BaseEvent]] = {}


class BaseEvent(BaseModel):
    """What every event carries. Subclasses fix event_type and their event_version."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: str
    event_version: str = "1.0"
    event_id: str = Field(default_factory=new_id)
    timestamp: AwareDatetime = Field(default_factory=utc_now)
    source: str = Field(default_factory=process_identity)
    correlation_id: str | None = None
    causation_id: str | None = None

    SUPPORTED_VERSION: ClassVar[str] = "1.0"

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        event_type = cls.model_fields["event_type"].default
        if not isinstance(event_type, str):
            return  # an abstract intermediate class
        if event_type in EVENT_TYPES:
            raise TypeError(f"event type {event_type!r} is registered twice")
        cls.SUPPORTED_VERSION = str(cls.model_fields["event_version"].default)
        parse_version(cls.SUPPORTED_VERSION)
        EVENT_TYPES[event_type] = cls

    @field_validator("timestamp")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @property
    def subject(self) -> str:
        return f"events.{self.event_type}"


# -- task lifecycle (published by engine.middleware and engine.deadletters) ------------


class TaskEvent(BaseEvent):
    task_id: str
    task_name: str


class TaskQueued(TaskEvent):
    event_type: Literal["task.queued"] = "task.queued"
    event_version: str = "1.0"


class TaskStarted(TaskEvent):
    """``queued_at`` (1.1): when the task was kicked, so queue wait needs no other event."""

    event_type: Literal["task.started"] = "task.started"
    event_version: str = "1.1"
    worker_id: str
    attempt: int = 1
    queued_at: AwareDatetime | None = None


class TaskSucceeded(TaskEvent):
    event_type: Literal["task.succeeded"] = "task.succeeded"
    event_version: str = "1.0"
    worker_id: str
    attempt: int = 1
    duration_ms: float


class TaskFailed(TaskEvent):
    event_type: Literal["task.failed"] = "task.failed"
    event_version: str = "1.0"
    worker_id: str
    attempt: int = 1
    duration_ms: float
    error_type: str
    error_message: str
    will_retry: bool = False


DeadLetterReason = Literal["max_deliveries", "undecodable", "wrong_subject"]


class TaskReplayed(BaseEvent):
    """A dead letter's stored task sent again, as a new delivery with a new task id.

    Published by the worker that ran the replay (engine.tasks.control), with the
    original's correlation id, so a trace of the original shows where it went.
    Not a TaskEvent: it is no transition of a task run, and statistics skip it.
    """

    event_type: Literal["task.replayed"] = "task.replayed"
    event_version: str = "1.0"
    replay_of: str  # the dead-lettered task's id
    dead_letter_id: str  # its TaskDeadLettered event id
    new_task_id: str
    task_name: str


class TaskDeadLettered(TaskEvent):
    """A task no worker will run, kept here with its payload for later.

    ``reason``: the server stopped delivering it after max deliver, or a
    worker refused it because it could not be decoded or its task name does
    not belong to the subject it came on (1.1; 1.0 events were all max
    deliveries). ``error`` says what was wrong with it.
    """

    event_type: Literal["task.dead_lettered"] = "task.dead_lettered"
    event_version: str = "1.1"
    stream: str
    consumer: str
    stream_seq: int
    deliveries: int
    payload: str = ""
    payload_truncated: bool = False
    reason: DeadLetterReason = "max_deliveries"
    error: str = ""


# -- workers ---------------------------------------------------------------------------


class ListenerCounters(BaseModel):
    """One listener's counts in this process; ``duplicates`` and ``missed`` since 1.1."""

    handled: int = 0
    failed: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    duplicates: int = 0  # redelivered events it had already handled, not handled again
    missed: int = 0  # events EVENTS discarded (discard-old) before this listener read them


class LaneHealth(BaseModel):
    """Whether one lane of a worker is pulling; a worker with a degraded lane is not healthy."""

    state: Literal["ok", "degraded"] = "ok"
    restarts: int = 0  # pull or dispatch loops that died and were started again
    failures: int = 0  # consecutive failed fetches
    last_error: str = ""


class WorkerHeartbeat(BaseEvent):
    """A worker process is alive; ``lane_health`` (1.1) says whether each lane pulls.

    ``store_error`` (1.2) is why its last write to the store was refused (a full
    store refuses every write but tells only the writer, while EVENTS, which
    discards old messages, may still take the heartbeat that says so).
    """

    event_type: Literal["worker.heartbeat"] = "worker.heartbeat"
    event_version: str = "1.2"
    worker_id: str
    host: str
    pid: int
    state: Literal["running", "stopping"] = "running"
    started_at: AwareDatetime
    interval_s: float
    running: int = 0
    processed: int = 0
    failed: int = 0
    lanes: list[str] = Field(default_factory=list)
    listeners: dict[str, ListenerCounters] = Field(default_factory=dict)
    lane_health: dict[str, LaneHealth] = Field(default_factory=dict)
    store_error: str | None = None

    @property
    def degraded_lanes(self) -> list[str]:
        return sorted(name for name, lane in self.lane_health.items() if lane.state != "ok")


# -- alerts (published by the elected evaluator, engine.alerting) ----------------------

AlertSeverity = Literal["warning", "critical"]


class AlertRaised(BaseEvent):
    """A rule crossed its threshold and stayed there (hysteresis: engine.alerting).

    ``alert_id`` is shared by the raise, any escalation (the same alert got
    worse: ``escalated``) and the clear, so a pager bridge can pair them.
    ``rule`` names the rule (consumer_lag, worker_lost ...), ``about`` what it
    is about (a durable, a task type, a worker id).
    """

    event_type: Literal["alert.raised"] = "alert.raised"
    event_version: str = "1.0"
    alert_id: str
    rule: str
    about: str
    severity: AlertSeverity
    text: str
    escalated: bool = False


class AlertCleared(BaseEvent):
    """A raised alert's rule has been back within its threshold long enough."""

    event_type: Literal["alert.cleared"] = "alert.cleared"
    event_version: str = "1.0"
    alert_id: str
    rule: str
    about: str
    text: str
    raised_at: AwareDatetime


# -- the PSD workflow (correlation_id is the workflow id) -------------------------------


class PsdWorkflowEvent(BaseEvent):
    workflow_id: str
    filename: str


class PsdWorkflowSubmitted(PsdWorkflowEvent):
    """A workflow was kicked. Announced by the submitter after the kick and again by the
    orchestrator when it starts, with one event id (engine.tasks.names), so it is stored
    once within EVENTS' duplicate window and a later copy says nothing new.

    ``resubmitted_from`` (1.1): the workflow whose stored input this one runs again
    (a retry or a resubmit), None for a new file.
    """

    event_type: Literal["psd.workflow.submitted"] = "psd.workflow.submitted"
    event_version: str = "1.1"
    input_key: str
    size_bytes: int
    resubmitted_from: str | None = None


class PsdStepCompleted(PsdWorkflowEvent):
    event_type: Literal["psd.step.completed"] = "psd.step.completed"
    event_version: str = "1.0"
    step: str
    duration_ms: float
    summary: dict[str, Any] = Field(default_factory=dict)


class PsdWorkflowCompleted(PsdWorkflowEvent):
    event_type: Literal["psd.workflow.completed"] = "psd.workflow.completed"
    event_version: str = "1.0"
    duration_ms: float
    manifest: dict[str, Any]


class PsdWorkflowFailed(PsdWorkflowEvent):
    event_type: Literal["psd.workflow.failed"] = "psd.workflow.failed"
    event_version: str = "1.0"
    step: str
    error_code: str
    error_message: str
    duration_ms: float = 0.0


# -- reading ---------------------------------------------------------------------------

UnparsedReason = Literal[
    "not_json",
    "too_deep",
    "not_object",
    "missing_type",
    "unknown_type",
    "incompatible_version",
    "invalid",
    "wrong_subject",
]


@dataclass(frozen=True, slots=True)
class UnparsedEvent:
    """A payload a reader could not use, and why; counted and skipped, never raised."""

    reason: UnparsedReason
    detail: str
    event_type: str | None = None
    event_version: str | None = None
    event_id: str | None = None
    raw: str = ""


def _excerpt(raw: object, limit: int = 500) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return text if len(text) <= limit else text[:limit] + "..."


MAX_EVENT_DEPTH = 32  # no event of ours nests deeper than a handful of levels


def too_deep(value: object, limit: int = MAX_EVENT_DEPTH) -> bool:
    """Does ``value`` nest lists or dicts deeper than ``limit``? Iterative: no recursion."""
    level: list[object] = [value]
    for _ in range(limit + 1):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def parse_event(raw: object, subject: str | None = None) -> BaseEvent | UnparsedEvent:
    """Turn bytes, text or a decoded dict into its event class; never raises.

    Nesting is bounded: json.loads raises RecursionError (not ValueError) near
    1,000 levels, and a deep value would make every reader after it pay.
    Given the ``subject`` it was stored on, an event must be on its own
    (``events.<event_type>``): the server's permissions decide who may publish
    on which subject, so a body claiming another type is refused, not believed.
    """
    data = raw
    if isinstance(raw, bytes | bytearray | str):
        try:
            data = json.loads(raw)
        except RecursionError:
            return UnparsedEvent("too_deep", "nested too deeply to decode", raw=_excerpt(raw))
        except Exception as exc:  # ValueError, MemoryError: this payload only
            return UnparsedEvent("not_json", f"{type(exc).__name__}: {exc}", raw=_excerpt(raw))
    if too_deep(data):
        return UnparsedEvent(
            "too_deep", f"nested deeper than {MAX_EVENT_DEPTH} levels", raw=_excerpt(raw)
        )
    if not isinstance(data, dict):
        return UnparsedEvent("not_object", f"payload is {type(data).__name__}", raw=_excerpt(raw))
    event_type = data.get("event_type")
    version = data.get("event_version")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    if not isinstance(event_type, str):
        return UnparsedEvent("missing_type", "no event_type", None, None, event_id, _excerpt(raw))
    if subject is not None and subject != f"events.{event_type}":
        return UnparsedEvent(
            "wrong_subject",
            f"a {event_type} event stored on {subject}",
            event_type,
            str(version),
            event_id,
            _excerpt(raw),
        )
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        return UnparsedEvent(
            "unknown_type", f"no reader for {event_type}", event_type, str(version), event_id
        )
    if not isinstance(version, str) or not is_version_compatible(version, cls.SUPPORTED_VERSION):
        return UnparsedEvent(
            "incompatible_version",
            f"{event_type} {version!r} is not readable as {cls.SUPPORTED_VERSION}",
            event_type,
            str(version),
            event_id,
        )
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return UnparsedEvent("invalid", problems, event_type, version, event_id, _excerpt(raw))
