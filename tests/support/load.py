"""A bounded kick load for the fault tests: N kicks, K in flight, what each one met."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from taskiq import AsyncTaskiqTask


@dataclass
class KickLoad:
    """Kick task ``n`` for n in range(count), ``in_flight`` at a time.

    ``accepted`` is set once ``signal_after`` kicks returned, so a test can inject
    its fault under load. A kick that raised is refused: its caller saw an error.
    """

    kick: Callable[[int], Awaitable[AsyncTaskiqTask[Any]]]
    count: int
    in_flight: int
    signal_after: int
    kicked: dict[int, AsyncTaskiqTask[Any]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end), monotonic
    accepted: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def latencies(self) -> list[float]:
        return [end - start for start, end in self.spans]

    def resumed_after(self, moment: float) -> float:
        """Seconds from ``moment`` to the end of the first kick started after it."""
        after = [end for start, end in self.spans if start >= moment]
        return min(after) - moment if after else float("nan")

    async def run(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(self.count):
            queue.put_nowait(n)

        async def kicking() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                start = time.monotonic()
                try:
                    self.kicked[n] = await self.kick(n)
                except Exception as exc:
                    self.refused.append(f"{n}: {exc!r} (cause {exc.__cause__!r})")
                    continue
                self.spans.append((start, time.monotonic()))
                if len(self.kicked) >= self.signal_after:
                    self.accepted.set()

        await asyncio.gather(*(kicking() for _ in range(self.in_flight)))
