"""A 3-node JetStream cluster on 127.0.0.1, from the wheel's nats-server, for fault tests.

Each node has its own store, fixed (free) client, route and monitor ports, so a
node killed with SIGKILL comes back on the same ports and store, as a crashed
server restarted by its service manager would. Waits are on the servers' own
figures (/jsz, /healthz), never on a fixed time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
from nats.js import JetStreamContext

from engine.embedded import find_binary
from engine.streams import RESULTS_BUCKET

CLUSTER_NAME = "onemanage-test"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _get_json(url: str, timeout: float = 1.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = json.loads(response.read())
    return data if isinstance(data, dict) else {}


@dataclass
class ClusterNode:
    """One server of the cluster: its ports, store, config and (while running) process."""

    name: str
    port: int
    route_port: int
    monitor_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def jsz(self) -> dict[str, Any] | None:
        """The node's JetStream figures, or None when it does not answer."""
        try:
            return _get_json(f"{self.monitor_url}/jsz")
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        """/healthz ok: the node is up and its JetStream assets are current."""
        try:
            return _get_json(f"{self.monitor_url}/healthz").get("status") == "ok"
        except urllib.error.HTTPError:
            return False
        except (OSError, ValueError):
            return False

    def log_tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Cluster:
    """Three nats-servers routed to each other on loopback; started, killed and stopped by pid."""

    def __init__(self, base_dir: Path, size: int = 3, name: str = CLUSTER_NAME) -> None:
        self.name = name
        ports = free_ports(size * 3)
        self.nodes = [
            ClusterNode(
                name=f"n{index + 1}",
                port=ports[index * 3],
                route_port=ports[index * 3 + 1],
                monitor_port=ports[index * 3 + 2],
                directory=base_dir / f"n{index + 1}",
            )
            for index in range(size)
        ]
        for node in self.nodes:
            (node.directory / "store").mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(self._config(node))

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def _config(self, node: ClusterNode) -> str:
        routes = ", ".join(f'"nats-route://127.0.0.1:{n.route_port}"' for n in self.nodes)
        return (
            f'server_name: "{node.name}"\n'
            f"listen: 127.0.0.1:{node.port}\n"
            f"http: 127.0.0.1:{node.monitor_port}\n"
            f'jetstream {{ store_dir: "{node.directory / "store"}" }}\n'
            f"cluster {{\n"
            f'  name: "{self.name}"\n'
            f"  listen: 127.0.0.1:{node.route_port}\n"
            f"  routes: [{routes}]\n"
            f"}}\n"
        )

    def node(self, name: str) -> ClusterNode:
        """The node whose server_name is ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in {[n.name for n in self.nodes]}")

    def start_node(self, node: ClusterNode) -> None:
        """Start (or restart) ``node`` on its ports and store; returns once it listens."""
        assert not node.running, f"{node.name} is running already"
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(
                [str(find_binary()), "-c", str(node.config_path), "-l", str(node.log_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while node.jsz() is None:
            if node.process.poll() is not None:
                raise RuntimeError(f"{node.name} exited at start-up:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} does not answer /jsz:\n{node.log_tail()}")
            time.sleep(0.02)  # polling the server's figures, not waiting a fixed time

    def start(self, timeout: float = 30) -> None:
        """Start every node, then wait until JetStream has a meta leader and all nodes joined."""
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout)

    def meta_leader(self) -> str | None:
        """The meta leader every running node agrees on, once each sees the whole cluster."""
        leaders = set()
        running = {node.name for node in self.nodes if node.running}
        for node in self.nodes:
            if not node.running:
                continue
            meta = (node.jsz() or {}).get("meta_cluster") or {}
            if not meta.get("leader") or meta.get("cluster_size") != len(self.nodes):
                return None
            leaders.add(meta["leader"])
            if meta["leader"] == node.name:
                # The leader's view of its followers: every running one caught up.
                current = {r["name"] for r in meta.get("replicas") or [] if r.get("current")}
                if not running - {node.name} <= current:
                    return None
        return leaders.pop() if len(leaders) == 1 else None

    def wait_ready(self, timeout: float = 30) -> str:
        """Block until a meta leader is agreed and every running node is healthy; its name."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.meta_leader()
            if leader and all(node.healthy() for node in self.nodes if node.running):
                return leader
            if time.monotonic() > deadline:
                tails = "\n".join(f"{n.name}: {n.log_tail(4)}" for n in self.nodes)
                raise RuntimeError(f"cluster not ready within {timeout:g}s:\n{tails}")
            time.sleep(0.05)

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL ``node`` by its pid, as a crash would, and reap it."""
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(10)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed ``node`` again on the same ports and store."""
        self.kill(node)
        node.process = None
        self.start_node(node)

    def stop(self) -> None:
        """SIGTERM each node by pid, SIGKILL any that lingers."""
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(10)


async def stream_current(js: JetStreamContext, stream: str, replicas: int = 3) -> bool:
    """Whether ``stream`` has a leader and ``replicas - 1`` followers, all caught up.

    False, not an error, while the cluster cannot answer (an election).
    """
    try:
        info = await js.stream_info(stream)
    except (nats.errors.Error, TimeoutError):
        return False
    peers = info.cluster.replicas if info.cluster is not None else None
    return bool(
        info.cluster is not None
        and info.cluster.leader
        and peers is not None
        and len(peers) == replicas - 1
        and all(peer.current for peer in peers)
    )


async def stream_leader(js: JetStreamContext, stream: str) -> str | None:
    """The server name of the node leading ``stream`` (None during an election)."""
    info = await js.stream_info(stream)
    return info.cluster.leader if info.cluster is not None else None


async def results_holder(js: JetStreamContext) -> str | None:
    """The node leading the results bucket's stream: where result puts are stored first."""
    return await stream_leader(js, f"KV_{RESULTS_BUCKET}")


class RetriedPublishes(logging.Handler):
    """Msg ids of publishes engine.publishing logged as 'not stored yet: retrying'.

    A fault test (on a cluster or one server) counts the kicks that rode out
    a fault this way (a figure it reports), without reaching into the engine.
    """

    def __init__(self, subject_prefix: str = "tasks.") -> None:
        super().__init__(logging.WARNING)
        self.subject_prefix = subject_prefix
        self.msg_ids: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 4
            and str(args[0]).startswith(self.subject_prefix)
        ):
            self.msg_ids.add(str(args[3]))

    def __enter__(self) -> RetriedPublishes:
        logging.getLogger("engine.publishing").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("engine.publishing").removeHandler(self)
