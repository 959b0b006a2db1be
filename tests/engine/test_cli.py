"""The commands a new user types, on the embedded default (no URL configured)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine import embedded
from tests.support.harness import ROOT


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


def test_worker_and_check_share_the_embedded_server(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "worker", "-p", "1"],
        env=_env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        check = None
        for _ in range(60):
            check = _onemanage(tmp_path, "check", "--timeout", "10")
            if check.returncode == 0:
                break
            time.sleep(0.5)
        assert check is not None and check.returncode == 0, check.stdout + check.stderr
        assert "ping ran on" in check.stdout
        server = embedded.find_running(tmp_path)
        assert server is not None  # the worker started it; check found and reused it
        for _ in range(20):  # the statistics listener folds the ping's events soon after
            status = _onemanage(tmp_path, "status")
            assert status.returncode == 0, status.stderr
            if "diag.ping" in status.stdout:
                break
            time.sleep(0.5)
        assert "TASKS" in status.stdout and "workers alive: 1" in status.stdout, status.stdout
        assert "diag.ping" in status.stdout, status.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert "embedded nats-server: stopped" in out  # it started it, nobody else uses it
    assert embedded.find_running(tmp_path) is None


def test_server_status_without_a_server(tmp_path: Path) -> None:
    result = _onemanage(tmp_path, "server", "status")
    assert result.returncode == 1
    assert "no embedded nats-server running" in result.stdout
