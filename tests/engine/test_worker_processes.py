"""The processes of `onemanage worker` live and die with the command that started them."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.harness import EventCollector, WorkerProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_the_processes_of_a_killed_worker_command_stop_with_it(
    events: EventCollector, start_workers: Callable[..., WorkerProcess]
) -> None:
    """SIGKILL of `onemanage worker` itself: its processes get SIGTERM, and drain and exit."""
    worker = start_workers(processes=2)
    ids = await worker.ready(events)
    pids = [int(worker_id.rsplit(":", 1)[1]) for worker_id in ids]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    worker.process.kill()  # the command only, not its process group
    worker.process.wait(10)
    try:
        await eventually(lambda: not any(_alive(pid) for pid in pids), 60, f"still running: {pids}")
    finally:
        for pid in filter(_alive, pids):  # a failure leaves nothing running either
            os.kill(pid, signal.SIGKILL)
