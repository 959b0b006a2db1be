"""The assembly: this process's broker with its parts, and what a worker runs.

Everything a OneManage process is made of is put together here, once:

* ``create_broker(settings)``: a OneManageBroker with the KV result backend,
  the lifecycle middleware, the dead-letter and discard watches, and the diagnostic tasks
  every worker answers (``diag.ping`` for ``onemanage check``);
* ``broker``: the process's broker; task modules decorate with it
  (``@broker.task``), clients start it (``await broker.startup()``);
* ``event_listener``: ``@event_listener(durable, subject)`` on that broker;
* ``BUILTIN_MODULES``: what ``onemanage worker`` runs when given no modules,
  the PSD application and the built-in listeners (engine.builtin).

Task modules import this module, never the other way round: it names the
modules a worker runs, and the worker imports them at start-up, as taskiq's
own CLI does.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from taskiq import TaskiqEvents, TaskiqState

from engine.broker import OneManageBroker
from engine.deadletters import watch_dead_letters
from engine.discards import DiscardWatch, look, watch_discards
from engine.events.listeners import Handler, ListenerTask
from engine.events.listeners import event_listener as _event_listener
from engine.identity import WORKER_PARENT as WORKER_PARENT
from engine.metrics import MetricsMiddleware
from engine.middleware import LifecycleMiddleware
from engine.parentdeath import terminate_with_parent
from engine.results import NatsKVResultBackend
from engine.routing import Deliver
from engine.settings import Settings
from engine.streams import EVENTS_SUBJECTS
from engine.tasks import diagnostics

BUILTIN_MODULES = ("engine.builtin",)


def create_broker(settings: Settings | None = None) -> OneManageBroker:
    """A broker with every part the engine needs; ``settings=None`` reads the environment."""
    broker = OneManageBroker(settings)
    broker.with_result_backend(NatsKVResultBackend(broker))
    broker.add_middlewares(LifecycleMiddleware(), MetricsMiddleware())

    async def dead_letters(state: TaskiqState) -> None:
        await watch_dead_letters(broker)

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, dead_letters)

    async def die_with_parent(state: TaskiqState) -> None:
        parent = os.environ.get(WORKER_PARENT)
        terminate_with_parent(int(parent) if parent else None)

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, die_with_parent)
    watch = DiscardWatch(broker)
    broker.fetch_watchers.append(watch)
    # Looked at before the lanes pull: see engine.discards.
    broker.run_in_workers(
        "discard-watch", functools.partial(watch_discards, watch), functools.partial(look, watch)
    )
    for name, function in diagnostics.TASKS.items():
        broker.register_task(function, task_name=name)
    return broker


broker = create_broker()


def event_listener(
    durable: str, subject: str = EVENTS_SUBJECTS, *, deliver: Deliver = "new"
) -> Callable[[Handler], ListenerTask]:
    """Register a handler as the event task ``listener.<durable>`` of this process's broker.

    It gets every event matching ``subject`` through its own durable, parsed
    and version-checked; unreadable events are counted and skipped.
    ``deliver="all"`` makes a new durable start from the oldest stored event.
    """
    return _event_listener(broker, durable, subject, deliver=deliver)
