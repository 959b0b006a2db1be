"""The commands a new user types, on the embedded default (no URL configured)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine import credentials, embedded
from engine.roles import ROLES
from tests.support.harness import ROOT
from tests.support.waiting import eventually


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ONEMANAGE_NATS_URL"}
    env["ONEMANAGE_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _onemanage(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        env=_env(data_dir), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


async def _run(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_onemanage, data_dir, *args, timeout=timeout)


async def _run_ok(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    done = await _run(data_dir, *args)
    return done if done.returncode == 0 else None


@pytest.mark.slow
async def test_a_new_users_session_on_the_embedded_default(tmp_path: Path) -> None:
    """worker, check, status, demo, submit --wait, artefacts: one embedded server for all."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", "worker", "-p", "1",
        env=_env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # The worker starts the embedded server: a command run before it would start
        # its own (and stop it on exit), which is not the session this test follows.
        started = await eventually(lambda: embedded.find_running(tmp_path), 30, "no server")
        check = await eventually(lambda: _run_ok(tmp_path, "check"), 60, "check never passed")
        assert "ok   1 live worker(s), 0 degraded" in check.stdout, check.stdout
        server = embedded.find_running(tmp_path)
        assert server is not None and server.pid == started.pid  # check reused it

        demo = tmp_path / "demo.psd"
        assert (await _run(tmp_path, "demo", "--out", str(demo))).returncode == 0
        done = await _run(tmp_path, "submit", str(demo), "--wait", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

        async def status_with_the_workflow() -> subprocess.CompletedProcess[str] | None:
            status = await _run(tmp_path, "status")
            assert status.returncode == 0, status.stderr
            return status if "psd.process" in status.stdout else None

        # The statistics listener folds the workflow's events soon after.
        status = await eventually(status_with_the_workflow, 30, "no psd.process statistics")
        assert "TASKS" in status.stdout and "workers alive: 1" in status.stdout, status.stdout
        outputs = [check, status, done]
        assert "COMPLETED" in done.stdout and "document   800x600 RGB" in done.stdout
        workflow_id = done.stdout.split()[0]
        out = tmp_path / "out"
        fetched = await _run(tmp_path, "artefacts", workflow_id, "--out", str(out))
        assert fetched.returncode == 0, fetched.stderr
        assert Image.open(out / "preview.png").size == (800, 600)
        assert list((out / "layers").glob("*.png"))

        broken = tmp_path / "broken.psd"
        broken.write_bytes(demo.read_bytes()[:300])
        failed = await _run(tmp_path, "submit", str(broken), "--wait", timeout=120)
        assert failed.returncode == 1
        assert "FAILED at step validate: truncated" in failed.stdout, failed.stdout

        refused = await _run(tmp_path, "submit", str(tmp_path / "missing.psd"))
        assert refused.returncode == 1
        assert "no such file" in refused.stderr
        outputs += [fetched, failed, refused]
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), 60)
        leftover = embedded.find_running(tmp_path)
        if leftover is not None:  # a failed run must not leave a server behind
            leftover.stop()
    log = output.decode(errors="replace")
    assert worker.returncode == 0, log
    assert leftover is None, "the worker left its embedded server running"
    assert "embedded nats-server: stopped" in log  # it started it, nobody else uses it
    # Authenticated without a word of configuration, and no password shown anywhere.
    passwords = [
        credentials.load(embedded.credentials_dir(tmp_path), role).password.get_secret_value()
        for role in ROLES
    ]
    shown = [log, embedded.log_file(tmp_path).read_text(errors="replace")]
    shown += [o.stdout + o.stderr for o in outputs]
    assert not [p for p in passwords for text in shown if p in text]


def test_both_commands_say_their_version() -> None:
    for command in ("engine.cli", "console.app"):
        done = subprocess.run(
            [sys.executable, "-m", command, "--version"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0
        assert done.stdout.split()[1] == importlib.metadata.version("onemanage")


def test_server_status_without_a_server(tmp_path: Path) -> None:
    result = _onemanage(tmp_path, "server", "status")
    assert result.returncode == 1
    assert "no embedded nats-server running" in result.stdout


@pytest.mark.slow  # the connect timeout, retried
def test_a_wrong_url_fails_with_a_clear_error(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["ONEMANAGE_NATS_URL"] = "nats://127.0.0.1:9"  # nothing listens there
    env["ONEMANAGE_CONNECT_TIMEOUT"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "check"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2  # Nagios: critical
    assert (
        "CRIT cannot connect: NotConnectedError: cannot reach nats://127.0.0.1:9" in result.stdout
    )


COMMANDS = [
    ["onemanage"],
    *(["onemanage", name] for name in
      ("server", "worker", "status", "submit", "demo", "artefacts", "events", "trace", "check",
       "replay", "cancel", "retry", "resubmit")),
    ["onemanage-console"],
]  # fmt: skip


def _options(help_text: str) -> dict[str, str]:
    """Each option or positional of a --help screen, with its help text."""
    entries: dict[str, str] = {}
    name = None
    section = ""
    for line in help_text.splitlines():
        if line and not line.startswith(" "):
            section, name = line, None  # "options:", "positional arguments:", a group
            continue
        if "arguments" not in section and "options" not in section and ":" not in section:
            continue
        if line.startswith("  ") and not line.startswith("   ") and line.strip():
            name, _, rest = line.strip().partition("  ")
            entries[name] = rest.strip()
        elif name is not None:
            entries[name] += " " + line.strip()
    return entries


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_option_says_what_it_does_and_its_default(command: list[str]) -> None:
    program = "engine.cli" if command[0] == "onemanage" else "console.app"
    done = subprocess.run(
        [sys.executable, "-m", program, *command[1:], "--help"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    options = _options(done.stdout)
    assert options, done.stdout
    silent = {
        name: text
        for name, text in options.items()
        if name.startswith("-")  # a required positional has no default
        and not name.startswith(("-h,", "--version"))
        and "default" not in text
    }
    assert silent == {}, f"options without a default in their help: {silent}"
    assert all(text for name, text in options.items() if not name.startswith("{")), options
