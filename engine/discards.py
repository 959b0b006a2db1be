"""Missed events: what EVENTS discarded (discard-old) before a listener read it.

EVENTS is a limits stream: when full it drops its oldest messages whether or
not a durable has read them, and the durable then jumps past them without a
word (its delivered pointer lands below the stream's first sequence,
PLATFORM-NOTES). A worker compares each of its listener durables' pointer
with the stream's first sequence, every heartbeat and, while the stream is
near its limits, before each fetch of a listener lane; each gap is counted
once in ``ListenerCounters.missed`` (travels in the heartbeat) and logged as
an error. Every process of a durable sees the same gap: readers take the
largest count per durable, not the sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.js.api import StreamInfo
from nats.js.errors import NotFoundError

from engine.broker import OneManageBroker
from engine.events.schemas import ListenerCounters
from engine.lanes import Lane, plan_lanes
from engine.streams import EVENTS, EVENTS_SUBJECTS

logger = logging.getLogger(__name__)

NEAR_FULL = 0.9  # of max_bytes or max_msgs: from here on a lagging listener can lose events
LOOK_EVERY = 0.1  # seconds: how often a lane that is behind asks whether the stream is full
LOG_EVERY = 10.0  # seconds between two error lines about one durable


def near_limits(info: StreamInfo) -> bool:
    """Is the stream close enough to a size limit that the next publishes discard?"""
    config, state = info.config, info.state
    by_bytes = (config.max_bytes or -1) > 0 and state.bytes >= NEAR_FULL * (config.max_bytes or 0)
    by_msgs = (config.max_msgs or -1) > 0 and state.messages >= NEAR_FULL * (config.max_msgs or 0)
    return by_bytes or by_msgs


def carried_past_its_own(filter_subject: str | None, pending: int) -> bool:
    """Can a gap below the stream's first sequence hold events this durable would read?

    Every event, for a durable on all of EVENTS. A filtered one that is idle (nothing
    pending) is carried past other subjects' events too, so it counts a gap only
    while it is behind on its own.
    """
    return filter_subject in (None, "", EVENTS_SUBJECTS) or pending > 0


class DiscardWatch:
    """Counts, per listener durable, the events discarded before it read them."""

    def __init__(self, broker: OneManageBroker) -> None:
        self.broker = broker
        self.at_risk = False
        self._through: dict[str, int] = {}  # per durable: the last sequence already accounted for
        self._looked = 0.0
        self._unlogged: dict[str, tuple[int, float]] = {}  # per durable: count, first at

    def durables(self) -> list[str]:
        """This worker's listener durables (known before its lanes start pulling)."""
        lanes = plan_lanes(self.broker.get_all_tasks(), self.broker.settings)
        return [lane.durable for lane in lanes if lane.stream == EVENTS]

    async def tick(self) -> None:
        """Check every listener durable of this worker; note whether the stream is near full.

        Run once before the lanes pull, too: the first fetch after an outage of
        the workers is when a durable jumps past what was discarded meanwhile.
        """
        durables = self.durables()
        if not durables:
            return
        info = await self.broker.js.stream_info(EVENTS)
        self.at_risk = near_limits(info)
        for durable in durables:
            with contextlib.suppress(NotFoundError):  # created when its lane starts
                await self.check(durable, info.state.first_seq)

    async def before_fetch(self, lane: Lane) -> None:
        """Look before a fetch of a lane that may be overtaken: a fetch is when the jump happens.

        A lane is looked at while EVENTS is near full; one that is behind also
        refreshes that verdict every LOOK_EVERY seconds (a flood can fill the
        stream between two heartbeats). A listener that keeps up costs nothing.
        """
        if lane.stream != EVENTS:
            return
        now = time.monotonic()
        if not self.at_risk and not (lane.behind and now - self._looked >= LOOK_EVERY):
            return
        self._looked = now
        info = await self.broker.js.stream_info(EVENTS)
        self.at_risk = near_limits(info)
        if self.at_risk:
            await self.check(lane.durable, info.state.first_seq)

    async def check(self, durable: str, first_seq: int) -> int:
        """Count the events below ``first_seq`` the durable never got; returns the new ones."""
        info = await self.broker.js.consumer_info(EVENTS, durable)
        delivered = (info.delivered.stream_seq or 0) if info.delivered else 0
        never_delivered = not (info.delivered and info.delivered.consumer_seq)
        known = self._through.get(durable)
        if known is None and never_delivered:
            # A new durable: what the stream dropped before it existed was never its to read.
            self._through[durable] = max(delivered, first_seq - 1)
            return 0
        through = max(delivered, known or 0)
        gap = first_seq - 1 - through
        if gap <= 0:
            return 0
        if not carried_past_its_own(info.config.filter_subject, info.num_pending):
            self._through[durable] = first_seq - 1  # only other subjects' events went
            return 0
        self._through[durable] = first_seq - 1
        counters = self.broker.listener_counters.setdefault(durable, ListenerCounters())
        counters.missed += gap
        self._log(durable, gap)
        return gap

    def _log(self, durable: str, gap: int) -> None:
        """One error line per durable every LOG_EVERY seconds, with the count since the last."""
        count, since = self._unlogged.get(durable, (0, 0.0))
        count += gap
        now = time.monotonic()
        if now - since < LOG_EVERY:
            self._unlogged[durable] = (count, since)
            return
        self._unlogged[durable] = (0, now)
        total = self.broker.listener_counters[durable].missed
        logger.error(
            "listener %s missed %d event(s) (%d in all): EVENTS discarded them at its limits "
            "before the listener read them; raise ONEMANAGE_EVENTS_MAX_BYTES or speed it up",
            durable, count, total,
        )  # fmt: skip


async def look(watch: DiscardWatch) -> None:
    """One tick; a server away is not the worker's end: the next tick looks again."""
    try:
        await watch.tick()
    except Exception as exc:
        logger.warning("discard watch: cannot look now (%s: %s)", type(exc).__name__, exc)


async def watch_discards(watch: DiscardWatch) -> None:
    """Look every heartbeat interval."""
    while True:
        await asyncio.sleep(watch.broker.settings.heartbeat_interval)
        await look(watch)
