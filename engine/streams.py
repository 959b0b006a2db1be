"""Stream and bucket specs, and ensure_stream(): create, verify, update, refuse drift.

TASKS is a work queue: a command is removed once a worker acknowledges it.
EVENTS keeps the system's history for ``events_max_age`` so listeners and the
console can replay it. INPUTS and ARTEFACTS hold chunked blobs (engine.blobs):
INPUTS' subjects are write-once, so the server itself refuses to replace an
input. All are derived from the settings so every process started with the
same environment asks for the same configuration.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)
from nats.js.errors import NotFoundError

from engine.errors import StreamConfigError
from engine.settings import Settings

logger = logging.getLogger(__name__)

TASKS = "TASKS"
EVENTS = "EVENTS"
# The lanes of TASKS (engine.routing, engine.lanes): TASKS stores only their
# subjects, so a publish anywhere else is refused by the server instead of
# being stored where no durable reads it.
DEFAULT_LANE = "default"
WORKFLOW_LANE = "workflow"
TASK_LANES = (DEFAULT_LANE, WORKFLOW_LANE)
EVENTS_SUBJECTS = "events.>"
RESULTS_BUCKET = "onemanage_results"
STATS_BUCKET = "onemanage_task_stats"
MARKS_BUCKET = "onemanage_listener_marks"
ALERTS_BUCKET = "onemanage_alerts"  # the alert evaluator's book (engine.alerting)
# Chunked blobs (engine.blobs): PSD inputs by content address, workflow artefacts.
INPUTS = "INPUTS"
ARTEFACTS = "ARTEFACTS"
INPUTS_PREFIX = "inputs"
ARTEFACTS_PREFIX = "artefacts"
BLOB_CHUNK_SIZE = 128 * 1024  # like nats-py's object store
BLOB_MAX_MSG_SIZE = BLOB_CHUNK_SIZE + 8 * 1024  # a chunk and its headers

# Fields a server refuses to change on an existing stream.
IMMUTABLE_FIELDS = ("retention", "storage")
# Fields ensure_stream brings back to the spec when they drifted.
MUTABLE_FIELDS = (
    "subjects",
    "max_age",
    "max_bytes",
    "max_msgs",
    "num_replicas",
    "duplicate_window",
    "discard",
    "max_msg_size",
    "allow_direct",
    # INPUTS' write-once subjects and ARTEFACTS' latest-wins: the server enforces them.
    "max_msgs_per_subject",
    "discard_new_per_subject",
)


def lane_subjects(lane: str) -> str:
    return f"tasks.{lane}.>"


def _window(settings: Settings, max_age: float) -> float:
    # The server refuses a duplicate window longer than the stream's max age.
    return min(settings.duplicate_window, max_age) if max_age > 0 else settings.duplicate_window


def _stream(
    settings: Settings,
    name: str,
    description: str,
    subjects: list[str],
    retention: RetentionPolicy,
    max_age: float,
    max_bytes: int,
    max_msg_size: int = -1,
) -> StreamConfig:
    return StreamConfig(
        name=name,
        description=description,
        subjects=subjects,
        retention=retention,
        storage=StorageType.FILE,
        max_age=max_age if max_age > 0 else None,
        max_bytes=max_bytes,
        max_msgs=-1,
        num_replicas=settings.replicas,
        duplicate_window=_window(settings, max_age),
        discard=DiscardPolicy.OLD,
        max_msg_size=max_msg_size,
    )


def tasks_stream(settings: Settings) -> StreamConfig:
    return _stream(
        settings,
        TASKS,
        "OneManage commands: one shared durable per lane, load balanced",
        [lane_subjects(lane) for lane in TASK_LANES],
        RetentionPolicy.WORK_QUEUE,
        settings.tasks_max_age,
        settings.tasks_max_bytes,
    )


def events_stream(settings: Settings) -> StreamConfig:
    """Direct get allowed: readers (the console, ``status``) read it without a consumer."""
    spec = _stream(
        settings,
        EVENTS,
        "OneManage events: the system's history, one durable per listener",
        [EVENTS_SUBJECTS],
        RetentionPolicy.LIMITS,
        settings.events_max_age,
        settings.events_max_bytes,
        events_message_cap(settings),
    )
    return replace(spec, allow_direct=True)


def inputs_stream(settings: Settings) -> StreamConfig:
    """Write-once subjects: a second publish to a stored subject is refused by the server.

    The refusal is error 10077 "maximum messages per subject exceeded" (a 503),
    so no user, not even one allowed to upload, can replace an input's chunks
    or its description. Deletes and purges stay allowed: a worker removes a
    forged input it finds at read.
    """
    spec = _blob_stream(
        settings,
        INPUTS,
        INPUTS_PREFIX,
        "OneManage PSD inputs: chunked, write-once, by content",
        settings.inputs_ttl,
    )
    return replace(spec, discard=DiscardPolicy.NEW, discard_new_per_subject=True)


def artefacts_stream(settings: Settings) -> StreamConfig:
    """Latest wins per subject: a rerun of a step writes its artefacts again."""
    return _blob_stream(
        settings,
        ARTEFACTS,
        ARTEFACTS_PREFIX,
        "OneManage workflow artefacts: chunked, latest wins",
        settings.artefacts_ttl,
    )


def _blob_stream(
    settings: Settings, name: str, prefix: str, description: str, ttl: float
) -> StreamConfig:
    """Chunks and descriptions of blobs, one message per subject, read by direct get."""
    spec = _stream(
        settings,
        name,
        description,
        [f"{prefix}.>"],
        RetentionPolicy.LIMITS,
        ttl,
        -1,
        BLOB_MAX_MSG_SIZE,
    )
    return replace(spec, max_msgs_per_subject=1, allow_direct=True)


def events_message_cap(settings: Settings) -> int:
    """The largest event EVENTS stores: well below max_bytes, so one event never evicts the history.

    With discard-old, a message bigger than max_bytes is stored and empties the
    stream (PLATFORM-NOTES); the server refuses one bigger than max_msg_size.
    """
    cap = settings.events_max_msg_size
    if settings.events_max_bytes > 0:
        cap = min(cap, max(1, settings.events_max_bytes // 16))
    return cap


def _normal(field: str, value: Any) -> Any:
    """Compare like the server: an unset age is 0, an unset size is -1."""
    if field == "max_age":
        return float(value or 0)
    if field in ("max_bytes", "max_msgs", "max_msg_size", "max_msgs_per_subject"):
        return -1 if value is None else value
    if field == "num_replicas":
        return value or 1
    if field == "subjects":
        return sorted(value or [])
    if field == "duplicate_window":
        return float(value or 0)
    if field in ("allow_direct", "discard_new_per_subject"):
        return bool(value)
    return value


def drift(have: StreamConfig, want: StreamConfig, fields: tuple[str, ...]) -> dict[str, Any]:
    """Each of ``fields`` where ``have`` differs from ``want`` (as the server compares): both."""
    return {
        field: (getattr(have, field), getattr(want, field))
        for field in fields
        if _normal(field, getattr(have, field)) != _normal(field, getattr(want, field))
    }


async def ensure_stream(js: JetStreamContext, want: StreamConfig) -> StreamInfo:
    """Create ``want`` if missing; update drifted limits; refuse immutable drift.

    Raises StreamConfigError naming the field when retention or storage differ,
    because changing those would silently change delivery semantics.
    """
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        logger.info("creating stream %s", want.name)
        return await js.add_stream(want)
    have = info.config
    for field, (was, wanted) in drift(have, want, IMMUTABLE_FIELDS).items():
        raise StreamConfigError(want.name, field, was, wanted)
    drifted = drift(have, want, MUTABLE_FIELDS)
    if not drifted:
        return info
    logger.warning("stream %s drifted, updating: %s", want.name, drifted)
    updated = replace(have, **{field: getattr(want, field) for field in drifted})
    return await js.update_stream(updated)


def wanted_streams(settings: Settings) -> list[StreamConfig]:
    """The streams a worker creates, as ``settings`` configure them."""
    return [
        tasks_stream(settings),
        events_stream(settings),
        inputs_stream(settings),
        artefacts_stream(settings),
    ]


def wanted_buckets(settings: Settings) -> list[tuple[str, float, bool]]:
    """The KV buckets a worker creates: (bucket, entries' ttl in s (0: forever), direct get)."""
    return [
        (RESULTS_BUCKET, settings.results_ttl, False),
        (STATS_BUCKET, 0, True),  # read by viewers
        (MARKS_BUCKET, settings.marks_ttl, False),
        (ALERTS_BUCKET, 0, True),  # read by viewers; its writer reads the leader
    ]


def bucket_config(have: StreamConfig, ttl: float, direct: bool, settings: Settings) -> StreamConfig:
    """A bucket's stream as it should be: its own config with the engine's limits.

    Without ``replicas`` nats-py makes an R1 bucket even when every stream is
    R3: the node holding it would be a single point of loss (PLATFORM-NOTES).
    ``direct`` lets readers read it by direct get, without a consumer (nats-py
    leaves it off); any replica answers those, so a bucket updated by
    compare-and-set keeps it off unless its writers read from the leader.
    """
    age = ttl if ttl > 0 else None
    return replace(have, max_age=age, num_replicas=settings.replicas, allow_direct=direct)


async def ensure_bucket(
    js: JetStreamContext, bucket: str, settings: Settings, ttl: float, direct: bool = False
) -> None:
    """Create the KV bucket ``bucket`` (entries expire after ``ttl`` s), or bring it to the spec."""
    try:
        info = await js.stream_info(f"KV_{bucket}")
    except NotFoundError:
        await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=1,
                ttl=ttl if ttl > 0 else None,
                storage=StorageType.FILE,
                replicas=settings.replicas,
                direct=direct,
            )
        )
        return
    await ensure_stream(js, bucket_config(info.config, ttl, direct, settings))


async def ensure_streams(js: JetStreamContext, settings: Settings) -> dict[str, StreamInfo]:
    """Everything a worker needs on the server: the streams and the KV buckets."""
    infos = {}
    for want in wanted_streams(settings):
        assert want.name is not None
        infos[want.name] = await ensure_stream(js, want)
    for bucket, ttl, direct in wanted_buckets(settings):
        await ensure_bucket(js, bucket, settings, ttl, direct)
    return infos
