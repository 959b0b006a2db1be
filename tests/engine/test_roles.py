"""The three roles against real servers: every allowed operation works, every forbidden one
is refused by the server, and a refusal reads "permission denied: <what>", never a hang.

Two servers, as a user meets them: the authenticated embedded default (its generated
credentials), and a nats-server started from `onemanage server config`'s files.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from engine import credentials, embedded, monitor, storage
from engine.actions import ActionRefused, cancel_workflow
from engine.app import create_broker
from engine.blobs import BlobStore
from engine.broker import OneManageBroker
from engine.errors import PermissionDeniedError, PublishError
from engine.events.publisher import publish_event
from engine.events.schemas import PsdWorkflowFailed, TaskQueued, TaskSucceeded, parse_event
from engine.events.stats import read_task_stats
from engine.lanes import Lane
from engine.publishing import subject_taken
from engine.roles import CONTROL_TASKS, PERMISSIONS, ROLES, SUBMISSION_TASK, Role, refusal
from engine.serverconf import Plan, server_configs
from engine.services.samples import make_demo_psd
from engine.settings import Settings
from engine.streams import EVENTS, INPUTS, INPUTS_PREFIX, TASKS
from engine.submit import submit_psd
from engine.tasks.names import announcement
from tests.support.cluster import Cluster, ClusterNode
from tests.support.harness import ROOT
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # servers of their own

DEMO = make_demo_psd()  # submitted, never run: no worker runs here


@dataclass
class Secured:
    """An authenticated server, its credentials, and a connection per role."""

    kind: str
    server: embedded.EmbeddedServer
    credentials_dir: Path
    data_dir: Path
    brokers: dict[str, OneManageBroker] = field(default_factory=dict)
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # role, operation, result

    def settings(self, role: Role, **extra: object) -> Settings:
        return Settings(
            nats_url=[self.server.url],
            credentials_dir=self.credentials_dir,
            data_dir=self.data_dir,
            role=role,
            publish_timeout=1,
            publish_deadline=3,
            **extra,  # type: ignore[arg-type]
        )

    async def broker(self, role: Role) -> OneManageBroker:
        if role not in self.brokers:
            broker = create_broker(self.settings(role))
            await broker.startup()
            self.brokers[role] = broker
        return self.brokers[role]


def _generated(base: Path) -> tuple[embedded.EmbeddedServer, Path]:
    """A server from `onemanage server config`: the file as written, ports chosen here."""
    out = base / "conf"
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "server", "config", "--out", str(out)],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    # The flags embedded.start adds (127.0.0.1, free ports) override the file's listen and
    # http; the store, users and permissions are the file's.
    server = embedded.start(
        base / "server", detach=False, config=out / "server.conf", config_store=True
    )
    return server, out / "credentials"


@pytest.fixture(scope="module", params=["embedded default", "generated config"])
async def secured(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Secured]:
    base = tmp_path_factory.mktemp("secured")
    if request.param == "embedded default":
        server = embedded.start(base / "server", detach=False)
        directory = server.credentials_dir
    else:
        server, directory = _generated(base)
    secured = Secured(request.param, server, directory, base / "data")
    try:
        worker = await secured.broker("worker")
        await worker.ensure_streams()
        await worker.ensure_consumer(Lane(TASKS, "workers", "tasks.default.>", 4, 1))
        yield secured
    finally:
        for broker in secured.brokers.values():
            await broker.shutdown()
        server.stop()
        _report(secured)


def _report(secured: Secured) -> None:
    """The outcomes, for the closing note (pytest -s shows them)."""
    print(f"\n{secured.kind}:")
    for role, operation, outcome in secured.outcomes:
        print(f"  {role:8} {operation:44} {outcome}")


async def _refused(secured: Secured, role: Role, what: str, call: Awaitable[object]) -> str:
    """Run a forbidden ``call``: the server must refuse it, quickly and by name."""
    started = time.monotonic()
    with pytest.raises((PermissionDeniedError, PublishError)) as refused:
        await asyncio.wait_for(call, 20)
    elapsed = time.monotonic() - started
    error = refused.value
    if isinstance(error, PublishError):  # the operator's rewrite of an input
        assert subject_taken(error), f"{role} {what}: {error}"
        outcome = f"refused by the stream (subject taken), {elapsed:.1f}s"
    else:
        assert str(error).startswith("permission denied: "), error
        outcome = f"{error} ({elapsed:.1f}s)"
    secured.outcomes.append((role, what, outcome))
    return outcome


Operations = dict[str, Callable[[], Awaitable[object]]]


def _forbidden(broker: OneManageBroker, role: Role) -> Operations:
    js, nc = broker.js, broker.nc
    pull = json.dumps({"batch": 1, "expires": 500_000_000}).encode()
    key = storage.input_key(DEMO)
    meta = BlobStore(nc, js, INPUTS, INPUTS_PREFIX).meta_subject(key)
    common: Operations = {
        "purge EVENTS": lambda: js.purge_stream(EVENTS),
        "delete stream TASKS": lambda: js.delete_stream(TASKS),
        "delete consumer TASKS/workers": lambda: js.delete_consumer(TASKS, "workers"),
        "create a durable on EVENTS": lambda: js.add_consumer(
            EVENTS, ConsumerConfig(durable_name=f"sneaky-{role}")
        ),
        "pull from the workers' durable": lambda: nc.request(
            f"$JS.API.CONSUMER.MSG.NEXT.{TASKS}.workers", pull, timeout=1
        ),
        "a consumer that never expires": lambda: js.add_consumer(
            EVENTS, ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=10**7)
        ),
        "publish task diag.ping": lambda: broker.publish(
            "tasks.default.diag.ping", b"{}", uuid.uuid4().hex
        ),
        "publish event task.succeeded": lambda: broker.publish(
            "events.task.succeeded", b"{}", uuid.uuid4().hex
        ),
        "overwrite a stored input": lambda: broker.publish(meta, b"{}", uuid.uuid4().hex),
    }
    if role == "worker":  # it creates durables and publishes tasks and events: that is its job
        for allowed in (
            "create a durable on EVENTS",
            "pull from the workers' durable",
            "a consumer that never expires",
            "publish task diag.ping",
            "publish event task.succeeded",
        ):
            del common[allowed]
        # Rewriting an input is refused to it too, by the stream rather than its rights.
    if role == "operator":
        common["publish task psd.other on the workflow lane"] = lambda: broker.publish(
            "tasks.workflow.psd.other", b"{}", uuid.uuid4().hex
        )
    return common


@pytest.mark.parametrize("role", ROLES)
async def test_every_forbidden_operation_is_refused_by_the_server(
    secured: Secured, role: Role
) -> None:
    worker = await secured.broker("worker")
    await storage.put_input(worker, DEMO)  # an input to try to overwrite
    broker = await secured.broker(role)
    for what, call in _forbidden(broker, role).items():
        await _refused(secured, role, what, call())
    # Nothing of it happened: the worker's durable and the streams are as they were.
    info = await worker.js.consumer_info(TASKS, "workers")
    assert info.name == "workers"
    assert storage.input_key(await storage.get_input(worker, storage.input_key(DEMO)))


async def test_another_roles_replies_cannot_be_read(secured: Secured) -> None:
    viewer = await secured.broker("viewer")
    for subject in ("_INBOX_worker.>", "_INBOX.>", "tasks.>"):
        await viewer.nc.subscribe(subject)
    await viewer.nc.flush()

    async def all_refused() -> bool:
        await viewer.nc.flush()  # a round trip: the server's refusals come before its PONG
        return all(viewer.nc.refused(s) for s in ("_INBOX_worker.>", "_INBOX.>", "tasks.>"))

    await eventually(all_refused, 10, "the server did not refuse the subscriptions")
    secured.outcomes.append(("viewer", "subscribe to another role's inbox", "refused"))


async def test_the_viewer_reads_everything_it_needs_and_leaves_nothing(secured: Secured) -> None:
    worker = await secured.broker("worker")
    correlation = uuid.uuid4().hex
    await publish_event(worker, TaskQueued(task_id=correlation, task_name="t.viewer"))
    key = await storage.put_artefact(worker, correlation, "preview.png", b"png" * 1000)
    before = (await worker.js.stream_info(EVENTS)).state.consumer_count

    viewer = await secured.broker("viewer")
    figures = await monitor.stream_figures(viewer, EVENTS)
    assert figures is not None and figures.messages >= 1
    assert any(c.name == "workers" for c in await monitor.consumer_figures(viewer))
    seen = await monitor.recent_events(viewer, timedelta(minutes=5))
    assert any(getattr(e, "task_id", None) == correlation for e in seen)
    await read_task_stats(viewer)
    assert await monitor.artefact(viewer, key) == b"png" * 1000
    assert (await worker.js.stream_info(EVENTS)).state.consumer_count == before


async def test_the_operator_submits_and_announces_only_that(secured: Secured) -> None:
    operator = await secured.broker("operator")
    submission = await submit_psd(operator, DEMO, "demo.psd")
    worker = await secured.broker("worker")
    stored = await worker.js.get_msg(TASKS, subject=SUBMISSION_TASK)
    assert submission.workflow_id.encode() in (stored.data or b"")

    # Its right to say "queued" does not let it say "succeeded": readers bind an event
    # to its subject.
    forged = TaskSucceeded(task_id="x", task_name="psd.process", worker_id="w:1", duration_ms=1)
    await operator.publish("events.task.queued", forged.model_dump_json().encode(), "forged-1")
    since = datetime.now(UTC) - timedelta(minutes=1)
    async for delivered in monitor.read_history(worker, since, "events.task.queued"):
        if b"forged" in delivered.data or b'"task.succeeded"' in delivered.data:
            unread = parse_event(delivered.data, delivered.subject)
            assert getattr(unread, "reason", None) == "wrong_subject"
            break
    else:
        raise AssertionError("the forged event was not stored where the test put it")
    outcome = "stored, read as wrong_subject"
    secured.outcomes.append(("operator", "a task.succeeded on its queued subject", outcome))


async def test_no_credentials_and_wrong_credentials_are_refused(secured: Secured) -> None:
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    with pytest.raises(Exception):  # noqa: B017 (nats-py raises its own kinds here)
        await nats.connect(
            secured.server.url, allow_reconnect=False, connect_timeout=5, error_cb=on_error
        )
    assert any("authorization violation" in str(e).lower() for e in errors), errors
    secured.outcomes.append(("(none)", "connect without credentials", "authorization violation"))

    wrong = create_broker(
        Settings(
            nats_url=[secured.server.url],
            nats_user="viewer",
            nats_password="not-the-password",
            data_dir=secured.data_dir,
        )
    )
    with pytest.raises(Exception, match="refused the credentials"):
        await wrong.startup()
    await wrong.shutdown()


def test_the_embedded_defaults_files_are_private(tmp_path: Path) -> None:
    server = embedded.start(tmp_path / "data", detach=False)
    try:
        paths = {
            "data dir": tmp_path / "data",
            "credentials dir": server.credentials_dir,
            "nats dir": embedded.nats_dir(tmp_path / "data"),
            "run dir (ports file)": embedded.run_dir(tmp_path / "data"),
            "auth.conf": embedded.nats_dir(tmp_path / "data") / "auth.conf",
            "server log": embedded.log_file(tmp_path / "data"),
            "ports file": next(embedded.run_dir(tmp_path / "data").glob("*.ports")),
        }
        for role in ROLES:
            paths[f"{role}.json"] = credentials.credentials_file(server.credentials_dir, role)
        modes = {name: path.stat().st_mode & 0o777 for name, path in paths.items()}
        assert all(mode & 0o077 == 0 for mode in modes.values()), modes
    finally:
        server.stop()


def test_the_docs_tables_are_the_roles() -> None:
    """docs/security.md prints each role's permissions: they must be the code's."""
    text = (ROOT / "docs" / "security.md").read_text()
    for role in ROLES:
        table = re.search(
            rf"<!-- role table: {role} -->\n(.*?)<!-- end of role table -->", text, re.S
        )
        assert table, f"no table for {role} in docs/security.md"
        rows = re.findall(r"^\| (publish|subscribe) \| `([^`]+)` \| (.*?) \|$", table[1], re.M)
        permissions = PERMISSIONS[role]
        want = [("publish", s, w) for s, w in permissions.publish]
        want += [("subscribe", s, w) for s, w in permissions.subscribe]
        assert rows == want, f"docs/security.md's {role} table is not engine/roles.py's"


async def test_the_cli_says_permission_denied_and_shows_no_secret(
    secured: Secured, tmp_path: Path
) -> None:
    """A machine given only the viewer's password: looking works, submitting is refused."""
    password = credentials.load(secured.credentials_dir, "viewer").password.get_secret_value()
    env = {k: v for k, v in os.environ.items() if k != "ONEMANAGE_CREDENTIALS_DIR"}
    env |= {
        "ONEMANAGE_NATS_URL": secured.server.url,
        "ONEMANAGE_NATS_USER": "viewer",
        "ONEMANAGE_NATS_PASSWORD": password,
        "ONEMANAGE_DATA_DIR": str(tmp_path),
        "ONEMANAGE_PUBLISH_TIMEOUT": "1",
        "PYTHONPATH": str(ROOT),
    }
    demo = tmp_path / "demo.psd"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert run("demo", "--out", str(demo)).returncode == 0
    status = await asyncio.to_thread(run, "status")
    assert status.returncode == 0, status.stderr
    started = time.monotonic()
    submit = await asyncio.to_thread(run, "submit", str(demo))
    took = time.monotonic() - started
    assert submit.returncode == 2, submit.stdout + submit.stderr
    assert "onemanage: permission denied: publish to" in submit.stderr, submit.stderr
    assert "Traceback" not in submit.stderr
    for done in (status, submit):
        assert password not in done.stdout + done.stderr
    outcome = f"exit 2, permission denied ({took:.1f}s)"
    secured.outcomes.append(("viewer", "onemanage submit (CLI)", outcome))


