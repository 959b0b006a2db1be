"""Which task is running now, so events and sub-tasks inherit its correlation id."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    task_name: str
    correlation_id: str


current_task: ContextVar[TaskContext | None] = ContextVar("onemanage_current_task", default=None)
