"""Inputs in the chunked blob store: write-once on the server, verified at read.

Landed main kept inputs in an object store whose description of an object any
uploader could overwrite. Now INPUTS refuses a second write to any subject, so
what is left to an attacker who may publish on ``inputs.>`` is storing a
forgery first; a worker's read catches it (code ``integrity``) and removes it,
and a genuine upload then stores the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import nats.js.errors
import pytest
from nats.js.api import DiscardPolicy, StorageType
from taskiq.kicker import AsyncKicker

from engine import blobs, storage
from engine.blobs import BlobInfo, BlobStore
from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, PsdWorkflowCompleted, PsdWorkflowFailed
from engine.publishing import SUBJECT_TAKEN
from engine.services.samples import make_demo_psd
from engine.storage import IntegrityError, StorageError
from engine.streams import ARTEFACTS, BLOB_CHUNK_SIZE, INPUTS, INPUTS_PREFIX, ensure_streams
from engine.tasks.names import PROCESS_LABELS, PROCESS_TASK
from tests.support.harness import EventCollector, WorkerProcess
from tests.support.waiting import eventually


def _inputs(client: OneManageBroker) -> BlobStore:
    return BlobStore(client.nc, client.js, INPUTS, INPUTS_PREFIX)


def _forged(data: bytes) -> bytes:
    """Other bytes of the same size, as a forger would store under the genuine address."""
    return data[:-16] + bytes(16) if data[-16:] != bytes(16) else data[:-16] + b"\xff" * 16


async def _publish_raw(
    client: OneManageBroker, key: str, chunks: bytes, meta_of: bytes | None
) -> str:
    """What someone allowed to publish on inputs.> can write, message by message.

    The chunks hold ``chunks``; the meta (when ``meta_of`` is given) describes
    ``meta_of``: its size and sha256. Returns the upload id used.
    """
    store = _inputs(client)
    upload_id = secrets.token_urlsafe(12)
    first_seq = 0
    pieces = [chunks[i : i + BLOB_CHUNK_SIZE] for i in range(0, len(chunks), BLOB_CHUNK_SIZE)]
    for n, piece in enumerate(pieces):
        ack = await client.js.publish(f"{store.base(key)}.c.{upload_id}.{n}", piece)
        first_seq = first_seq or ack.seq
    if meta_of is not None:
        meta = BlobInfo(
            size=len(meta_of),
            chunks=len(pieces),
            sha256=hashlib.sha256(meta_of).hexdigest(),
            upload_id=upload_id,
            first_seq=first_seq,
            created=datetime.now(UTC),
        )
        await client.js.publish(store.meta_subject(key), meta.model_dump_json().encode())
    return upload_id


async def _forge(client: OneManageBroker, data: bytes) -> str:
    """Store, before the genuine upload, other bytes under ``data``'s address and digest."""
    key = storage.input_key(data)
    await _publish_raw(client, key, _forged(data), meta_of=data)
    return key


async def _removed(client: OneManageBroker, key: str) -> bool:
    return await blobs.info(_inputs(client), key) is None


async def test_a_forged_input_is_caught_at_read_and_removed(client: OneManageBroker) -> None:
    data = make_demo_psd(seed=9001)
    key = await _forge(client, data)
    assert await storage.put_input(client, data) == key  # its meta's digest is the genuine one
    with pytest.raises(IntegrityError) as caught:
        await storage.get_input(client, key)
    assert caught.value.code == "integrity"
    assert key in str(caught.value)
    assert await _removed(client, key)

    assert await storage.put_input(client, data) == key  # a genuine upload now stores it
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

    async def removed() -> bool:
        return await _removed(client, key)

    await eventually(removed, what=f"the worker removes {key}")
    assert await storage.put_input(client, data) == key
    assert await storage.get_input(client, key) == data


async def test_an_upload_under_an_address_holding_other_bytes_is_refused(
    client: OneManageBroker,
) -> None:
    data = os.urandom(3 * BLOB_CHUNK_SIZE)
    key = storage.input_key(data)
    other = _forged(data)
    await _publish_raw(client, key, other, meta_of=other)  # a meta that says so
    with pytest.raises(IntegrityError) as caught:
        await storage.put_input(client, data)
    assert caught.value.code == "integrity"
    assert key in str(caught.value)


