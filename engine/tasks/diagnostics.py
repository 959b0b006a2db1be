"""Diagnostic tasks every worker answers (the assembly registers them on each broker).

``diag.ping`` proves, for ``onemanage check``, that a worker pulls TASKS and can
store results; ``diag.noop`` is the per-task cost of the engine itself, for the
benchmarks.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

PING_TASK = "diag.ping"
NOOP_TASK = "diag.noop"


async def ping(payload: str = "") -> dict[str, str | int]:
    """Answer with who ran it."""
    return {"payload": payload, "host": socket.gethostname(), "pid": os.getpid()}


async def noop() -> None:
    """Do nothing."""


TASKS: dict[str, Callable[..., Awaitable[Any]]] = {PING_TASK: ping, NOOP_TASK: noop}
