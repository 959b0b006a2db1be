"""Secrets never shown: a password in the server URL appears in no output and no log line.

Landed main: ``nats://admin:PW@host`` was printed by ``onemanage status`` and
``onemanage check``, shown in the console's header and logged on reconnect.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import embedded
from engine.redaction import redact, redact_netloc
from tests.support.harness import ROOT, WorkerProcess
from tests.support.waiting import eventually


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("nats://admin:pw@127.0.0.1:4222", "nats://admin:***@127.0.0.1:4222"),
        ("tls://tok3n@h:1, nats://h:2", "tls://***@h:1, nats://h:2"),
        ("cannot reach nats://a:b@h:1 (wrong URL)", "cannot reach nats://a:***@h:1 (wrong URL)"),
        ("no URL here, mail me at a@b", "no URL here, mail me at a@b"),
    ],
)
def test_credentials_in_urls_are_masked(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_a_netloc_is_masked_too() -> None:
    assert redact_netloc("admin:pw@127.0.0.1:4222") == "admin:***@127.0.0.1:4222"
    assert redact_netloc("127.0.0.1:4222") == "127.0.0.1:4222"


PASSWORD = secrets.token_urlsafe(18)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[embedded.EmbeddedServer, Path]]:
    """A private server that wants a user and password; its config, to restart it."""
    config = tmp_path / "server.conf"
    config.write_text(f'authorization {{ user: admin, password: "{PASSWORD}" }}\n')
    config.chmod(0o600)
    server = embedded.start(tmp_path / "server", detach=False, config=config)
    try:
        yield server, config
    finally:
        server.stop()  # the test stops the one it restarts itself


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.stdout + done.stderr


async def test_no_output_or_log_shows_the_password(
    guarded: tuple[embedded.EmbeddedServer, Path], tmp_path: Path
) -> None:
    server, config = guarded
    url = server.url.replace("nats://", f"nats://admin:{PASSWORD}@")
    env = {"ONEMANAGE_NATS_URL": url, "ONEMANAGE_DATA_DIR": str(tmp_path / "data")}
    worker = WorkerProcess(tmp_path, 1, env, modules=("engine.builtin",))
    try:
        await eventually(lambda: "pulling from" in worker.log(), 60, worker.log)
        outputs = {
            "status": await asyncio.to_thread(_run, env, "status"),
            "check": await asyncio.to_thread(_run, env, "check"),
        }
        assert "ok   connected to admin:***@" in outputs["check"], outputs["check"]
        wrong = {**env, "ONEMANAGE_NATS_URL": url.replace(PASSWORD, "not" + PASSWORD)}
        wrong["ONEMANAGE_CONNECT_TIMEOUT"] = "1"
        outputs["refused"] = await asyncio.to_thread(_run, wrong, "check")
        assert "cannot" in outputs["refused"], outputs["refused"]
        # A reconnect: the worker logs where it is connected again.
        port = server.port
        server.kill()
        await eventually(lambda: "disconnected" in worker.log(), 30, worker.log)
        restarted = embedded.start(tmp_path / "server", port=port, detach=False, config=config)
        try:
            await eventually(lambda: "reconnected to" in worker.log(), 60, worker.log)
        finally:
            worker.stop()
            restarted.stop()
        outputs["worker log"] = worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
    for name, text in outputs.items():
        assert PASSWORD not in text, f"the password is in the {name} output"
