"""The alert evaluator: one per cluster, it raises and clears alerts on EVENTS, once each.

Every worker process runs the loop; one of them evaluates. Who, and which
alerts are raised, is one value in the ``onemanage_alerts`` bucket (the
book), written by compare-and-set: the evaluator writes it every look, which
is its lease, and a process that finds it unwritten for three looks (plus ten
seconds of slack for a slow look) takes it over with the same compare-and-set,
so two never both win. A look is ``onemanage check``'s findings (engine.health,
the same rules and thresholds); each finding with a rule is an alert while it
is not ok.

Hysteresis: an alert is raised after ``raise_after`` looks in a row over its
threshold and cleared after ``clear_after`` looks in a row within it. A look
that could not finish changes nothing (a partial look would clear what it
missed). Decided events go into the book's outbox in the same write that
decides them and are published from there (event id as Nats-Msg-Id), then
taken out: an evaluator that dies between the two leaves them to the next,
and the stream's duplicate window stores a republished one once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

from engine import alerts, health
from engine.alertbook import BOOK_KEY, Book, Tracked, lease_s
from engine.broker import OneManageBroker
from engine.events.publisher import publish_event
from engine.events.schemas import AlertCleared, AlertRaised, AlertSeverity
from engine.liveness import Liveness
from engine.streams import ALERTS_BUCKET

logger = logging.getLogger(__name__)

_SEVERITY: dict[int, AlertSeverity] = {alerts.WARNING: "warning", alerts.CRITICAL: "critical"}


def step(book: Book, looked: list[health.Finding], t: alerts.Thresholds, now: datetime) -> None:
    """One complete look: streaks move, alerts raise, escalate and clear (into the outbox)."""
    seen = {finding.key: finding for finding in looked if finding.rule}
    for key in set(book.alerts) | set(seen):
        finding = seen.get(key)
        tracked = book.alerts.get(key)
        if tracked is None:
            assert finding is not None
            tracked = book.alerts[key] = Tracked(rule=finding.rule, about=finding.about)
        bad = finding is not None and finding.level in _SEVERITY
        if bad and finding is not None:
            tracked.over, tracked.under = tracked.over + 1, 0
            if tracked.alert_id is None and tracked.over >= t.raise_after:
                tracked.alert_id, tracked.raised_at = uuid.uuid4().hex, now
                tracked.level, tracked.text = finding.level, finding.text
                book.outbox.append(_raised(tracked, finding, now, escalated=False))
            elif tracked.alert_id is not None and finding.level > tracked.level:
                tracked.level, tracked.text = finding.level, finding.text
                book.outbox.append(_raised(tracked, finding, now, escalated=True))
            continue
        tracked.over = 0
        if tracked.alert_id is None:
            del book.alerts[key]  # nothing to remember
            continue
        tracked.under += 1
        if tracked.under >= t.clear_after:
            text = (
                finding.text
                if finding is not None
                else f"{tracked.rule} {tracked.about}: no longer found (it went away)"
            )
            book.outbox.append(
                AlertCleared(
                    alert_id=tracked.alert_id,
                    rule=tracked.rule,
                    about=tracked.about,
                    text=text,
                    raised_at=tracked.raised_at or now,
                    timestamp=now,
                )
            )
            del book.alerts[key]


def _raised(
    tracked: Tracked, finding: health.Finding, now: datetime, escalated: bool
) -> AlertRaised:
    assert tracked.alert_id is not None
    return AlertRaised(
        alert_id=tracked.alert_id,
        rule=tracked.rule,
        about=tracked.about,
        severity=_SEVERITY[finding.level],
        text=finding.text,
        escalated=escalated,
        timestamp=now,
    )


class Evaluator:
    """The loop of one worker process: evaluate while it holds the lease, else watch it."""

    def __init__(self, broker: OneManageBroker) -> None:
        self.broker = broker
        self.looks = 0  # complete looks this process made as the evaluator
        self.liveness: Liveness | None = None

    @property
    def me(self) -> str:
        """This process (read when used: the module is imported before workers fork)."""
        return self.broker.worker_id

    async def _book(self) -> tuple[Book, int, datetime | None]:
        """The book, its revision and when it was written, from the stream leader."""
        try:
            msg = await self.broker.js.get_last_msg(
                f"KV_{ALERTS_BUCKET}", f"$KV.{ALERTS_BUCKET}.{BOOK_KEY}"
            )
        except NotFoundError:
            return Book(), 0, None
        book = Book.model_validate_json(msg.data) if msg.data else Book()
        return book, msg.seq or 0, msg.time

    async def _write(self, book: Book, revision: int) -> int | None:
        kv = await self.broker.key_value(ALERTS_BUCKET)
        try:
            return await kv.update(BOOK_KEY, book.model_dump_json().encode(), last=revision)
        except KeyWrongLastSequenceError:
            return None  # another process wrote first: it evaluates

    async def look(self, t: alerts.Thresholds) -> bool:
        """One turn: evaluate and publish if this process is (or becomes) the evaluator."""
        book, revision, written = await self._book()
        now = datetime.now(UTC)
        held = written is not None and (now - written).total_seconds() < lease_s(t.evaluate_every_s)
        if book.evaluator and book.evaluator != self.me and held:
            self.liveness = None  # another evaluates; start afresh when it is our turn
            return False
        if self.liveness is None:
            self.liveness = health.fresh_liveness(t)
        try:
            looked = [finding async for finding in health.findings(t, self.liveness)]
        except Exception as exc:
            logger.warning("alert evaluator: the look could not finish (%s)", exc)
            looked = []
        complete = bool(looked) and all(f.level != health.UNKNOWN for f in looked)
        if book.evaluator != self.me:
            logger.info("alert evaluator: %s evaluates now (was %r)", self.me, book.evaluator)
        book.evaluator = self.me
        if complete:
            step(book, looked, t, datetime.now(UTC))
            self.looks += 1
        written_revision = await self._write(book, revision)
        if written_revision is None:
            self.liveness = None
            return False
        await self._publish(book, written_revision)
        return True

    async def _publish(self, book: Book, revision: int) -> None:
        if not book.outbox:
            return
        stored = []
        for event in book.outbox:
            try:
                await publish_event(self.broker, event)
            except Exception:  # already logged: the next look publishes it again
                break
            stored.append(event)
        book.outbox = book.outbox[len(stored) :]
        await self._write(book, revision)

    async def run(self) -> None:
        await self.broker.ready.wait()
        while True:
            try:
                t = alerts.load_thresholds(self.broker.settings)
            except alerts.ThresholdsError as exc:
                logger.error("alert evaluator: %s; evaluating on the defaults", exc)
                t = alerts.Thresholds()
            try:
                await self.look(t)
            except Exception as exc:  # the server is away: the next look tries again
                logger.warning("alert evaluator: no look (%s)", exc)
            await asyncio.sleep(t.evaluate_every_s)


def install(broker: OneManageBroker) -> None:
    """Run the evaluator loop in every worker process of ``broker``."""
    broker.run_in_workers("alert-evaluator", lambda: Evaluator(broker).run())
