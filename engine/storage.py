"""PSD inputs and artefacts in NATS Object Store buckets, on the broker's connection.

Inputs are content-addressed (``sha256-<hex>``), so the same file submitted
twice is stored once; artefacts live under ``<workflow_id>/``. Both buckets
expire their objects after their TTL, so the store does not grow forever.

An address is only worth what is checked: a read of an input verifies its
bytes against the key (the store's own digest only says the object is what
its last writer put), and an upload reuses a stored input only if the
store's digest is that of the bytes being uploaded. Different bytes under
the key (forged, or corrupt) are an IntegrityError, code ``integrity``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from collections.abc import Callable
from typing import Any

from nats.js.errors import DigestMismatchError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from engine.broker import OneManageBroker
from engine.errors import OneManageError
from engine.streams import ARTEFACTS_BUCKET, INPUTS_BUCKET

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes sent, total bytes)


class StorageError(OneManageError):
    """An object is missing or the store cannot be reached."""


class IntegrityError(StorageError):
    """A stored input is not the content its address names: never used, never reused."""

    code = "integrity"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def input_key(data: bytes) -> str:
    """The content address of an input: equal bytes, equal key."""
    return f"sha256-{hashlib.sha256(data).hexdigest()}"


def _store_digest(data: bytes) -> str:
    """The object store's digest of ``data`` (its ``ObjectInfo.digest`` format)."""
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


def artefact_key(workflow_id: str, name: str) -> str:
    return f"{workflow_id}/{name}"


class _ProgressReader(io.RawIOBase):
    """Reads ``data`` in the object store's chunks, telling ``progress`` as it goes."""

    def __init__(self, data: bytes, progress: Progress) -> None:
        self._view = memoryview(data)
        self._offset = 0
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), len(self._view) - self._offset)
        buffer[:size] = self._view[self._offset : self._offset + size]
        self._offset += size
        self._progress(self._offset, len(self._view))
        return size


async def _store(broker: OneManageBroker, bucket: str) -> ObjectStore:
    try:
        return await broker.object_store(bucket)
    except NotFoundError as exc:
        raise StorageError(
            f"bucket {bucket} does not exist yet: start a worker once to create it"
        ) from exc


async def put_input(broker: OneManageBroker, data: bytes, progress: Progress | None = None) -> str:
    """Store an input once; returns its content address.

    A stored object is reused only when the store's digest is that of ``data``:
    same key and size with other bytes (landed main reused forged bytes) is
    replaced by the genuine upload.
    """
    key = input_key(data)
    store = await _store(broker, INPUTS_BUCKET)
    try:
        info = await store.get_info(key)
        if info.size == len(data) and (info.digest or "").upper() == _store_digest(data).upper():
            if progress:
                progress(len(data), len(data))
            return key
        logger.warning("input %s in the store is not its content: uploading it again", key)
    except ObjectNotFoundError:
        pass
    payload: bytes | io.RawIOBase = _ProgressReader(data, progress) if progress else data
    await store.put(key, payload)  # type: ignore[arg-type]
    return key


async def get_input(broker: OneManageBroker, key: str) -> bytes:
    """The input's bytes, verified against its address."""
    try:
        data = await _get(broker, INPUTS_BUCKET, key)
    except DigestMismatchError as exc:
        raise IntegrityError(f"input {key} is damaged: its chunks do not match its digest") from exc
    if input_key(data) != key:
        raise IntegrityError(
            f"input {key} holds other bytes ({input_key(data)[:19]}...): it was overwritten "
            "or damaged; submit the file again"
        )
    return data


async def put_artefact(broker: OneManageBroker, workflow_id: str, name: str, data: bytes) -> str:
    key = artefact_key(workflow_id, name)
    await (await _store(broker, ARTEFACTS_BUCKET)).put(key, data)
    return key


async def put_json(broker: OneManageBroker, workflow_id: str, name: str, value: Any) -> str:
    return await put_artefact(broker, workflow_id, name, json.dumps(value).encode())


async def get_artefact(broker: OneManageBroker, key: str) -> bytes:
    return await _get(broker, ARTEFACTS_BUCKET, key)


async def _get(broker: OneManageBroker, bucket: str, key: str) -> bytes:
    store = await _store(broker, bucket)
    try:
        result = await store.get(key)
    except ObjectNotFoundError as exc:
        raise StorageError(f"no object {key} in {bucket} (expired or never stored)") from exc
    return bytes(result.data or b"")
