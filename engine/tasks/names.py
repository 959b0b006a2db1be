"""The PSD application's entry points by name: what a client kicks and announces.

A client (``onemanage submit``, the console, your code) kicks ``psd.process`` by
name, so it loads neither the workflow's code nor the psd-tools it needs, and a
worker that only submits PSDs does not start running the PSD application. The
operator's control tasks (cancel, replay) are kicked by name the same way: a
worker, which has the rights, does what the operator may not do itself.
"""

from __future__ import annotations

import uuid

from engine.events.schemas import PsdWorkflowSubmitted
from engine.routing import LANE_LABEL, WORKFLOW_LANE

PROCESS_TASK = "psd.process"
PROCESS_LABELS = {LANE_LABEL: WORKFLOW_LANE}  # orchestrators have a lane of their own
# Control tasks run in the default lane, with the steps: the orchestrators they act on
# hold the workflow lane's slots, so a cancel never waits behind the workflows it stops.
CANCEL_TASK = "psd.cancel"
REPLAY_TASK = "onemanage.replay"
_SUBMITTED = uuid.UUID("9a3e61c2-4f0b-4d7e-a1c5-2b8d7f90e4a6")


def submitted_event_id(workflow_id: str) -> str:
    """One id for every announcement of ``workflow_id``: the submitter's and the orchestrator's."""
    return uuid.uuid5(_SUBMITTED, workflow_id).hex


def announcement(
    workflow_id: str,
    input_key: str,
    filename: str,
    size_bytes: int,
    resubmitted_from: str | None = None,
) -> PsdWorkflowSubmitted:
    """The PsdWorkflowSubmitted of a workflow, the same whoever announces it."""
    return PsdWorkflowSubmitted(
        event_id=submitted_event_id(workflow_id),
        workflow_id=workflow_id,
        filename=filename,
        input_key=input_key,
        size_bytes=size_bytes,
        resubmitted_from=resubmitted_from,
        correlation_id=workflow_id,
    )