async def test_a_viewer_console_says_permission_denied(secured: Secured) -> None:
    from console.app import ConsoleApp, ConsoleOptions
    from tests.console.test_app import SIZE
    from tests.support.waiting import until

    viewer = create_broker(secured.settings("viewer"))
    await viewer.startup()
    app = ConsoleApp(ConsoleOptions(since=timedelta(minutes=5)), connection=viewer)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.state.connection.connected and app.state.streams)
            await pilot.press("d")

            def told() -> str | None:
                texts = [str(n.message) for n in app._notifications]
                return next((t for t in texts if "permission denied" in t), None)

            message = await until(pilot, told, 60, "no permission-denied notice")
            assert "demo not submitted: permission denied: publish to" in message
    finally:
        await viewer.shutdown()
    secured.outcomes.append(("viewer", "console: d (submit the demo)", message))


class GeneratedCluster(Cluster):
    """The 3-node loopback cluster, each node's config being `onemanage server config`'s.

    Only what the test must own is changed in each file: its free client and
    monitor ports, its store, and its server name (the helper's waits use it).
    Routes, their generated password, users and permissions are as generated.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.found = credentials.ensure(base / "credentials", ROLES)
        super().__init__(base)

    def _config(self, node: ClusterNode) -> str:
        routes = tuple(f"127.0.0.1:{n.route_port}" for n in self.nodes)
        files = server_configs(Plan(routes=routes), self.found, "route-secret-for-tests")
        text = files[f"node-{self.nodes.index(node) + 1}.conf"]
        config = json.loads(
            "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        )
        config["listen"] = f"127.0.0.1:{node.port}"
        config["http"] = f"127.0.0.1:{node.monitor_port}"
        config["jetstream"]["store_dir"] = str(node.directory / "store")
        config["server_name"] = node.name
        return json.dumps(config)


async def test_a_cluster_from_the_generated_configs(tmp_path: Path) -> None:
    cluster = GeneratedCluster(tmp_path)
    brokers: list[OneManageBroker] = []

    def connect(role: Role) -> OneManageBroker:
        settings = Settings(
            nats_url=cluster.urls, credentials_dir=tmp_path / "credentials", role=role,
            data_dir=tmp_path / "data", replicas=3, publish_timeout=1,
        )  # fmt: skip
        brokers.append(create_broker(settings))
        return brokers[-1]

    try:
        await asyncio.to_thread(cluster.start)
        worker = connect("worker")
        await worker.startup()
        await worker.ensure_streams()
        info = await worker.js.stream_info(EVENTS)
        assert info.config.num_replicas == 3
        beat = TaskQueued(task_id=uuid.uuid4().hex, task_name="t.cluster")
        await publish_event(worker, beat)
        viewer = connect("viewer")
        await viewer.startup()
        seen = await monitor.recent_events(viewer, timedelta(minutes=5))
        assert any(getattr(e, "task_id", None) == beat.task_id for e in seen)
        with pytest.raises(PermissionDeniedError):
            await viewer.js.purge_stream(EVENTS)
    finally:
        for broker in brokers:
            await broker.shutdown()
        cluster.stop()


async def test_only_the_operator_may_ask_for_a_cancel_or_a_replay(secured: Secured) -> None:
    """The viewer is refused by the server (and refusal() says why before it tries); the
    operator's request is queued for a worker, but it still may not publish an outcome."""
    worker = await secured.broker("worker")
    workflow_id = uuid.uuid4().hex
    key = storage.input_key(DEMO)
    await publish_event(worker, announcement(workflow_id, key, "demo.psd", len(DEMO)))
    viewer = await secured.broker("viewer")
    assert refusal("viewer", "cancel") is not None
    for subject in CONTROL_TASKS:
        await _refused(
            secured, "viewer", f"kick {subject}", viewer.publish(subject, b"{}", uuid.uuid4().hex)
        )
    with pytest.raises(ActionRefused) as before:  # asked before anything is sent
        await cancel_workflow(viewer, workflow_id)
    assert (before.value.code, before.value.message) == ("not_allowed", refusal("viewer", "cancel"))
    # A client that believes it is an operator, with a viewer's credentials: the server
    # refuses, and the action says so the same way.
    mistaken = create_broker(secured.settings("viewer"))
    await mistaken.startup()
    try:
        mistaken.role = "operator"
        with pytest.raises(ActionRefused) as denied:
            await cancel_workflow(mistaken, workflow_id)
        assert denied.value.code == "not_allowed"
        assert denied.value.message.startswith("permission denied: ")
    finally:
        await mistaken.shutdown()
    secured.outcomes.append(("viewer", "cancel a workflow", str(denied.value)))
    operator = await secured.broker("operator")
    queued = await cancel_workflow(operator, workflow_id)
    assert queued.target == workflow_id
    stored = await worker.js.get_msg(TASKS, subject=CONTROL_TASKS[0])
    assert workflow_id.encode() in (stored.data or b"")
    failed = PsdWorkflowFailed(
        workflow_id=workflow_id, filename="demo.psd", step="queued", error_code="cancelled",
        error_message="forged",
    )  # fmt: skip
    await _refused(secured, "operator", "publish an outcome", publish_event(operator, failed))
