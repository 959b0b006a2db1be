"""Ingest: EVENTS into the state as they arrive, the system's figures once a second, and
the engine's task statistics every few seconds.

Nothing here touches the screen. The app's timer reads the state; the pump
only folds, and yields to the event loop every few hundred events so key
presses are answered while a backlog of history pours in.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from console.state import ConsoleState
from engine import monitor
from engine.alertbook import read_book
from engine.broker import OneManageBroker
from engine.events.schemas import parse_event
from engine.events.stats import read_task_stats
from engine.redaction import redact, redact_netloc
from engine.streams import EVENTS, TASKS

logger = logging.getLogger(__name__)


class Pump:
    """Feeds one ConsoleState from one broker connection (read-only)."""

    def __init__(self, state: ConsoleState, broker: OneManageBroker, since: timedelta) -> None:
        self.state = state
        self.broker = broker
        self.since = since
        self.ingested = 0
        self.tail: monitor.EventReader | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.ingest(), name="console-ingest"),
            asyncio.create_task(self.poll(), name="console-poll"),
            asyncio.create_task(self.poll_stats(), name="console-stats"),
        ]

    async def stop(self) -> None:
        """Cancel until done: on Python 3.11 a single cancel can be lost inside nats-py."""
        for task in self._tasks:
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)

    async def ingest(self) -> None:
        """History from ``since`` ago, then live, until stopped."""
        tail = self.tail = monitor.EventReader(self.broker, datetime.now(UTC) - self.since)
        await tail.run(self._fold, on_idle=self._idle)

    def _fold(self, delivered: monitor.Delivered) -> None:
        self.state.fold(parse_event(delivered.data, delivered.subject), delivered.seq)
        if delivered.pending == 0:
            self.state.caught_up = True
        self.ingested += 1

    def _idle(self) -> None:
        self.state.caught_up = True  # nothing more stored: the history is all in

    async def poll(self, interval: float = 1.0) -> None:
        """Connection, round trip, consumers, then streams (their rate out needs consumers)."""
        connection = self.state.connection
        while True:
            try:
                nc = self.broker.nc
                url = nc.connected_url
                connection.url = redact_netloc(url.netloc) if url else connection.url
                connection.rtt_ms = await monitor.round_trip_ms(self.broker)
                if not connection.connected:
                    connection.connected, connection.since = True, datetime.now(UTC)
                connection.error = None
                connection.connecting = False
                self.state.consumers_polled(await monitor.consumer_figures(self.broker))
                for name in (TASKS, EVENTS):
                    figures = await monitor.stream_figures(self.broker, name)
                    if figures is not None:
                        self.state.stream_polled(figures)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if connection.connected:
                    connection.disconnects += 1
                    connection.since = datetime.now(UTC)
                connection.connected = connection.connecting = False
                connection.error = f"{type(exc).__name__}: {exc}"
            self.state.version += 1
            await asyncio.sleep(interval)

    async def poll_stats(self, interval: float = 5.0) -> None:
        """The task statistics and the alert book, in a loop of their own: a slow read (up to
        its timeout) must not hold the 1 Hz figures, and a failed one is shown, not taken for
        a lost server.
        """
        while True:
            try:
                self.state.stats_polled(await read_task_stats(self.broker))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = redact(f"{type(exc).__name__}: {exc}")
                if error != self.state.stats_error:
                    logger.warning("task statistics unavailable: %s", error)
                self.state.stats_unavailable(error)
            read_started = datetime.now(UTC)
            try:
                book, _ = await read_book(self.broker)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # no bucket before a worker of this version ran
                logger.debug("alert book unreadable: %s", exc)
            else:
                self.state.book_polled(book, read_started)
            await asyncio.sleep(interval)
