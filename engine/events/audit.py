"""The audit log: every event, whole, as one JSON line in <data_dir>/audit/events.jsonl.

One line per event id: the audit-log listener's redeliveries of an event it
already appended are skipped by event_listener (engine.events.marks).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from engine.events.schemas import BaseEvent
from engine.settings import Settings


def audit_path(settings: Settings) -> Path:
    return settings.data_dir / "audit" / "events.jsonl"


class AuditLog:
    """Appends events to the audit file, opened once (one write per line: safe for O_APPEND)."""

    def __init__(self) -> None:
        self._file: IO[str] | None = None

    def append(self, settings: Settings, event: BaseEvent) -> None:
        if self._file is None or self._file.closed:
            path = audit_path(settings)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._file.write(event.model_dump_json() + "\n")
        self._file.flush()
