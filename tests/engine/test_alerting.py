"""The alert evaluator: hysteresis, and each raise and clear stored once with several workers."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import alerts
from engine.alertbook import read_book
from engine.alerting import Book, step
from engine.broker import OneManageBroker
from engine.events.schemas import AlertCleared, AlertRaised, BaseEvent, WorkerHeartbeat
from engine.health import CRITICAL, OK, WARNING, Finding
from tests.support.harness import ROOT, EventCollector, WorkerProcess, stored_events

LIMITS = alerts.Thresholds(raise_after=2, clear_after=3)


def _look(book: Book, level: int, at: int) -> list[BaseEvent]:
    """One look in which the one rule is at ``level``; the events it decided."""
    before = len(book.outbox)
    now = datetime(2026, 12, 3, tzinfo=UTC) + timedelta(seconds=at)
    step(book, [Finding(level, f"lag at level {level}", "consumer_lag", "TASKS/x")], LIMITS, now)
    return list(book.outbox[before:])


def test_a_threshold_crossed_back_and_forth_raises_once_and_clears_once() -> None:
    book = Book()
    levels = [WARNING, OK, WARNING, OK, WARNING, WARNING, CRITICAL, OK, WARNING, OK, OK, OK, OK]
    decided = [(at, event) for at, level in enumerate(levels) for event in _look(book, level, at)]
    kinds = [(at, type(e).__name__, getattr(e, "escalated", None)) for at, e in decided]
    # One look over is not enough (at 0 and 2), the second in a row raises (at 5), a worse
    # level escalates the same alert (6), and a look over again (8) restarts the clear count.
    assert kinds == [
        (5, "AlertRaised", False),
        (6, "AlertRaised", True),
        (11, "AlertCleared", None),
    ]
    raised, escalated, cleared = (event for _, event in decided)
    assert isinstance(raised, AlertRaised) and isinstance(escalated, AlertRaised)
    assert isinstance(cleared, AlertCleared)
    assert raised.alert_id == escalated.alert_id == cleared.alert_id
    assert (raised.severity, escalated.severity) == ("warning", "critical")
    assert cleared.raised_at == raised.timestamp
    assert book.alerts == {}  # nothing kept once cleared


def test_a_rule_that_stops_being_reported_clears_its_alert() -> None:
    """A worker counted gone, a durable deleted: what no look reports any more is not alarming."""
    book = Book()
    _look(book, WARNING, 0)
    _look(book, WARNING, 1)
    now = datetime(2026, 12, 3, 0, 1, tzinfo=UTC)
    for _ in range(LIMITS.clear_after):
        step(book, [], LIMITS, now)
    assert [type(e).__name__ for e in book.outbox] == ["AlertRaised", "AlertCleared"]


@pytest.mark.slow
async def test_a_paused_worker_is_raised_once_and_cleared_once_by_three_evaluators(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """Two worker commands (three processes, each with an evaluator loop); one is paused."""
    calm = tomllib.loads((ROOT / "tests" / "support" / "calm-alerts.toml").read_text())
    fast = {
        **calm["thresholds"],
        "evaluate_every_s": 0.3,
        "raise_after": 2,
        "clear_after": 2,
        "worker_gone_after_s": 600,
    }
    limits = tmp_path / "alerts.toml"
    limits.write_text("[thresholds]\n" + "".join(f"{k} = {v}\n" for k, v in fast.items()))
    env = {"ONEMANAGE_ALERTS_FILE": str(limits), "ONEMANAGE_HEARTBEAT_INTERVAL": "0.5"}
    steady = start_workers(processes=2, env=env)
    steady_ids = await steady.ready(events)
    paused = start_workers(processes=1, env=env)
    (paused_id,) = await paused.ready(events)

    def about_paused(kind: type[BaseEvent]) -> Callable[[BaseEvent], bool]:
        return lambda e: isinstance(e, kind) and getattr(e, "about", None) == paused_id

    with paused.paused():
        (raised,) = await events.wait_for(about_paused(AlertRaised), 1, timeout=60)
    assert isinstance(raised, AlertRaised)
    assert (raised.rule, raised.severity) == ("worker_lost", "warning")
    assert raised.text.startswith(f"worker {paused_id} lost: no heartbeat for ")
    (cleared,) = await events.wait_for(about_paused(AlertCleared), 1, timeout=60)
    assert isinstance(cleared, AlertCleared) and cleared.alert_id == raised.alert_id

    # Every process keeps evaluating (or watching the lease) for a few more looks: each of
    # them has beaten four times since the clear, and still one raise and one clear are stored.
    def beat_after_clear(event: BaseEvent) -> bool:
        return isinstance(event, WorkerHeartbeat) and event.timestamp > cleared.timestamp

    await events.wait_for(beat_after_clear, 4 * 3, timeout=60)
    since = paused.started_at
    stored = await stored_events(client, "events.alert.>", since)
    mine = [e for e in stored if getattr(e, "alert_id", None) == raised.alert_id]
    assert [type(e).__name__ for e in mine] == ["AlertRaised", "AlertCleared"], mine
    others = [e for e in stored if getattr(e, "about", None) == paused_id and e not in mine]
    assert others == []  # and no second alert about it
    book, _ = await read_book(client)
    assert book.evaluator in steady_ids | {paused_id}  # a worker process, not its parent
