"""Small text formatters shared by the panels: durations, ages, sizes, sparklines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from rich.text import Text

SPARKS = "▁▂▃▄▅▆▇█"
STATE_STYLES = {
    "queued": "dim",
    "submitted": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "succeeded": "green",
    "completed": "bold green",
    "failed": "bold red",
    "dead_lettered": "bold white on red",
}


def duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def age(then: datetime | None, now: datetime) -> str:
    """How long ago, compactly: 4s, 3m, 2h, 5d."""
    if then is None:
        return "-"
    seconds = max((now - then).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "never"
    if seconds == 0:
        return "drained"
    return duration(seconds * 1000)


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last values squeezed into ``width`` cells (each cell the mean of its bucket)."""
    if not values or width <= 0:
        return ""
    step = max(1, math.ceil(len(values) / width))
    buckets = [values[i : i + step] for i in range(0, len(values), step)][-width:]
    means = [sum(b) / len(b) for b in buckets]
    top = max(means) or 1.0
    return "".join(
        SPARKS[min(int(m / top * (len(SPARKS) - 1) + 0.5), len(SPARKS) - 1)] for m in means
    )


def state_text(state: str) -> Text:
    return Text(state.replace("_", " "), style=STATE_STYLES.get(state, ""))
