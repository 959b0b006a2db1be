"""PSD inputs and artefacts as chunked blobs (engine.blobs) on the broker's connection.

Inputs are content-addressed (``sha256-<hex>``), so the same file submitted
twice is stored once; artefacts live under ``<workflow_id>/``. Both streams
expire their messages after their TTL, so the store does not grow forever.

INPUTS' subjects are write-once: the server refuses to replace a stored input,
even for a user allowed to upload. What one can still do is store a forgery
first, under an address whose file is not yet stored, so an address is only
worth what is checked. An upload reuses a stored input only if its meta's
digest is that of the bytes being uploaded; a worker's read verifies the bytes
against the address and removes a forgery, so a genuine upload can then store
the file. A mismatch is an IntegrityError, code ``integrity``. Artefacts are
latest-wins: a rerun of a step writes them again.

Reads hold no state on the server: a read-only user reads artefacts by direct
get, without creating a consumer; a worker reads an input's meta from the
stream leader, then its chunks by direct get.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import nats.errors

from engine import blobs
from engine.blobs import BlobStore
from engine.broker import OneManageBroker
from engine.errors import OneManageError
from engine.streams import ARTEFACTS, ARTEFACTS_PREFIX, INPUTS, INPUTS_PREFIX

logger = logging.getLogger(__name__)

Progress = blobs.Progress  # (bytes sent, total bytes)


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


def artefact_key(workflow_id: str, name: str) -> str:
    return f"{workflow_id}/{name}"


def _store(broker: OneManageBroker, stream: str, prefix: str) -> BlobStore:
    settings = broker.settings
    return BlobStore(
        broker.nc,
        broker.js,
        stream,
        prefix,
        publish_deadline=settings.publish_deadline,
        publish_timeout=settings.publish_timeout,
    )


def _inputs(broker: OneManageBroker) -> BlobStore:
    return _store(broker, INPUTS, INPUTS_PREFIX)


def _artefacts(broker: OneManageBroker) -> BlobStore:
    return _store(broker, ARTEFACTS, ARTEFACTS_PREFIX)


@contextlib.contextmanager
def _storage_errors(key: str, stream: str) -> Iterator[None]:
    """The blob store's errors as StorageError, in words about objects."""
    try:
        yield
    except blobs.BlobMissing as exc:
        raise StorageError(f"no object {key} in {stream} (expired or never stored)") from exc
    except blobs.BlobStreamMissing as exc:
        raise StorageError(
            f"stream {stream} does not exist yet: start a worker once to create it"
        ) from exc
    except blobs.BlobError as exc:
        raise StorageError(f"object {key} in {stream}: {exc}") from exc


def _other_bytes(key: str) -> IntegrityError:
    return IntegrityError(
        f"input {key} is stored with other bytes than its address names, and a stored input "
        "cannot be replaced; it is removed when a worker reads it, or when it expires: "
        "submit the file again later"
    )


async def put_input(broker: OneManageBroker, data: bytes, progress: Progress | None = None) -> str:
    """Store an input once; returns its content address.

    A stored input is reused only when its meta's digest is that of ``data``.
    Other bytes under the key cannot be replaced (write-once): IntegrityError.
    """
    key = input_key(data)
    store = _inputs(broker)
    with _storage_errors(key, INPUTS):
        if not _reusable(key, data, await _described(store, key, settle=False)):
            try:
                await blobs.put(store, key, data, progress)
                return key
            except blobs.BlobTaken:
                # Stored meanwhile (the same file submitted twice at once): reuse it if it is.
                if not _reusable(key, data, await _described(store, key, settle=True)):
                    raise StorageError(
                        f"input {key} was stored meanwhile, but its meta cannot be read yet: "
                        "submit the file again"
                    ) from None
    if progress:
        progress(len(data), len(data))
    return key


async def input_stored(broker: OneManageBroker, key: str) -> bool:
    """Whether the input ``key`` is still stored (not expired): its description is there.

    Read by direct get, as an operator may: a retry or a resubmit needs its input.
    """
    with _storage_errors(key, INPUTS):
        return await _described(_inputs(broker), key, settle=False) is not None


async def _described(store: BlobStore, key: str, settle: bool) -> blobs.BlobInfo | None:
    try:
        return await (blobs.settled_info(store, key) if settle else blobs.info(store, key))
    except blobs.BlobDamaged as exc:
        raise _other_bytes(key) from exc


def _reusable(key: str, data: bytes, info: blobs.BlobInfo | None) -> bool:
    """Does ``info`` describe ``data``? False when nothing is stored; raises for other bytes."""
    if info is None:
        return False
    if info.size != len(data) or f"sha256-{info.sha256}" != key:
        raise _other_bytes(key)
    return True


async def get_input(broker: OneManageBroker, key: str) -> bytes:
    """The input's bytes, verified against its address; a forgery is removed.

    Only workers read inputs (and may purge them): removing what fails the
    check lets a genuine upload of the file store it again. The meta comes
    from the stream leader, so an input submitted a moment ago is found even
    when a replica that has not caught up would answer a direct get.
    """
    store = _inputs(broker)
    with _storage_errors(key, INPUTS):
        try:
            blob = await blobs.get(store, key, from_leader=True)  # just stored: there
            if f"sha256-{blob.info.sha256}" != key:  # the chunks match the meta, not the key
                raise blobs.BlobDamaged(f"{key}: its bytes are sha256-{blob.info.sha256[:12]}...")
        except blobs.BlobDamaged as exc:
            logger.warning("input %s is not its content (%s): removing it", key, exc)
            await _remove(store, key)
            raise IntegrityError(
                f"input {key} holds other bytes than its address names ({exc}); it was "
                "removed: submit the file again"
            ) from exc
    return blob.data


async def _remove(store: BlobStore, key: str) -> None:
    """Purge a forged input; failing that, it expires, and the integrity error still stands."""
    try:
        await blobs.remove(store, key)
    except (nats.errors.Error, OneManageError, TimeoutError) as exc:
        logger.warning("could not remove input %s: %s: %s", key, type(exc).__name__, exc)


async def put_artefact(broker: OneManageBroker, workflow_id: str, name: str, data: bytes) -> str:
    key = artefact_key(workflow_id, name)
    with _storage_errors(key, ARTEFACTS):
        await blobs.put(_artefacts(broker), key, data)
    return key


async def put_json(broker: OneManageBroker, workflow_id: str, name: str, value: Any) -> str:
    return await put_artefact(broker, workflow_id, name, json.dumps(value).encode())


async def get_artefact(broker: OneManageBroker, key: str) -> bytes:
    with _storage_errors(key, ARTEFACTS):
        try:
            return (await blobs.get(_artefacts(broker), key)).data
        except blobs.BlobDamaged as exc:
            raise IntegrityError(f"artefact {key} is damaged ({exc})") from exc
