"""Chunked blobs on a plain JetStream stream: put, get and describe them, read by direct get.

Why not a NATS Object Store: an object's description there is one subject that
any writer may roll up, so the server cannot stop an upload from replacing a
stored object, and its reads create a consumer, which a read-only user must
not be able to do. Here a blob is its chunks on
``<prefix>.<key token>.c.<upload id>.<n>`` followed by one description, its
meta, on ``<prefix>.<key token>.meta``. The meta is written last, once every
chunk is acknowledged: a blob exists only when its meta does. Every put has
its own upload id, so an interrupted upload (chunks, no meta) blocks no retry.
On a stream whose subjects are write-once (discard new per subject) the server
refuses a second meta: that is BlobTaken. Reads are direct gets (the meta
last-by-subject, then the chunks in batches), which hold no state on the
server; any replica answers them, one a little behind too, so a short answer
is asked again for a moment before a chunk counts as missing.

This module knows nothing of what the blobs are: engine.storage does.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError, ServiceUnavailableError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import direct, publishing
from engine.direct import DirectGet
from engine.errors import OneManageError, PublishError
from engine.streams import BLOB_CHUNK_SIZE, BLOB_MAX_MSG_SIZE

Progress = Callable[[int, int], None]  # (bytes stored, total bytes)

WINDOW = 16  # chunk publishes awaiting their acknowledgement at once
BATCH = 64  # chunks asked for in one batched direct get
RETRY_FIRST = 0.05  # s: the first wait before asking a lagging replica again
RETRY_MAX = 0.5
STREAM_NOT_FOUND = 10059  # the leader's answer to a get on a stream that does not exist


class BlobError(OneManageError):
    """A blob cannot be stored or read."""


class BlobMissing(BlobError):
    """No meta under the key: never stored, expired, or its upload never finished."""


class BlobStreamMissing(BlobError):
    """The stream does not exist (or answers no direct get)."""


class BlobDamaged(BlobError):
    """The stored chunks are not what the meta describes (or the meta is not valid)."""


class BlobTaken(BlobError):
    """A write-once stream refused the meta: the key holds a blob already."""


class BlobInfo(BaseModel):
    """A blob's meta: what a reader checks the chunks against."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    size: int = Field(ge=0)
    chunks: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    upload_id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    first_seq: int = Field(ge=0)  # no chunk of this upload has a lower stream sequence
    created: datetime


@dataclass(frozen=True)
class Blob:
    info: BlobInfo
    data: bytes  # verified: its size and sha256 are the meta's


@dataclass(frozen=True)
class BlobStore:
    """Where blobs live (a stream and its subject prefix) and how long a call may wait."""

    nc: Client
    js: JetStreamContext
    stream: str
    prefix: str
    publish_deadline: float = 30.0
    publish_timeout: float = 2.0
    read_timeout: float = 5.0  # for one answer to a direct get
    settle: float = 2.0  # for a replica behind the others to catch up

    def base(self, key: str) -> str:
        """The subjects of ``key`` start here: the key is one base64url token, unpadded."""
        if not key:
            raise ValueError("a blob key cannot be empty")
        token = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
        return f"{self.prefix}.{token}"

    def meta_subject(self, key: str) -> str:
        return f"{self.base(key)}.meta"


async def info(store: BlobStore, key: str, *, from_leader: bool = False) -> BlobInfo | None:
    """The meta of ``key``, or None when there is none.

    By direct get, which any replica answers, one a little behind too (a blob
    just stored may not be there yet). ``from_leader`` asks the stream leader
    instead ($JS.API.STREAM.MSG.GET): what was acknowledged is there.
    """
    return await _meta(store, key, from_leader)


async def settled_info(store: BlobStore, key: str) -> BlobInfo | None:
    """The meta of a ``key`` the server says is stored, given a lagging replica time to catch up."""
    give_up = time.monotonic() + store.settle
    pause = RETRY_FIRST
    while (meta := await _meta(store, key, False)) is None and time.monotonic() < give_up:
        await asyncio.sleep(pause)
        pause = min(pause * 2, RETRY_MAX)
    return meta


async def put(
    store: BlobStore, key: str, data: bytes, progress: Progress | None = None
) -> BlobInfo:
    """Store ``data`` under ``key``: every chunk acknowledged, then the meta.

    Raises BlobTaken when the stream is write-once and ``key`` has a meta already
    (the chunks just sent stay behind until the stream's max age).
    """
    upload_id = secrets.token_urlsafe(12)
    first_seq, chunks = await _send_chunks(store, key, upload_id, data, progress)
    meta = BlobInfo(
        size=len(data),
        chunks=chunks,
        sha256=hashlib.sha256(data).hexdigest(),
        upload_id=upload_id,
        first_seq=first_seq,
        created=datetime.now(UTC),
    )
    try:
        await _publish(
            store, store.meta_subject(key), meta.model_dump_json().encode(), f"{upload_id}.m"
        )
    except PublishError as exc:
        if publishing.subject_taken(exc):
            raise BlobTaken(f"{key} is stored already in {store.stream}") from exc
        raise
    if progress:
        progress(len(data), len(data))
    return meta


async def get(store: BlobStore, key: str, *, from_leader: bool = False) -> Blob:
    """The blob under ``key``, its chunks checked against its meta (``from_leader``: see info)."""
    meta = await _meta(store, key, from_leader)
    if meta is None:
        raise BlobMissing(f"no blob {key} in {store.stream}")
    found = await _read_chunks(store, key, meta)
    missing = meta.chunks - len(found)
    if missing:
        raise BlobDamaged(f"{key}: {missing} of its {meta.chunks} chunks are missing")
    data = b"".join(found[n] for n in range(meta.chunks))
    if len(data) != meta.size:
        raise BlobDamaged(f"{key}: its chunks hold {len(data)} bytes, its meta says {meta.size}")
    if hashlib.sha256(data).hexdigest() != meta.sha256:
        raise BlobDamaged(f"{key}: its chunks do not match its meta's sha256")
    return Blob(meta, data)


