"""The three roles and the NATS permissions each one has: exactly what it uses, no more.

* ``worker`` runs tasks and listeners: it creates the streams, pulls TASKS
  through the lane durables, publishes EVENTS, reads and writes results,
  inputs and artefacts.
* ``viewer`` watches (the console, ``status``, ``check``): stream and consumer
  figures, EVENTS and the task statistics read by direct get, artefacts.
  Direct get holds no state on the server, so a viewer creates no consumer at
  all: permissions cannot bound a consumer's ``inactive_threshold`` nor scope
  its name, and a user who may create consumers may create ones that never
  expire, or pull from a worker's durable (PLATFORM-NOTES, "Permissions").
* ``operator`` is a viewer who submits and acts: it uploads inputs (write-once
  subjects: the server refuses a second write) and kicks the PSD workflow on
  its one subject, announcing that with the two events a submission makes
  (a retry and a resubmit are submissions too). A cancel or a replay needs
  rights it does not have (outcomes, any task subject), so it kicks a control
  task on its own subject and a worker does it (engine.tasks.control).
  Nothing a worker says (outcomes, heartbeats, dead letters) is on its list.

Each role has its own inbox prefix, so one role cannot read the replies meant
for another (a subscription to ``_INBOX.>`` would see every worker's
deliveries). This module is data: docs/security.md prints its tables, the
generated server configuration is made from it, and the tests try every
forbidden operation against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.events.schemas import PsdWorkflowSubmitted, TaskQueued
from engine.routing import DEFAULT_LANE, WORKFLOW_LANE, task_subject
from engine.streams import (
    ALERTS_BUCKET,
    ARTEFACTS,
    EVENTS,
    INPUTS,
    MARKS_BUCKET,
    RESULTS_BUCKET,
    STATS_BUCKET,
    TASKS,
)
from engine.tasks.names import CANCEL_TASK, PROCESS_TASK, REPLAY_TASK

Role = Literal["worker", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("worker", "operator", "viewer")


def event_subject(event_type: str) -> str:
    return f"events.{event_type}"


# What an operator's submission publishes: the task, and the two events that announce it.
SUBMISSION_TASK = task_subject(PROCESS_TASK, WORKFLOW_LANE)
SUBMISSION_EVENTS = (
    event_subject(TaskQueued.model_fields["event_type"].default),
    event_subject(PsdWorkflowSubmitted.model_fields["event_type"].default),
)


# What an operator's cancel and replay kick: a control task a worker runs.
CONTROL_TASKS = (task_subject(CANCEL_TASK, DEFAULT_LANE), task_subject(REPLAY_TASK, DEFAULT_LANE))

# The actions of the console and the CLI, and the roles that may do each.
ACTIONS: dict[str, tuple[Role, ...]] = {
    "replay": ("operator", "worker"),
    "cancel": ("operator", "worker"),
    "retry": ("operator", "worker"),
    "resubmit": ("operator", "worker"),
    "download": ROLES,
    "copy": ROLES,
}
_ACTION_WORDS = {
    "replay": "replay dead letters",
    "cancel": "cancel workflows",
    "retry": "retry workflows",
    "resubmit": "resubmit files",
    "download": "download artefacts",
    "copy": "copy ids",
}


def refusal(role: Role, action: str) -> str | None:
    """None when ``role`` may do ``action``, else the sentence that says why not and what to do.

    The console asks before it asks for a confirmation; the server still has the
    last word (a refused publish is a PermissionDeniedError).
    """
    allowed = ACTIONS.get(action)
    if allowed is None:
        return f"there is no action {action!r} (one of {', '.join(ACTIONS)})"
    if role in allowed:
        return None
    return (
        f"the {role} role may not {_ACTION_WORDS[action]}: connect as operator "
        "(ONEMANAGE_ROLE=operator, with the operator's credentials)"
    )


def inbox_prefix(role: Role) -> str:
    """The prefix of this role's reply subjects; its users may subscribe there only."""
    return f"_INBOX_{role}"


@dataclass(frozen=True)
class Permissions:
    """A role's NATS rights, with the reason for each, for the docs' tables."""

    role: Role
    publish: tuple[tuple[str, str], ...]  # (subject, why)
    subscribe: tuple[tuple[str, str], ...]

    def as_config(self) -> dict[str, dict[str, list[str]]]:
        """The ``permissions`` block of a nats-server user."""
        return {
            "publish": {"allow": [subject for subject, _ in self.publish]},
            "subscribe": {"allow": [subject for subject, _ in self.subscribe]},
        }


_API = "$JS.API"

