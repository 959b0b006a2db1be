"""Versions and parsing: pure functions, table-tested."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from engine.events.schemas import (
    EVENT_TYPES,
    BaseEvent,
    TaskFailed,
    TaskQueued,
    UnparsedEvent,
    is_version_compatible,
    parse_event,
)


@pytest.mark.parametrize(
    ("received", "supported", "compatible"),
    [
        ("1.0", "1.0", True),
        ("1.3", "1.0", True),  # newer minor: extra fields ignored
        ("1.0", "1.3", True),  # older minor: only optional fields missing
        ("1.10", "1.9", True),  # numeric, not lexical
        ("2.0", "1.0", False),  # newer major
        ("1.5", "2.0", False),  # older major
        ("0.9", "1.0", False),
        ("1", "1.0", False),  # malformed
        ("1.0.1", "1.0", False),
        ("v1.0", "1.0", False),
        ("", "1.0", False),
        ("1.x", "1.0", False),
    ],
)
def test_is_version_compatible(received: str, supported: str, compatible: bool) -> None:
    assert is_version_compatible(received, supported) is compatible


def _queued(**changes: object) -> dict[str, object]:
    data = json.loads(TaskQueued(task_id="t1", task_name="x").model_dump_json())
    data.update(changes)
    return data


def test_every_event_has_the_base_fields_and_a_registered_type() -> None:
    event = TaskQueued(task_id="t1", task_name="x")
    assert event.event_type == "task.queued"
    assert event.event_version == "1.0"
    assert len(event.event_id) == 32
    assert event.timestamp.tzinfo is not None
    assert event.subject == "events.task.queued"
    assert EVENT_TYPES["task.queued"] is TaskQueued
    for event_type, cls in EVENT_TYPES.items():
        assert issubclass(cls, BaseEvent)
        assert cls.model_fields["event_type"].default == event_type


def test_timestamps_are_stored_in_utc() -> None:
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=8)))
    event = TaskQueued(task_id="t", task_name="x", timestamp=local)
    assert event.timestamp.utcoffset() == timedelta(0)
    assert event.timestamp == local


def test_a_naive_timestamp_is_refused() -> None:
    result = parse_event(_queued(timestamp="2026-01-01T12:00:00"))
    assert isinstance(result, UnparsedEvent)
    assert result.reason == "invalid"
    assert "timestamp" in result.detail


def test_round_trip_through_bytes() -> None:
    event = TaskFailed(
        task_id="t", task_name="x", worker_id="w", duration_ms=1.5,
        error_type="ValueError", error_message="boom", correlation_id="c",
    )  # fmt: skip
    parsed = parse_event(event.model_dump_json().encode())
    assert parsed == event


def test_newer_minor_with_unknown_fields_is_read() -> None:
    parsed = parse_event(_queued(event_version="1.7", added_in_1_7="ignored"))
    assert isinstance(parsed, TaskQueued)
    assert parsed.event_version == "1.7"
    assert not hasattr(parsed, "added_in_1_7")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\xffnot json", "not_json"),
        ("{", "not_json"),
        (b"[1, 2]", "not_object"),
        (42, "not_object"),
        ({"event_version": "1.0"}, "missing_type"),
        ({"event_type": "nobody.reads.this", "event_version": "1.0"}, "unknown_type"),
        (_queued(event_version="2.0"), "incompatible_version"),
        (_queued(event_version="one"), "incompatible_version"),
        (_queued(event_version=None), "incompatible_version"),
        (_queued(task_id=None), "invalid"),
        (_queued(timestamp="yesterday"), "invalid"),
    ],
)
def test_unreadable_payloads_say_why_and_never_raise(raw: object, reason: str) -> None:
    result = parse_event(raw)
    assert isinstance(result, UnparsedEvent)
    assert result.reason == reason
    assert result.detail


def test_an_unparsed_event_keeps_what_it_could_read() -> None:
    result = parse_event(_queued(event_version="3.1", event_id="abc"))
    assert isinstance(result, UnparsedEvent)
    assert (result.event_type, result.event_version, result.event_id) == (
        "task.queued",
        "3.1",
        "abc",
    )


def test_now_is_recent() -> None:
    assert datetime.now(UTC) - TaskQueued(task_id="t", task_name="x").timestamp < timedelta(
        minutes=1
    )


def _nested(depth: int) -> str:
    return '{"d":' * depth + "1" + "}" * depth


def test_a_deeply_nested_event_is_unparsed_not_raised() -> None:
    """json.loads raises RecursionError near 1,000 levels: it must stay this event's problem."""
    raw = '{"event_type":"task.queued","event_version":"1.0","x":' + _nested(1000) + "}"
    event = parse_event(raw.encode())
    assert isinstance(event, UnparsedEvent) and event.reason == "too_deep"


def test_nesting_is_bounded_even_when_it_decodes() -> None:
    valid = TaskQueued(task_id="t1", task_name="demo").model_dump(mode="json")
    event = parse_event({**valid, "x": json.loads(_nested(40))})
    assert isinstance(event, UnparsedEvent) and event.reason == "too_deep"
    assert isinstance(parse_event({**valid, "x": json.loads(_nested(5))}), TaskQueued)
