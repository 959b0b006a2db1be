"""submit_psd(): the one way a PSD gets in, shared by the CLI and the console.

Checks the file locally first (exists, readable, not too big, a PSD/PSB
signature) so a person hears about a wrong file at once, uploads it to the
inputs bucket (once per content), kicks the workflow with the workflow id as its
task id and correlation id, then announces PsdWorkflowSubmitted. Retry and
resubmit (engine.actions) start a workflow on a stored input the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from taskiq.exceptions import SendTaskError
from taskiq.kicker import AsyncKicker

from engine import monitor, storage
from engine.broker import OneManageBroker
from engine.errors import OneManageError, PermissionDeniedError, PublishError
from engine.events.publisher import publish_event
from engine.events.schemas import BaseEvent, PsdWorkflowCompleted, PsdWorkflowFailed
from engine.routing import CORRELATION_LABEL
from engine.storage import Progress
from engine.tasks.names import PROCESS_LABELS, PROCESS_TASK, announcement

SIGNATURE = b"8BPS"


class SubmitError(OneManageError):
    """A file that cannot be submitted, and why (before anything was uploaded).

    ``code`` is the workflow's error code for the same fault (docs/troubleshooting.md,
    "PSD error codes"), or ``no_such_file`` / ``not_a_file`` / ``unreadable`` for a path
    that names no file to read.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {super().__str__()}"


@dataclass(frozen=True)
class Submission:
    workflow_id: str
    filename: str
    input_key: str
    size_bytes: int
    submitted_at: datetime


def check_psd_bytes(data: bytes, filename: str, max_bytes: int) -> None:
    """The local checks: size cap and a PSD (version 1) or PSB (version 2) header start."""
    if not data:
        raise SubmitError("not_psd", f"{filename} is empty")
    if len(data) > max_bytes:
        raise SubmitError(
            "too_large", f"{filename} is {len(data):,} bytes; the upload limit is {max_bytes:,}"
        )
    if data[:4] != SIGNATURE:
        raise SubmitError(
            "not_psd", f"{filename} is not a PSD or PSB file (it does not start with 8BPS)"
        )
    if len(data) < 6:
        raise SubmitError("truncated", f"{filename} ends inside its header ({len(data)} bytes)")
    if data[4:6] not in (b"\x00\x01", b"\x00\x02"):
        version = int.from_bytes(data[4:6], "big")
        raise SubmitError(
            "corrupt",
            f"{filename} starts with 8BPS but its version is {version} "
            "(1 is a PSD, 2 a PSB): a damaged header",
        )


def read_psd_file(path: Path, max_bytes: int) -> bytes:
    """Read ``path`` after checking it exists, is a file, and is not too big."""
    if not path.exists():
        raise SubmitError("no_such_file", f"{path}: no such file")
    if not path.is_file():
        raise SubmitError("not_a_file", f"{path}: a directory or device, not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise SubmitError(
            "too_large", f"{path} is {size:,} bytes; the upload limit is {max_bytes:,}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SubmitError("unreadable", f"{path}: cannot read: {exc.strerror or exc}") from exc
    check_psd_bytes(data, path.name, max_bytes)
    return data


async def kick(
    broker: OneManageBroker,
    task_name: str,
    labels: dict[str, Any],
    task_id: str,
    *args: Any,
    **kwargs: Any,
) -> None:
    """Kick ``task_name`` by name (no need of its code) as ``task_id``.

    Raises the PublishError (it says whether the task may run anyway) or the
    PermissionDeniedError under taskiq's SendTaskError, which has no text.
    """
    kicker: AsyncKicker[..., Any] = AsyncKicker(task_name, broker, labels)
    try:
        await kicker.with_task_id(task_id).kiq(*args, **kwargs)
    except SendTaskError as exc:
        if isinstance(exc.__cause__, PublishError | PermissionDeniedError):
            raise exc.__cause__ from exc
        raise


async def submit_psd(
    broker: OneManageBroker, data: bytes, filename: str, progress: Progress | None = None
) -> Submission:
    """Upload ``data`` and start its workflow; returns as soon as the workflow is queued.

    The workflow is kicked by name: submitting needs none of its code. Raises
    PublishError when the server could not confirm it: its ``outcome`` says
    whether the workflow (id ``msg_id``) may run anyway.
    """
    check_psd_bytes(data, filename, broker.settings.max_upload_bytes)
    key = await storage.put_input(broker, data, progress)
    return await start_workflow(broker, key, filename, len(data))


async def start_workflow(
    broker: OneManageBroker,
    input_key: str,
    filename: str,
    size_bytes: int,
    resubmitted_from: str | None = None,
) -> Submission:
    """Kick a new workflow on a stored input, then announce it: the one submission path.

    Kicked first: a submitter cancelled or killed before its announcement leaves
    a workflow that runs, and its orchestrator announces it (same event id) when
    it starts. Announced first, a kick that never happened would leave a workflow
    "submitted" forever.
    """
    submitted_at = datetime.now(UTC)
    workflow_id = uuid.uuid4().hex
    link = {"resubmitted_from": resubmitted_from} if resubmitted_from else {}
    labels = {**PROCESS_LABELS, CORRELATION_LABEL: workflow_id}
    args = (workflow_id, input_key, filename, size_bytes)
    await kick(broker, PROCESS_TASK, labels, workflow_id, *args, **link)
    await publish_event(
        broker, announcement(workflow_id, input_key, filename, size_bytes, resubmitted_from)
    )
    return Submission(workflow_id, filename, input_key, size_bytes, submitted_at)


async def follow_workflow(
    broker: OneManageBroker, submission: Submission
) -> AsyncIterator[BaseEvent]:
    """The events of one workflow in order, ending with its outcome event."""
    since = submission.submitted_at - timedelta(seconds=1)
    async for event in monitor.follow(broker, since):
        if event.correlation_id != submission.workflow_id:
            continue
        yield event
        if isinstance(event, PsdWorkflowCompleted | PsdWorkflowFailed):
            return
