"""Content-addressed inputs are verified: forged bytes are caught at read and never reused.

Landed main: an input ``sha256-...`` overwritten with other bytes of the same
size was read as is, and a later genuine upload reused the forged bytes (the
dedup compared key and size only).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from taskiq.kicker import AsyncKicker

from engine import storage
from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, PsdWorkflowCompleted, PsdWorkflowFailed
from engine.services.samples import make_demo_psd
from engine.storage import IntegrityError
from engine.streams import INPUTS_BUCKET
from engine.tasks.names import PROCESS_LABELS, PROCESS_TASK
from tests.support.harness import EventCollector, WorkerProcess


def _forged(data: bytes) -> bytes:
    """Other bytes of the same size, as someone overwriting the object would write."""
    return data[:-16] + bytes(16) if data[-16:] != bytes(16) else data[:-16] + b"\xff" * 16


async def _forge(client: OneManageBroker, data: bytes) -> str:
    key = await storage.put_input(client, data)
    store = await client.object_store(INPUTS_BUCKET)
    await store.put(key, _forged(data))
    return key


async def test_a_forged_input_is_caught_at_read(client: OneManageBroker) -> None:
    data = make_demo_psd(seed=9001)
    key = await _forge(client, data)
    with pytest.raises(IntegrityError) as caught:
        await storage.get_input(client, key)
    assert caught.value.code == "integrity"
    assert key in str(caught.value)


async def test_a_genuine_upload_replaces_forged_bytes_instead_of_reusing_them(
    client: OneManageBroker,
) -> None:
    data = make_demo_psd(seed=9002)
    key = await _forge(client, data)
    assert await storage.put_input(client, data) == key
    assert await storage.get_input(client, key) == data


async def test_a_workflow_on_a_forged_input_fails_with_integrity(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers()
    await worker.ready(events)
    data = make_demo_psd(seed=9003)
    key = await _forge(client, data)
    workflow_id = uuid.uuid4().hex
    kicker: AsyncKicker[..., Any] = AsyncKicker(PROCESS_TASK, client, dict(PROCESS_LABELS))
    await kicker.with_task_id(workflow_id).kiq(workflow_id, key, "forged.psd", len(data))

    def outcome(e: BaseEvent) -> bool:
        return (
            isinstance(e, PsdWorkflowCompleted | PsdWorkflowFailed) and e.workflow_id == workflow_id
        )

    (ended,) = await events.wait_for(outcome, timeout=60)
    assert isinstance(ended, PsdWorkflowFailed), ended
    assert (ended.step, ended.error_code) == ("validate", "integrity")
