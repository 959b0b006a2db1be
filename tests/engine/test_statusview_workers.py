"""engine.statusview.workers: a row per worker command, its processes under it, lost and gone."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.events.schemas import WorkerHeartbeat
from engine.liveness import Census, LostWorker, group_workers
from engine.statusview import workers

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def beat(worker_id: str, command: str | None, processed: int) -> WorkerHeartbeat:
    host, pid = worker_id.split(":")
    return WorkerHeartbeat(worker_id=worker_id, host=host, pid=int(pid), started_at=T0,
                           interval_s=5, processed=processed, command=command)  # fmt: skip


def test_processes_are_grouped_under_their_command_with_summed_figures() -> None:
    live = [beat("h:12", "h:10", 3), beat("h:11", "h:10", 4), beat("h:30", None, 5)]
    groups = group_workers(live)
    assert [(g.command, [b.worker_id for b in g.beats], g.processed) for g in groups] == [
        ("h:10", ["h:11", "h:12"], 7),
        ("h:30", ["h:30"], 5),
    ]
    lost = [LostWorker(beat("h:40", "h:39", 0), 21.0)]
    lines = workers(Census(live, lost, gone=2), gone_after_s=600)
    assert lines[0] == "workers alive: 2 (3 processes)  lost 1  gone 2 (silent > 600 s)"
    assert lines[1].split() == ["h:10", "running", "0", "processed", "7", "failed", "0"]
    assert lines[2].startswith("    h:11 ") and lines[3].startswith("    h:12 ")
    assert lines[4].startswith("  h:30 ")  # a process of its own: no group row
    assert lines[5] == "  LOST h:40: no heartbeat for 21 s"
