"""A workflow's artefacts written to a directory: one definition for the CLI and the console.

``onemanage artefacts`` and the console's download action both call
``download_artefacts``, so both take a prefix the same way, refuse a failed or
unknown workflow with the same words, and write the same files.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from engine import monitor, tracing
from engine.broker import OneManageBroker
from engine.errors import OneManageError
from engine.events.schemas import PsdWorkflowFailed
from engine.storage import StorageError, artefact_key, get_artefact

Progress = Callable[[int, int], None]  # (files written, files in all)
HISTORY = timedelta(days=7)  # how far back a prefix or a failure is looked up
FULL_ID = re.compile(r"[0-9a-f]{32}")


class DownloadError(OneManageError):
    """The artefacts cannot be written: why, in a sentence; ``code`` says which case."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "ambiguous_id" | "failed" | "no_artefacts"
        self.message = message


async def resolve_workflow(broker: OneManageBroker, workflow_id: str) -> str:
    """The full id of a prefix (the console shows 8 characters); a full id as it is."""
    if FULL_ID.fullmatch(workflow_id):
        return workflow_id
    recent = await monitor.recent_events(broker, HISTORY, "events.psd.>")
    try:
        return tracing.resolve(workflow_id, recent)
    except tracing.AmbiguousIdError as exc:
        raise DownloadError("ambiguous_id", f"{exc}; give more of it") from None
    except tracing.IdNotFoundError:
        return workflow_id  # its events may have expired while its artefacts are kept


async def _failure(broker: OneManageBroker, workflow_id: str) -> PsdWorkflowFailed | None:
    for event in await monitor.recent_events(broker, HISTORY, "events.psd.>"):
        if isinstance(event, PsdWorkflowFailed) and event.workflow_id == workflow_id:
            return event
    return None


async def download_artefacts(
    broker: OneManageBroker, workflow_id: str, out: Path, progress: Progress | None = None
) -> list[Path]:
    """Write the preview, thumbnail, layer images and manifest.json under ``out``.

    Returns the paths written, manifest.json last. ``progress`` is called after
    each file. Raises DownloadError for an ambiguous prefix, a failed workflow or
    one with no artefacts (unknown, still running, or expired).
    """
    workflow_id = await resolve_workflow(broker, workflow_id)
    try:
        manifest = json.loads(
            await get_artefact(broker, artefact_key(workflow_id, "manifest.json"))
        )
    except StorageError:
        failed = await _failure(broker, workflow_id)
        if failed is not None:
            raise DownloadError(
                "failed",
                f"workflow {workflow_id} failed at step {failed.step}: "
                f"{failed.error_code}: {failed.error_message}",
            ) from None
        raise DownloadError(
            "no_artefacts",
            f"no artefacts for workflow {workflow_id} (unknown, still running, or expired)",
        ) from None
    wanted = [
        ("preview.png", manifest["preview"]["key"]),
        ("thumbnail.png", manifest["preview"]["thumbnail_key"]),
    ]
    wanted += [(f"layers/{Path(i['key']).name}", i["key"]) for i in manifest["layer_images"]]
    total = len(wanted) + 1
    written: list[Path] = []
    for name, key in wanted:
        written.append(await asyncio.to_thread(_write, out / name, await get_artefact(broker, key)))
        if progress is not None:
            progress(len(written), total)
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    written.append(await asyncio.to_thread(_write, out / "manifest.json", manifest_bytes))
    if progress is not None:
        progress(len(written), total)
    return written


def _write(target: Path, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target
