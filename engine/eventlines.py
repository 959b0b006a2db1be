"""Stored events as text lines or NDJSON, for `onemanage events`, scripts and jq.

A type pattern (``psd.*``, ``task.failed``) becomes the narrowest EVENTS
subject that holds every match (each event is stored on ``events.<type>``),
so the server sends little more than what is shown; fnmatch then decides.
An event this process cannot parse is shown too, marked unreadable with the
reason: a dump that hid them would hide the fault one is looking for. (Types
of another application read as events with ``--import MODULE``.)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
from datetime import timedelta
from typing import Any

from engine.events.schemas import BaseEvent, UnparsedEvent
from engine.streams import EVENTS_SUBJECTS

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ENVELOPE = ("event_type", "event_version", "timestamp", "event_id")


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '1h', '2d' -> a timedelta: an argparse ``type`` for every --since."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number and s, m, h or d (e.g. 10m)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def subject_for(pattern: str) -> str:
    """The narrowest EVENTS subject holding every event type ``pattern`` matches."""
    literal: list[str] = []
    for token in pattern.split("."):
        if any(c in token for c in "*?[") or not token:
            break
        literal.append(token)
    else:
        return "events." + pattern  # no wildcard: the one subject
    return ".".join(["events", *literal, ">"]) if literal else EVENTS_SUBJECTS


def matches(pattern: str | None, event_type: str | None) -> bool:
    return pattern is None or fnmatch.fnmatchcase(event_type or "", pattern)


def as_json(
    event: BaseEvent | UnparsedEvent, seq: int, subject: str, data: bytes
) -> dict[str, Any]:
    """One NDJSON object: the event's fields, its stream sequence and subject.

    A payload this process cannot read as an event keeps its own fields when it
    is a JSON object (an event type of another application, a newer version),
    with ``unreadable`` saying why.
    """
    if isinstance(event, BaseEvent):
        return {"seq": seq, "subject": subject, **event.model_dump(mode="json")}
    return {
        "seq": seq,
        "subject": subject,
        **_fields(data),
        "unreadable": event.reason,
        "detail": event.detail,
    }


def _fields(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def as_line(event: BaseEvent | UnparsedEvent, seq: int, subject: str, width: int = 160) -> str:
    """Time, type and the fields set, but not the envelope, cut to ``width``."""
    if isinstance(event, UnparsedEvent):
        what = f"UNREADABLE {event.event_type or ''}".strip()
        return f"{'-':24} {what:28} seq {seq} on {subject}: {event.reason}: {event.detail}"
    fields = event.model_dump(mode="json", exclude=set(_ENVELOPE), exclude_none=True)
    fields["source"] = fields.pop("source")  # who said it, after what was said
    text = " ".join(f"{key}={json.dumps(value)}" for key, value in fields.items())
    if len(text) > width:
        text = text[: width - 1] + "…"
    when = event.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{when:24} {event.event_type:28} {text}"
