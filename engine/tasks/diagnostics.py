"""A round trip through a worker, for `onemanage check` and the benchmarks."""

from __future__ import annotations

import os
import socket

from engine.broker import broker


@broker.task(task_name="diag.ping")
async def ping(payload: str = "") -> dict[str, str | int]:
    """Answer with who ran it: proves a worker pulls TASKS and can store results."""
    return {"payload": payload, "host": socket.gethostname(), "pid": os.getpid()}


@broker.task(task_name="diag.noop")
async def noop() -> None:
    """Do nothing: the per-task cost of the engine itself."""
