"""The console's one-line header, fitted to its width by giving up the least useful first.

At 80 columns the full line (a backend text of ~70 characters, the event count, both
counts, the markers) is twice too long, and a line cut at the right loses what was
put last: the PAUSED marker and the unreadable count. So the markers come first, the
figures keep their text exactly (engine.counts: the header must read as `status`
does), and what gives way is, in order: the backend's detail, the event count, the
wide separators, the name, the events word, the backend, the workflow counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.text import Text

from engine.counts import Counts

WIDE, NARROW = "  │  ", " │ "
_URL = re.compile(r"nats://(?:[^@\s,]*@)?([^\s,/]+)")


@dataclass(frozen=True)
class HeaderFacts:
    """What the header says, before it is fitted."""

    backend: str  # markup, as the app keeps it ("embedded server nats://… (started) + …")
    events: int
    live: bool
    counted: Counts | None
    markers: tuple[str, ...] = ()  # markup: PAUSED, unreadable N; never given up


def short_backend(backend: str) -> str:
    """``host:port`` (or ``embedded host:port``) and any connection trouble, without the rest."""
    trouble = ""
    if "cannot connect" in backend:
        return "[b red]cannot connect[/]"
    if "connecting…" in backend:
        trouble = " [yellow]connecting…[/]"
    urls: list[str] = _URL.findall(backend)
    if not urls:
        return backend
    where = urls[0] + (f" +{len(urls) - 1}" if len(urls) > 1 else "")
    if backend.startswith("embedded"):
        where = f"embedded {where}"
    return where + trouble


def _tiny_backend(backend: str) -> str:
    """Only what is wrong with the connection, or nothing."""
    short = short_backend(backend)
    return "" if "[" not in short else short[short.index("[") :].strip()


def _width(markup: str) -> int:
    return Text.from_markup(markup).cell_len


def _line(facts: HeaderFacts, shown: dict[str, str]) -> str:
    events, progress = shown["events"], shown["progress"]
    parts = (
        *facts.markers,
        f"{shown['brand']}{shown['backend']}",
        f"{events}({progress})" if events and progress else events or progress,
        shown["counts"],
    )
    return shown["separator"].join(p.strip() for p in parts if p.strip())


def header_line(facts: HeaderFacts, width: int | None = None) -> str:
    """The fullest header that fits in ``width`` cells (all of it when ``width`` is None)."""
    counted = facts.counted
    shown = {
        "brand": "[b]OneManage[/b] ",
        "backend": facts.backend,
        "events": f"events {facts.events:,} ",
        "progress": "[green]live[/]" if facts.live else "[yellow]replaying history[/]",
        "counts": counted.line() if counted is not None else "counts: reading",
        "separator": WIDE,
    }
    give_up = (  # in this order, each kept while the line does not fit
        ("backend", short_backend(facts.backend)),
        ("events", ""),
        ("separator", NARROW),
        ("brand", ""),
        ("progress", ""),
        ("backend", _tiny_backend(facts.backend)),
        ("counts", counted.tasks_text() if counted is not None else shown["counts"]),
    )
    text = _line(facts, shown)
    for key, value in give_up:
        if width is None or _width(text) <= width:
            break
        shown[key] = value
        text = _line(facts, shown)
    return text
