"""ensure_stream against the real server: create, update drift, refuse immutable drift."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from nats.js.api import RetentionPolicy, StorageType

from engine.broker import OneManageBroker
from engine.errors import StreamConfigError
from engine.settings import Settings
from engine.streams import EVENTS, TASKS, ensure_stream, ensure_streams, events_stream, tasks_stream


def _copy(config, prefix: str):  # type: ignore[no-untyped-def]
    """A spec like TASKS/EVENTS under its own name and subjects, so tests don't collide."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    return replace(config, name=name, subjects=[f"{name.lower()}.>"])


async def test_both_streams_exist_with_the_expected_config(client: OneManageBroker) -> None:
    infos = await ensure_streams(client.js, client.settings)
    tasks, events = infos[TASKS].config, infos[EVENTS].config
    assert tasks.retention == RetentionPolicy.WORK_QUEUE
    assert tasks.subjects == ["tasks.default.>", "tasks.workflow.>"]  # only what a lane reads
    assert events.retention == RetentionPolicy.LIMITS
    assert events.subjects == ["events.>"]
    assert 0 < events.max_msg_size <= events.max_bytes // 16  # one event never evicts the rest
    assert events.max_age == pytest.approx(client.settings.events_max_age)
    assert events.duplicate_window == pytest.approx(client.settings.duplicate_window)
    assert tasks.storage == events.storage == StorageType.FILE


async def test_a_missing_stream_is_created(client: OneManageBroker) -> None:
    want = _copy(events_stream(client.settings), "NEW")
    info = await ensure_stream(client.js, want)
    assert info.config.name == want.name
    assert (await client.js.stream_info(want.name)).config.max_bytes == want.max_bytes
    await client.js.delete_stream(want.name)


async def test_a_drifted_limit_is_updated(client: OneManageBroker) -> None:
    want = _copy(events_stream(client.settings), "DRIFT")
    await client.js.add_stream(replace(want, max_age=600.0, max_bytes=1024 * 1024))
    info = await ensure_stream(client.js, want)
    assert info.config.max_age == pytest.approx(want.max_age)
    assert info.config.max_bytes == want.max_bytes
    stored = await client.js.stream_info(want.name)
    assert stored.config.max_age == pytest.approx(want.max_age)
    await client.js.delete_stream(want.name)


async def test_a_drifted_retention_is_refused_naming_the_field(client: OneManageBroker) -> None:
    want = _copy(tasks_stream(client.settings), "RETAIN")
    await client.js.add_stream(replace(want, retention=RetentionPolicy.LIMITS))
    with pytest.raises(StreamConfigError) as raised:
        await ensure_stream(client.js, want)
    assert raised.value.field == "retention"
    assert "retention" in str(raised.value)
    stored = await client.js.stream_info(want.name)
    assert stored.config.retention == RetentionPolicy.LIMITS  # left as it was
    await client.js.delete_stream(want.name)


async def test_ensuring_twice_is_harmless(client: OneManageBroker) -> None:
    want = _copy(tasks_stream(client.settings), "TWICE")
    first = await ensure_stream(client.js, want)
    await client.js.publish(want.subjects[0].replace(">", "x"), b"kept")
    second = await ensure_stream(client.js, want)
    assert second.config == first.config
    assert second.state.messages == 1
    await client.js.delete_stream(want.name)


def test_limits_come_from_the_settings() -> None:
    settings = Settings(events_max_age=3600, events_max_bytes=5000, tasks_max_age=60)
    assert events_stream(settings).max_age == 3600
    assert events_stream(settings).max_bytes == 5000
    assert tasks_stream(settings).max_age == 60
    assert tasks_stream(settings).duplicate_window == 60  # never above max age


def test_a_task_in_an_unknown_lane_is_refused_at_registration() -> None:
    from engine.app import broker

    with pytest.raises(ValueError, match="lane 'nightly'"):

        @broker.task(task_name="test.nightly", lane="nightly")
        async def nightly() -> None:  # pragma: no cover (never registered)
            ...
