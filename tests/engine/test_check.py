"""`onemanage check`: Nagios exit codes and JSON, each finding produced for real."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.alerts import Thresholds
from engine.broker import OneManageBroker
from engine.streams import EVENTS, TASKS, wanted_buckets, wanted_streams
from tests.support.harness import ROOT, EventCollector, WorkerProcess, onemanage
from tests.support.tasks import whoami
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


# The session server holds the history of every test before this one (dead letters,
# failed tasks, listeners behind): these tests judge only what they produce themselves.
CALM = ROOT / "tests" / "support" / "calm-alerts.toml"


def _check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return onemanage("check", *args, env={"ONEMANAGE_ALERTS_FILE": str(CALM), **(env or {})})


async def _report(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Exit code and parsed ``--json`` document of one check."""
    done = await asyncio.to_thread(_check, "--json", *args, env=env)
    return done.returncode, json.loads(done.stdout)


def _texts(report: dict[str, Any], level: str) -> list[str]:
    return [f["text"] for f in report["findings"] if f["level"] == level]


async def _until(code: int, why: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The first report whose exit code is ``code`` (a worker's heartbeats come and go in time)."""
    last: list[dict[str, Any]] = []

    async def reached() -> dict[str, Any] | None:
        got, report = await _report(env=env)
        last[:] = [report]
        return report if got == code else None

    return await eventually(reached, 60, lambda: f"{why}; last report: {last}", interval=0.5)


async def test_no_worker_is_critical_and_a_running_one_clears_it(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    report = await _until(2, "no worker running: critical")
    assert report["status"] == "critical" and report["code"] == 2
    assert any("no live worker" in text for text in _texts(report, "critical"))
    assert all({"level", "code", "text"} <= set(f) for f in report["findings"])

    worker = start_workers(processes=1)
    await worker.ready(events)
    report = await _until(0, "a worker runs: ok")
    assert report["status"] == "ok"
    names = [str(s.name) for s in wanted_streams(client.settings)]
    names += [f"KV_{bucket}" for bucket, _, _ in wanted_buckets(client.settings)]
    assert [f"stream {name} as configured" for name in names] == [
        text for text in _texts(report, "ok") if text.startswith("stream ")
    ]


async def test_a_drifted_stream_limit_warns_by_field_and_clears_when_put_back(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)
    await _until(0, "a worker runs: ok")
    info = await client.js.stream_info(EVENTS)
    drifted = dataclasses.replace(info.config, max_msgs=123_456)
    await client.js.update_stream(drifted)
    try:
        code, report = await _report()
        assert code == 1, report
        assert report["status"] == "warning"
        (warning,) = [t for t in _texts(report, "warning") if t.startswith(f"stream {EVENTS}")]
        assert "max_msgs 123456" in warning and "the next worker to start puts it back" in warning
        lines = (await asyncio.to_thread(_check)).stdout
        assert f"WARN stream {EVENTS} drifted: max_msgs 123456" in lines
    finally:
        await client.ensure_streams()  # as a worker does when it starts
    code, report = await _report()
    assert code == 0, report


async def test_an_unreachable_server_is_critical_in_lines_and_json() -> None:
    env = {"ONEMANAGE_NATS_URL": "nats://127.0.0.1:9", "ONEMANAGE_CONNECT_TIMEOUT": "1"}
    code, report = await _report(env=env)
    assert code == 2 and report["status"] == "critical"
    (text,) = _texts(report, "critical")
    assert text.startswith("cannot connect:") and "nats://127.0.0.1:9" in text


async def test_check_and_status_leave_no_consumer_behind(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    await worker.ready(events)

    async def names() -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for stream in (TASKS, EVENTS):
            found |= {(stream, c.name) for c in await client.js.consumers_info(stream)}
        return found

    before = await names()
    await _until(0, "a worker runs: ok")
    for args in (["status"], ["status", "--json"]):
        status = await asyncio.to_thread(onemanage, *args)
        assert status.returncode == 0, status.stderr
    assert await names() == before


async def test_status_json_names_the_streams_durables_and_live_workers(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
) -> None:
    worker = start_workers(processes=1)
    (worker_id,) = await worker.ready(events)
    done = await asyncio.to_thread(onemanage, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["streams"][TASKS]["last_seq"] >= 0 and status["streams"][EVENTS]["messages"] > 0
    durables = {(c["stream"], c["name"]) for c in status["consumers"]}
    assert (TASKS, client.settings.tasks_durable) in durables and (EVENTS, "audit-log") in durables
    assert worker_id in [w["worker_id"] for w in status["workers"]]
    assert status["task_stats_error"] is None


async def test_tasks_piling_up_warn_by_their_threshold_and_clear_once_run(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    limits = tmp_path / "alerts.toml"
    limits.write_text(
        CALM.read_text().replace("consumer_lag_warning = 1000000", "consumer_lag_warning = 3")
    )
    env = {"ONEMANAGE_ALERTS_FILE": str(limits)}
    await _until(2, "no worker yet", env)  # nobody pulls: what is kicked stays queued
    for n in range(5):
        await whoami.kiq(n)
    report = await _until(2, "five tasks queued", env)
    durable = f"{TASKS}/{client.settings.tasks_durable}"
    (lag,) = [t for t in _texts(report, "warning") if t.startswith(f"durable {durable}:")]
    assert lag.startswith(f"durable {durable}: 5 to deliver (warning at 3")
    worker = start_workers(processes=1)
    await worker.ready(events)
    # The threshold holds for every durable: listeners may still be catching up on
    # the session's history, so only the tasks' durable is judged here.
    last: list[dict[str, Any]] = []

    async def ran() -> bool:
        code, report = await _report(env=env)
        last[:] = [report]
        lines = _texts(report, "warning") + _texts(report, "critical")
        return code != 3 and not [t for t in lines if t.startswith(f"durable {durable}:")]

    await eventually(ran, 60, lambda: f"the worker never ran them: {last}", interval=0.5)


async def test_an_unreadable_thresholds_file_is_unknown(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.toml"
    broken.write_text("[thresholds]\nconsumer_lag_warnin = 5\n")
    code, report = await _report(env={"ONEMANAGE_ALERTS_FILE": str(broken)})
    assert code in (2, 3), report  # critical wins when no worker runs
    (text,) = _texts(report, "unknown")
    assert str(broken) in text and "consumer_lag_warnin" in text


def test_the_documented_thresholds_are_the_defaults() -> None:
    """docs/troubleshooting.md's commented example must say what a missing file means."""
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    (block,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert tomllib.loads(block)["thresholds"] == dataclasses.asdict(Thresholds())
