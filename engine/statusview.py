"""``onemanage status`` as text: one screen, columns as wide as what they hold.

Pure: figures in, lines out, so a narrow terminal or a file gets the same
lines (nothing here asks for a TTY).
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.counts import Counts, is_workflow, label
from engine.events.schemas import WorkerHeartbeat
from engine.events.stats import TaskTypeStats
from engine.events.windows import QUANTILES, WindowFigures
from engine.liveness import Census, group_workers
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


def workers(census: Census, gone_after_s: float) -> list[str]:
    """A row per ``onemanage worker`` command (its processes' figures summed), its
    processes under it; then how many are lost, and gone (silent > gone_after_s)."""
    groups = group_workers(census.live)
    lines = [
        f"workers alive: {len(groups)} ({len(census.live)} processes)  "
        f"lost {len(census.lost)}  gone {census.gone} (silent > {gone_after_s:g} s)"
    ]
    names = [*(len(g.command) for g in groups), *(len(b.worker_id) + 2 for b in census.live)]
    width = max([0, *names])
    for group in groups:
        if group.beats[0].command is None:  # a process of its own: no group row
            lines.append(_worker_line(group.beats[0], "  ", width))
            continue
        lines.append(
            f"  {group.command:{width}}  running {group.running:>4}  "
            f"processed {group.processed:>7}  failed {group.failed}"
        )
        lines += [_worker_line(beat, "    ", width - 2) for beat in group.beats]
    for lost in census.lost:
        lines.append(f"  LOST {lost.beat.worker_id}: no heartbeat for {lost.silent_s:.0f} s")
    return lines


def _worker_line(w: WorkerHeartbeat, indent: str, width: int) -> str:
    degraded = f"  degraded: {', '.join(w.degraded_lanes)}" if w.degraded_lanes else ""
    return (
        f"{indent}{w.worker_id:{width}}  running {w.running:>4}  "
        f"processed {w.processed:>7}  failed {w.failed}{degraded}"
    )


def counts(figures: Counts) -> list[str]:
    return [f"all time: {figures.line()}"]


def last_hour(stats: list[TaskTypeStats], hours: list[WindowFigures]) -> list[str]:
    """Per task type: the last hour's outcomes and p50/p95/p99 of queue wait and run time.

    The workflow lane's task types come first, labelled as workflows.
    """
    width = max([len("last hour"), *(len(label(s)) for s in stats)])
    rows = []
    ordered = sorted(zip(stats, hours, strict=True), key=lambda pair: not is_workflow(pair[0]))
    for s, hour in ordered:
        waits = "/".join(ms(hour.wait_ms(q)) for q in QUANTILES)
        runs = "/".join(ms(hour.run_ms(q)) for q in QUANTILES)
        rows.append((label(s), hour, waits, runs))
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
