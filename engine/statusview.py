"""``onemanage status`` as text: one screen, columns as wide as what they hold.

Pure: figures in, lines out, so a narrow terminal or a file gets the same
lines (nothing here asks for a TTY).
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.events.schemas import WorkerHeartbeat
from engine.events.stats import TaskTypeStats
from engine.events.windows import QUANTILES, WindowFigures
from engine.monitor import ConsumerFigures, StreamFigures


def age(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    seconds = (datetime.now(UTC) - ts).total_seconds()
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


def ms(value: float | None) -> str:
    """A duration in a few characters (a percentile's bucket bound, so never more precise)."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}µs"
    if value < 1000:
        return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms"
    return f"{value / 1000:.1f}s" if value < 60_000 else f"{value / 60_000:.1f}m"


def streams(figures: dict[str, StreamFigures | None]) -> list[str]:
    lines = []
    for name, f in figures.items():
        if f is None:
            lines.append(f"{name:7} missing (start a worker to create it)")
            continue
        lines.append(
            f"{name:7} {f.messages:>8} msgs {f.bytes / 1024:>10.1f} KiB  "
            f"seq {f.first_seq}..{f.last_seq}  consumers {f.consumers}  last {age(f.last_ts)} ago"
        )
    return lines


def consumers(figures: list[ConsumerFigures]) -> list[str]:
    names = [f"{c.stream}/{c.name}" for c in figures]
    width = max([len("consumer"), *map(len, names)])
    lines = [f"{'consumer':{width}} {'pending':>8} {'ack pend':>8} {'redeliv':>8} {'waiting':>8}"]
    for name, c in zip(names, figures, strict=True):
        mark = "  (impossible figures!)" if c.impossible else ""
        lines.append(
            f"{name:{width}} {c.pending:>8} {c.ack_pending:>8} {c.redelivered:>8} "
            f"{c.waiting:>8}{mark}"
        )
    return lines


def workers(beats: list[WorkerHeartbeat]) -> list[str]:
    lines = [f"workers alive: {len(beats)}"]
    width = max([0, *(len(w.worker_id) for w in beats)])
    for w in beats:
        degraded = f"  degraded: {', '.join(w.degraded_lanes)}" if w.degraded_lanes else ""
        lines.append(
            f"  {w.worker_id:{width}}  running {w.running:>4}  processed {w.processed:>7}  "
            f"failed {w.failed}{degraded}"
        )
    return lines


def last_hour(stats: list[TaskTypeStats], hours: list[WindowFigures]) -> list[str]:
    """Per task type: the last hour's outcomes and p50/p95/p99 of queue wait and run time."""
    width = max([len("last hour"), *(len(s.task_name) for s in stats)])
    rows = []
    for s, hour in zip(stats, hours, strict=True):
        waits = "/".join(ms(hour.wait_ms(q)) for q in QUANTILES)
        runs = "/".join(ms(hour.run_ms(q)) for q in QUANTILES)
        rows.append((s.task_name, hour, waits, runs))
    wait_w = max([len("queue wait p50/95/99"), *(len(r[2]) for r in rows)])
    run_w = max([len("run time p50/95/99"), *(len(r[3]) for r in rows)])
    lines = [
        f"{'last hour':{width}} {'ok':>6} {'failed':>6} {'retried':>7} {'dead':>5}  "
        f"{'queue wait p50/95/99':>{wait_w}}  {'run time p50/95/99':>{run_w}}"
    ]
    for name, hour, waits, runs in rows:
        lines.append(
            f"{name:{width}} {hour.succeeded:>6} {hour.failed:>6} {hour.retried:>7} "
            f"{hour.dead_lettered:>5}  {waits:>{wait_w}}  {runs:>{run_w}}"
        )
    return lines
