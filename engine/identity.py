"""Who is speaking: this process's ``host:pid``, shared by heartbeats, events and its connection."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

HOST = socket.gethostname()
WORKER_PARENT = "ONEMANAGE_WORKER_PARENT"  # the pid of `onemanage worker`, for its processes


def process_identity() -> str:
    """``host:pid`` of the calling process (read each time: worker processes are forked)."""
    return f"{HOST}:{os.getpid()}"


def command_identity() -> str | None:
    """``host:pid`` of the ``onemanage worker`` command this process belongs to, if any.

    The command sets WORKER_PARENT before it starts its processes, so each of
    them names the same command in its heartbeats (one worker, several processes).
    """
    parent = os.environ.get(WORKER_PARENT)
    return f"{HOST}:{parent}" if parent else None


def utc_now() -> datetime:
    """Now, aware and in UTC: the only clock events and views use."""
    return datetime.now(UTC)