async def remove(store: BlobStore, key: str) -> None:
    """Purge every subject of ``key``: its meta and the chunks of every upload."""
    await store.js.purge_stream(store.stream, subject=f"{store.base(key)}.>")


# -- writing -------------------------------------------------------------------------


async def _publish(store: BlobStore, subject: str, payload: bytes, msg_id: str) -> PubAck:
    """One message, retried until the deadline under one Nats-Msg-Id: a retry is no duplicate."""
    return await publishing.publish(
        store.nc,
        subject,
        payload,
        msg_id=msg_id,
        deadline=store.publish_deadline,
        timeout=store.publish_timeout,
    )


async def _send_chunks(
    store: BlobStore, key: str, upload_id: str, data: bytes, progress: Progress | None
) -> tuple[int, int]:
    """Publish the chunks, WINDOW at a time; returns (lowest stream sequence, chunk count).

    The lowest acknowledged sequence rather than chunk 0's: a retried chunk 0
    may be stored after chunk 1, and a reader starts at ``first_seq``.
    """
    view = memoryview(data)
    offsets = list(range(0, len(data), BLOB_CHUNK_SIZE))
    pending = iter(enumerate(offsets))
    base = f"{store.base(key)}.c.{upload_id}"
    seqs: list[int] = []
    sent = 0

    async def sender() -> None:
        nonlocal sent
        for n, offset in pending:  # shared: each chunk is taken by one sender
            chunk = bytes(view[offset : offset + BLOB_CHUNK_SIZE])
            ack = await _publish(store, f"{base}.{n}", chunk, f"{upload_id}.{n}")
            seqs.append(ack.seq)
            sent += len(chunk)
            if progress:
                progress(sent, len(data))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(WINDOW, len(offsets))):
                group.create_task(sender())
    except ExceptionGroup as failed:
        raise failed.exceptions[0]  # the first failure says what went wrong  # noqa: B904
    return min(seqs, default=0), len(offsets)


# -- reading -------------------------------------------------------------------------


async def _meta(store: BlobStore, key: str, from_leader: bool) -> BlobInfo | None:
    subject = store.meta_subject(key)
    try:
        stored = await store.js.get_msg(store.stream, subject=subject, direct=not from_leader)
    except NotFoundError as exc:
        if exc.err_code != STREAM_NOT_FOUND:
            return None
        raise BlobStreamMissing(f"stream {store.stream} does not exist") from exc
    except (nats.errors.NoRespondersError, ServiceUnavailableError) as exc:
        if isinstance(exc, ServiceUnavailableError) and exc.err_code is not None:
            raise  # a real answer (no leader yet, ...): not a missing stream
        raise BlobStreamMissing(f"stream {store.stream} does not exist") from exc
    try:
        return BlobInfo.model_validate_json(stored.data or b"")
    except ValidationError as exc:
        raise BlobDamaged(f"{key}: its meta is not valid ({exc.error_count()} errors)") from exc


async def _read_chunks(store: BlobStore, key: str, meta: BlobInfo) -> dict[int, bytes]:
    """The chunks of ``meta``'s upload by index, read in batches from ``first_seq`` on.

    Any replica may answer a direct get, one a little behind too: an answer
    short of the meta's chunks is asked again until ``settle`` seconds pass
    with nothing new (nats-server 2.15 ignores ``min_last_seq``). Then what is
    missing is missing.
    """
    base = f"{store.base(key)}.c.{meta.upload_id}."
    found: dict[int, bytes] = {}
    total = 0
    seq = max(meta.first_seq, 1)
    give_up = time.monotonic() + store.settle
    pause = RETRY_FIRST
    async with DirectGet(store.nc, store.stream) as reader:
        while len(found) < meta.chunks:
            count = min(BATCH, meta.chunks - len(found))
            request = {
                "seq": seq,
                "batch": count,
                "next_by_subj": f"{base}*",
                "max_bytes": count * BLOB_MAX_MSG_SIZE,
            }
            answer = await _ask(reader, request, store.read_timeout)
            for message in answer.messages:
                index = direct.subject(message).removeprefix(base)
                if not index.isdigit() or int(index) >= meta.chunks or int(index) in found:
                    raise BlobDamaged(f"{key}: {direct.subject(message)} is no chunk of its meta")
                found[int(index)] = message.data
                total += len(message.data)
                if total > meta.size:
                    raise BlobDamaged(f"{key}: its chunks hold more than its {meta.size} bytes")
                seq = direct.sequence(message) + 1
            if answer.messages:
                give_up, pause = time.monotonic() + store.settle, RETRY_FIRST
                continue
            if time.monotonic() >= give_up:
                break  # nothing more on these subjects: the caller says what is missing
            await asyncio.sleep(pause)  # maybe a replica behind the one that gave the meta
            pause = min(pause * 2, RETRY_MAX)
    return found


async def _ask(reader: DirectGet, request: dict[str, Any], timeout: float) -> direct.Answer:
    try:
        return await reader.ask(request, timeout)
    except direct.DirectGetUnavailable as exc:
        raise BlobStreamMissing(f"stream {reader.stream} does not exist") from exc
    except direct.DirectGetError as exc:
        raise BlobError(str(exc)) from exc
