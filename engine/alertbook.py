"""The alert evaluator's book: who evaluates, what each rule's streak is, what is raised.

One key of the ``onemanage_alerts`` bucket. The evaluator (engine.alerting)
writes it by compare-and-set, reading from the stream leader; readers (the
console, ``check``) read it by direct get, without a consumer, so a viewer
sees what is raised now even when the AlertRaised event is older than its
history, and an alert whose clear it missed goes away with the book.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from engine.broker import OneManageBroker
from engine.direct import direct_all
from engine.events.schemas import AlertCleared, AlertRaised
from engine.streams import ALERTS_BUCKET

BOOK_KEY = "book"
LEASE_LOOKS = 3  # an evaluator silent this many looks (and LEASE_SLACK_S) is replaced
LEASE_SLACK_S = 10.0  # so that a slow look on a loaded host is not taken for a dead evaluator
TIME_HEADER = "Nats-Time-Stamp"  # when the server stored the message (direct get)

AlertEvent = Annotated[AlertRaised | AlertCleared, Field(discriminator="event_type")]


def lease_s(evaluate_every_s: float) -> float:
    """How long a book may go unwritten before another process takes the evaluator's place."""
    return LEASE_LOOKS * evaluate_every_s + LEASE_SLACK_S


class Tracked(BaseModel):
    """One rule about one thing: its streaks, and its alert while raised."""

    rule: str
    about: str
    over: int = 0  # looks in a row not ok
    under: int = 0  # looks in a row ok, while raised
    alert_id: str | None = None
    level: int = 0  # the raised alert's severity (1 warning, 2 critical)
    raised_at: datetime | None = None
    text: str = ""  # what the look that raised (or escalated) it found


class Book(BaseModel):
    evaluator: str = ""
    alerts: dict[str, Tracked] = Field(default_factory=dict)
    outbox: list[AlertEvent] = Field(default_factory=list)

    def raised(self) -> list[Tracked]:
        return [t for t in self.alerts.values() if t.alert_id is not None]


async def read_book(broker: OneManageBroker, timeout: float = 5.0) -> tuple[Book, datetime | None]:
    """The book as any replica has it, and when it was written (None: no look yet)."""
    subject = f"$KV.{ALERTS_BUCKET}.{BOOK_KEY}"
    found = await direct_all(broker.nc, f"KV_{ALERTS_BUCKET}", {"multi_last": [subject]}, timeout)
    latest = [msg for msg in found if msg.data]
    if not latest:
        return Book(), None
    stamp = (latest[-1].headers or {}).get(TIME_HEADER, "")
    return Book.model_validate_json(latest[-1].data), _stamp(stamp)


def _stamp(value: str) -> datetime | None:
    """An RFC 3339 time with up to nanoseconds (Python reads microseconds)."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if match is None:
        return None
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + (match.group(2) or "")[:7] + zone)
