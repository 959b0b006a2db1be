"""The alert evaluator's book: who evaluates, what each rule's streak is, what is raised.

One key of the ``onemanage_alerts`` bucket. The evaluator (engine.alerting)
writes it by compare-and-set, reading from the stream leader; readers (the
console, ``check``) read it by direct get, without a consumer, so a viewer
sees what is raised now even when the AlertRaised event is older than its
history, and an alert whose clear it missed goes away with the book.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from engine.broker import OneManageBroker
from engine.direct import direct_all
from engine.events.schemas import AlertCleared, AlertRaised
from engine.streams import ALERTS_BUCKET

BOOK_KEY = "book"

AlertEvent = Annotated[AlertRaised | AlertCleared, Field(discriminator="event_type")]


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


async def read_book(broker: OneManageBroker, timeout: float = 5.0) -> Book:
    """The book as any replica has it (an empty one before the first look)."""
    subject = f"$KV.{ALERTS_BUCKET}.{BOOK_KEY}"
    found = await direct_all(broker.nc, f"KV_{ALERTS_BUCKET}", {"multi_last": [subject]}, timeout)
    latest = [msg for msg in found if msg.data]
    return Book.model_validate_json(latest[-1].data) if latest else Book()
