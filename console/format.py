"""Small text formatters shared by the panels: durations, ages, sizes, sparklines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType
from textual.widgets import Static

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
    "stuck": "bold black on yellow",
    "replayed": "cyan",  # a dead letter an operator sent again
}


def duration(ms: float | None) -> str:
    """Milliseconds to three significant digits in ms, s or min: 5.21 ms, 52.1 s, 8.70 min."""
    if ms is None:
        return ""
    value, unit = (
        (ms, "ms") if ms < 1000 else (ms / 1000, "s") if ms < 60_000 else (ms / 60_000, "min")
    )
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f} {unit}"


def state_style(state: str) -> str:
    """How a task or workflow state is coloured, wherever it is shown."""
    return STATE_STYLES.get(state, "")


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


def once_a_second(widget: object, now: datetime, phase: float = 0.0) -> bool:
    """True the first time in each second for ``widget``: figures come at 1 Hz, ages in seconds.

    Rebuilding the figure tables on every 10 Hz tick cost a third of a core;
    ``phase`` (0..1) spreads the panels over the second, so no tick redraws all
    of them while a key press waits for the screen.
    """
    second = int(now.timestamp() + phase)
    if getattr(widget, "_drawn_second", None) == second:
        return False
    setattr(widget, "_drawn_second", second)  # noqa: B010
    return True


def redraw(widget: Static, renderable: RenderableType, lines: int) -> None:
    """Update a figure panel; a layout of the whole screen only when its height changes.

    A layout costs 13-60 ms at 160x45: once a second per panel it was what kept
    key presses waiting for the screen.
    """
    widget.update(renderable, layout=lines != getattr(widget, "_lines", None))
    widget._lines = lines  # type: ignore[attr-defined]
