"""Missed events: what EVENTS discarded (discard-old) before a listener read it.

EVENTS is a limits stream: when full it drops its oldest messages whether or
not a durable has read them, and the durable then jumps past them without a
word (its delivered pointer lands below the stream's first sequence,
PLATFORM-NOTES). A worker counts each jump once in ``ListenerCounters.missed``
(travels in the heartbeat) and logs it as an error, two ways:

- a look compares the durable's pointer with the stream's first sequence:
  every heartbeat (this is what finds the gap of a stopped worker) and, for a
  filtered listener while the stream is near its limits, before each fetch;
- each fetch compares a delivery with the durable's one before it (consumer
  sequences one apart): the stream sequences between them that no look has
  counted were jumped over at the server, at that fetch.

Every process of a durable sees the same looked-at gap, but only the one that
fetched sees the jump of its fetch: readers take the largest count per
durable, which is exact for one process and a lower bound for several.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.aio.msg import Msg
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
MAX_UNRESOLVED = 256  # a filtered lane's gaps kept for the next look before one is made


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


def filtered(lane: Lane) -> bool:
    """Does the lane read part of EVENTS only (carried past other subjects' events too)?"""
    return lane.filter_subject not in ("", EVENTS_SUBJECTS)


class DiscardWatch:
    """Counts, per listener durable, the events discarded before it read them."""

    def __init__(self, broker: OneManageBroker) -> None:
        self.broker = broker
        self.at_risk = False
        self._through: dict[str, int] = {}  # per durable: the last sequence already accounted for
        self._last: dict[str, tuple[int, int]] = {}  # per durable: consumer, stream seq delivered
        self._unresolved: dict[str, list[tuple[int, int]]] = {}  # filtered: gaps for the next look
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
                pointer = await self.check(durable, info.state.first_seq)
                # Only a first pointer: a fetch may be under way, its jump not yet paired.
                self._last.setdefault(durable, pointer)

    async def before_fetch(self, lane: Lane) -> None:
        """Look before a fetch of a filtered lane that may be overtaken.

        A lane is looked at while EVENTS is near full; one that is behind also
        refreshes that verdict every LOOK_EVERY seconds (a flood can fill the
        stream between two heartbeats). A listener that keeps up costs nothing,
        and an unfiltered one needs no look: its deliveries show every jump.
        """
        if lane.stream != EVENTS or not filtered(lane):
            return
        now = time.monotonic()
        if not self.at_risk and not (lane.behind and now - self._looked >= LOOK_EVERY):
            return
        self._looked = now
        info = await self.broker.js.stream_info(EVENTS)
        self.at_risk = near_limits(info)
        self._resolve(lane.durable, info.state.first_seq)
        if self.at_risk:
            self._last[lane.durable] = await self.check(lane.durable, info.state.first_seq)

    async def check(self, durable: str, first_seq: int) -> tuple[int, int]:
        """Count the events below ``first_seq`` the durable never got.

        Returns its pointer (consumer and stream sequence last delivered), which the
        next delivery is paired with.
        """
        self._resolve(durable, first_seq)
        info = await self.broker.js.consumer_info(EVENTS, durable)
        delivered = (info.delivered.stream_seq or 0) if info.delivered else 0
        consumer_seq = (info.delivered.consumer_seq or 0) if info.delivered else 0
        pointer = (consumer_seq, delivered)
        known = self._through.get(durable)
        if known is None and not consumer_seq:
            # A new durable: what the stream dropped before it existed was never its to read.
            self._through[durable] = max(delivered, first_seq - 1)
            return pointer
        through = max(delivered, known or 0)
        if first_seq - 1 <= through:
            return pointer
        self._through[durable] = first_seq - 1
        if carried_past_its_own(info.config.filter_subject, info.num_pending):
            self._count(durable, first_seq - 1 - through)  # else only other subjects' went
        return pointer

    async def fetched(self, lane: Lane, messages: list[Msg]) -> None:
        """Count the jumps a fetch made: gaps between a delivery and the one before it.

        Only a first delivery that follows this process's last known one (consumer
        sequences one apart) can be paired; another process's fetch in between
        leaves that jump to the other process. A gap of an unfiltered durable is
        exactly what the stream dropped. A filtered durable is carried past other
        subjects too: its gaps count only while it was behind on its own, and only
        what was below the stream's first sequence, at the next look.
        """
        if lane.stream != EVENTS or not messages:
            return
        durable = lane.durable
        last = self._last.get(durable)
        gaps: list[tuple[int, int]] = []  # (last sequence accounted for, the one delivered next)
        for msg in messages:
            meta = msg.metadata
            consumer_seq, stream_seq = meta.sequence.consumer, meta.sequence.stream
            if last is not None and consumer_seq == last[0] + 1 and meta.num_delivered == 1:
                through = max(last[1], self._through.get(durable, 0))
                if stream_seq - 1 > through:
                    gaps.append((through, stream_seq))
            if meta.num_delivered == 1 or last is None:
                last = (consumer_seq, stream_seq)
            else:  # a redelivery: the pointer stays where it was
                last = (consumer_seq, last[1])
        if last is not None:
            self._last[durable] = last
        if not gaps:
            return
        if not filtered(lane):
            self._through[durable] = max(self._through.get(durable, 0), gaps[-1][1] - 1)
            self._count(durable, sum(next_seq - 1 - through for through, next_seq in gaps))
        elif lane.behind:
            unresolved = self._unresolved.setdefault(durable, [])
            unresolved.extend(gaps)
            if self.at_risk or len(unresolved) > MAX_UNRESOLVED:
                self._resolve(durable, (await self.broker.js.stream_info(EVENTS)).state.first_seq)

    def _resolve(self, durable: str, first_seq: int) -> None:
        """Count a filtered durable's gaps below ``first_seq``: those the stream dropped."""
        gaps = self._unresolved.pop(durable, [])
        gap = sum(max(0, min(next_seq, first_seq) - 1 - through) for through, next_seq in gaps)
        if gap > 0:
            below = min(max(next_seq for _, next_seq in gaps), first_seq) - 1
            self._through[durable] = max(self._through.get(durable, 0), below)
            self._count(durable, gap)

    def _count(self, durable: str, gap: int) -> None:
        counters = self.broker.listener_counters.setdefault(durable, ListenerCounters())
        counters.missed += gap
        self._log(durable, gap)

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