_READ: tuple[tuple[str, str], ...] = (
    (f"{_API}.INFO", "account figures (resources left)"),
    (f"{_API}.STREAM.NAMES", "which streams exist"),
    (f"{_API}.STREAM.LIST", "stream figures"),
    (f"{_API}.STREAM.INFO.*", "one stream's figures"),
    (f"{_API}.CONSUMER.NAMES.*", "which consumers exist"),
    (f"{_API}.CONSUMER.LIST.*", "consumer figures (lag, redeliveries)"),
    (f"{_API}.CONSUMER.INFO.*.*", "one consumer's figures"),
    (f"{_API}.DIRECT.GET.{EVENTS}", "read EVENTS (history and live), no consumer"),
    (f"{_API}.DIRECT.GET.KV_{STATS_BUCKET}", "read the task statistics"),
    (f"{_API}.DIRECT.GET.KV_{ALERTS_BUCKET}", "read the raised alerts"),
    (f"{_API}.DIRECT.GET.{ARTEFACTS}", "read artefacts' chunks"),
    (f"{_API}.DIRECT.GET.{ARTEFACTS}.>", "read an artefact's description"),
)

_SUBMIT: tuple[tuple[str, str], ...] = (
    (SUBMISSION_TASK, "kick the PSD workflow (a worker runs only psd.process from here)"),
    *((subject, "announce the submission") for subject in SUBMISSION_EVENTS),
    (CONTROL_TASKS[0], "ask a worker to cancel a workflow (it publishes the outcome)"),
    (CONTROL_TASKS[1], "ask a worker to replay a dead letter (it reads and sends it)"),
    ("inputs.>", "upload inputs: each subject is written once, the server refuses a rewrite"),
    (f"{_API}.DIRECT.GET.{INPUTS}", "read inputs' chunks (a stored copy is reused)"),
    (f"{_API}.DIRECT.GET.{INPUTS}.>", "read an input's description"),
)

_WORK: tuple[tuple[str, str], ...] = (
    ("tasks.>", "kick tasks (a workflow kicks its steps)"),
    ("events.>", "publish lifecycle events, heartbeats, outcomes"),
    (f"$KV.{RESULTS_BUCKET}.>", "store results"),
    (f"$KV.{STATS_BUCKET}.>", "fold task statistics"),
    (f"$KV.{MARKS_BUCKET}.>", "mark handled events (listener idempotency)"),
    (f"$KV.{ALERTS_BUCKET}.>", "the alert evaluator's book (raised alerts, who evaluates)"),
    ("inputs.>", "store inputs"),
    ("artefacts.>", "store artefacts"),
    (f"{_API}.INFO", "account figures"),
    (f"{_API}.STREAM.NAMES", "which streams exist"),
    (f"{_API}.STREAM.LIST", "stream figures"),
    (f"{_API}.STREAM.INFO.*", "verify a stream at start-up"),
    (f"{_API}.STREAM.CREATE.*", "create the streams and buckets at start-up"),
    (f"{_API}.STREAM.UPDATE.*", "bring a drifted stream back to its spec"),
    (f"{_API}.STREAM.MSG.GET.*", "read a dead letter's stored task"),
    (f"{_API}.STREAM.MSG.DELETE.{TASKS}", "remove a dead-lettered task from the work queue"),
    (f"{_API}.STREAM.PURGE.{INPUTS}", "remove a forged input found at read"),
    (f"{_API}.DIRECT.GET.>", "read results, marks, statistics, inputs, artefacts, events"),
    (f"{_API}.CONSUMER.CREATE.*.>", "create the lane and listener durables"),
    (f"{_API}.CONSUMER.DURABLE.CREATE.*.*", "create durables (older API)"),
    (f"{_API}.CONSUMER.NAMES.*", "which consumers exist"),
    (f"{_API}.CONSUMER.LIST.*", "consumer figures"),
    (f"{_API}.CONSUMER.INFO.*.*", "verify a durable"),
    (f"{_API}.CONSUMER.MSG.NEXT.*.*", "pull deliveries"),
    ("$JS.ACK.>", "acknowledge, nak, in-progress, terminate"),
)

PERMISSIONS: dict[Role, Permissions] = {
    "viewer": Permissions(
        "viewer", _READ, ((f"{inbox_prefix('viewer')}.>", "replies to its requests"),)
    ),
    "operator": Permissions(
        "operator",
        _READ + _SUBMIT,
        ((f"{inbox_prefix('operator')}.>", "replies to its requests"),),
    ),
    "worker": Permissions(
        "worker",
        _WORK,
        (
            (f"{inbox_prefix('worker')}.>", "replies and deliveries"),
            (f"$KV.{RESULTS_BUCKET}.>", "wake up when an awaited result lands"),
            ("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>", "dead letters"),
        ),
    ),
}
