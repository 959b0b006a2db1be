"""The built-in application: the PSD workflow, the audit-log and task-stats listeners,
the alert evaluator (engine.alerting) and the operator's control tasks (replay,
cancel: engine.tasks.control, engine.tasks.workflow).

``onemanage worker`` runs this when given no modules. Name it beside your own
modules to run both (``onemanage worker myapp.tasks engine.builtin``);
``taskiq worker engine.builtin:broker`` runs it under taskiq's own CLI.
"""

from __future__ import annotations

from engine import alerting
from engine.app import broker, event_listener
from engine.events.audit import AuditLog
from engine.events.schemas import BaseEvent, TaskEvent
from engine.events.stats import StatsFolder
from engine.tasks import control, psd, workflow

__all__ = ["audit_log", "broker", "control", "psd", "task_stats", "workflow"]

_audit = AuditLog()
_stats = StatsFolder(broker)
alerting.install(broker)


@event_listener("audit-log")
async def audit_log(event: BaseEvent) -> None:
    """Append every event, whole, as one JSON line to <data_dir>/audit/events.jsonl."""
    _audit.append(broker.settings, event)


@event_listener("task-stats", "events.task.>")
async def task_stats(event: BaseEvent) -> None:
    """Fold each lifecycle event into its task type's statistics (group commit)."""
    if isinstance(event, TaskEvent):
        await _stats.fold(event)
