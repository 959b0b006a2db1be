"""Who is speaking: this process's ``host:pid``, shared by heartbeats, events and its connection."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

HOST = socket.gethostname()


def process_identity() -> str:
    """``host:pid`` of the calling process (read each time: worker processes are forked)."""
    return f"{HOST}:{os.getpid()}"


def utc_now() -> datetime:
    """Now, aware and in UTC: the only clock events and views use."""
    return datetime.now(UTC)
