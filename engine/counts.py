"""The counts every surface shows: tasks and workflows apart, each outcome once.

One definition, read from the shared task statistics (engine.events.stats),
which every worker folds and every reader can get: the console's header and
Workers panel, ``onemanage status`` and ``onemanage check`` all call
``counts()``, so they cannot disagree about what "failed" means.

- A workflow is a task of the workflow lane (its orchestrator, e.g.
  ``psd.process``): completed when it succeeded, failed when it failed for
  good or was dead-lettered.
- A task is every other command task: ok, failed (for good: a failed attempt
  that will be retried is not a failure, its last attempt decides) and
  dead-lettered. A workflow's steps are tasks, so a workflow that fails at a
  step is one failed workflow and one failed task, each in its own figure.

Listeners (event tasks) get no lifecycle events and are not counted here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from engine.events.stats import TaskTypeStats
from engine.routing import WORKFLOW_LANE


def is_workflow(stats: TaskTypeStats) -> bool:
    """Whether a task type is a workflow's orchestrator (decided by its lane)."""
    return stats.lane == WORKFLOW_LANE


def label(stats: TaskTypeStats) -> str:
    """A task type's name as tables show it: a workflow lane's says so."""
    return f"{stats.task_name} (workflows)" if is_workflow(stats) else stats.task_name


@dataclass(frozen=True)
class Counts:
    """All-time outcomes, from the statistics of every worker."""

    tasks_ok: int = 0
    tasks_failed: int = 0
    tasks_dead_lettered: int = 0
    tasks_retried: int = 0  # failed attempts that ran again (not failures)
    workflows_completed: int = 0
    workflows_failed: int = 0  # failed for good or dead-lettered

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def tasks_text(self) -> str:
        return (
            f"tasks ok {self.tasks_ok:,} failed {self.tasks_failed:,} "
            f"dead {self.tasks_dead_lettered:,}"
        )

    def workflows_text(self) -> str:
        return f"workflows done {self.workflows_completed:,} failed {self.workflows_failed:,}"

    def line(self) -> str:
        """One line, as the console's header and ``onemanage status`` print it."""
        return f"{self.tasks_text()}  │  {self.workflows_text()}"


def counts(stats: Iterable[TaskTypeStats]) -> Counts:
    """The counts of every task type's statistics, by the definition above."""
    ok = failed = dead = retried = completed = workflows_failed = 0
    for s in stats:
        if is_workflow(s):
            completed += s.succeeded
            workflows_failed += s.failed + s.dead_lettered
        else:
            ok, failed, dead = ok + s.succeeded, failed + s.failed, dead + s.dead_lettered
            retried += s.retried
    return Counts(ok, failed, dead, retried, completed, workflows_failed)