async def test_the_server_refuses_to_overwrite_a_stored_input(client: OneManageBroker) -> None:
    data = os.urandom(2 * BLOB_CHUNK_SIZE + 5)
    key = await storage.put_input(client, data)
    store = _inputs(client)
    info = await blobs.info(store, key)
    assert info is not None
    forged_meta = info.model_copy(update={"sha256": "0" * 64}).model_dump_json().encode()
    for subject, payload in (
        (store.meta_subject(key), forged_meta),
        (f"{store.base(key)}.c.{info.upload_id}.0", _forged(data)[:BLOB_CHUNK_SIZE]),
    ):
        with pytest.raises(nats.js.errors.APIError) as refused:
            await client.js.publish(subject, payload)
        assert refused.value.err_code == SUBJECT_TAKEN, refused.value  # 10077
    with pytest.raises(blobs.BlobTaken):  # the blob store says so too, without retrying
        await blobs.put(store, key, data)
    assert await blobs.info(store, key) == info
    assert await storage.get_input(client, key) == data


async def test_a_multi_chunk_input_round_trips_with_progress(client: OneManageBroker) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)  # 41 chunks, the last one short
    seen: list[tuple[int, int]] = []
    key = await storage.put_input(client, data, lambda sent, total: seen.append((sent, total)))
    assert seen[-1] == (len(data), len(data))
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    info = await blobs.info(_inputs(client), key)
    assert info is not None
    assert (info.size, info.chunks) == (len(data), 41)
    assert await storage.get_input(client, key) == data


async def test_an_interrupted_upload_does_not_block_a_later_one(client: OneManageBroker) -> None:
    data = os.urandom(4 * BLOB_CHUNK_SIZE)
    key = storage.input_key(data)
    await _publish_raw(client, key, data[: 2 * BLOB_CHUNK_SIZE], meta_of=None)  # no meta
    with pytest.raises(StorageError, match="expired or never stored"):
        await storage.get_input(client, key)
    assert await storage.put_input(client, data) == key
    assert await storage.get_input(client, key) == data


async def test_the_same_file_uploaded_twice_at_once_is_stored_once(
    client: OneManageBroker,
) -> None:
    data = os.urandom(8 * BLOB_CHUNK_SIZE)
    keys = await asyncio.gather(*(storage.put_input(client, data) for _ in range(3)))
    assert set(keys) == {storage.input_key(data)}
    assert await storage.get_input(client, keys[0]) == data


async def test_artefacts_round_trip_and_the_latest_wins(client: OneManageBroker) -> None:
    workflow_id = uuid.uuid4().hex
    first, second = os.urandom(3 * BLOB_CHUNK_SIZE), os.urandom(BLOB_CHUNK_SIZE // 2)
    key = await storage.put_artefact(client, workflow_id, "layers/0001 sky.png", first)
    assert await storage.get_artefact(client, key) == first
    assert await storage.put_artefact(client, workflow_id, "layers/0001 sky.png", second) == key
    assert await storage.get_artefact(client, key) == second
    assert await storage.get_artefact(client, await storage.put_json(client, workflow_id, "e", {}))
    empty = await storage.put_artefact(client, workflow_id, "empty", b"")
    assert await storage.get_artefact(client, empty) == b""
    with pytest.raises(StorageError, match="expired or never stored"):
        await storage.get_artefact(client, storage.artefact_key(workflow_id, "missing.png"))


async def test_the_blob_streams_are_write_once_and_latest_wins(client: OneManageBroker) -> None:
    infos = await ensure_streams(client.js, client.settings)
    inputs, artefacts = infos[INPUTS].config, infos[ARTEFACTS].config
    assert inputs.subjects == ["inputs.>"] and artefacts.subjects == ["artefacts.>"]
    for config in (inputs, artefacts):
        assert config.max_msgs_per_subject == 1
        assert config.allow_direct  # read by direct get: no consumer
        assert (config.max_msg_size or 0) > BLOB_CHUNK_SIZE
        assert config.storage == StorageType.FILE
    assert (inputs.discard, inputs.discard_new_per_subject) == (DiscardPolicy.NEW, True)
    assert artefacts.discard == DiscardPolicy.OLD
    assert inputs.max_age == pytest.approx(client.settings.inputs_ttl)
    assert artefacts.max_age == pytest.approx(client.settings.artefacts_ttl)
