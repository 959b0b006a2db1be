"""The one connection survives a round trip whose waiter gave up (nats-py 2.16's PONG bug)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.app import create_broker
from engine.broker import OneManageBroker
from engine.settings import Settings
from tests.conftest import NatsServer


@pytest.fixture
async def broker(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[OneManageBroker]:
    """A connection of its own: if it broke, the session's would be spared."""
    own = create_broker(Settings(nats_url=[nats_server.url], data_dir=tmp_path))
    await own.startup()
    yield own
    await own.shutdown()


async def test_a_late_pong_leaves_the_connection_reading(broker: OneManageBroker) -> None:
    # A round trip cancelled in flight (a console stopping its poll, or a timeout): its PONG
    # comes after its waiter gave up.
    pending = asyncio.create_task(broker.nc.rtt(timeout=5))
    await asyncio.sleep(0)  # the PING is on its way, its PONG cannot be here yet
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending

    # Still reading: requests get their answers, round trips their PONGs.
    assert (await broker.js.account_info()).limits is not None
    assert await broker.nc.rtt(timeout=5) < 5
    assert broker.is_connected
