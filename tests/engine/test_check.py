"""`onemanage check`: Nagios exit codes and JSON, each finding produced for real."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import alerts
from engine.alerts import Thresholds
from engine.broker import OneManageBroker
from engine.services.samples import make_demo_psd
from engine.streams import EVENTS, TASKS, wanted_buckets, wanted_streams
from engine.submit import submit_psd
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


def _limits(tmp_path: Path, **overrides: float) -> dict[str, str]:
    """The calm thresholds with ``overrides``, as the environment of a check or a worker."""
    values = {**tomllib.loads(CALM.read_text())["thresholds"], **overrides}
    path = tmp_path / f"alerts-{len(list(tmp_path.glob('alerts-*')))}.toml"
    path.write_text("[thresholds]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    return {"ONEMANAGE_ALERTS_FILE": str(path)}


async def _until_found(
    env: dict[str, str], found: Callable[[dict[str, Any]], bool], why: str, timeout: float = 90
) -> dict[str, Any]:
    """The first report for which ``found`` holds."""
    last: list[dict[str, Any]] = []

    async def reached() -> dict[str, Any] | None:
        code, report = await _report(env=env)
        last[:] = [report]
        return report if code != 3 and found(report) else None

    return await eventually(reached, timeout, lambda: f"{why}; last report: {last}", interval=0.5)


def _of_rule(report: dict[str, Any], rule: str, about: str | None = None) -> list[dict[str, Any]]:
    return [
        f
        for f in report["findings"]
        if f.get("rule") == rule and (about is None or f.get("about") == about)
    ]


def _bad(report: dict[str, Any], rule: str, about: str | None = None) -> bool:
    return any(f["level"] in ("warning", "critical") for f in _of_rule(report, rule, about))


async def test_a_task_waiting_past_its_age_threshold_warns_and_clears_once_run(
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    env = _limits(tmp_path, oldest_pending_warning_s=1, oldest_pending_critical_s=3600)
    await _until(2, "no worker yet", env)
    await whoami.kiq(1)
    report = await _until_found(env, lambda r: _bad(r, "oldest_pending"), "the task waits")
    (old,) = _of_rule(report, "oldest_pending")
    assert old["level"] == "warning" and old["about"] == TASKS
    assert old["text"].startswith("oldest unacknowledged task queued ")
    worker = start_workers(processes=1)
    await worker.ready(events)
    await _until_found(env, lambda r: not _bad(r, "oldest_pending"), "the worker ran it")


async def test_a_dead_letter_warns_until_it_leaves_the_window(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """A two-minute window (this minute's slot and the last one's): a dead letter counts for
    a minute at least, whenever in its minute it came, then ages out."""
    env = _limits(tmp_path, dead_letters_warning=1, dead_letters_critical=1000, window_s=120)
    worker = start_workers(processes=1)
    await worker.ready(events)
    calm = await _until_found(
        env, lambda r: not _bad(r, "dead_letters"), "no dead letter in two minutes", 240
    )
    assert _of_rule(calm, "dead_letters")[0]["text"].startswith("0 dead letter(s) in the last")
    garbage = b"\x00\xff not a taskiq message {"
    await client.publish("tasks.default.test.add", garbage, msg_id=uuid.uuid4().hex)
    report = await _until_found(env, lambda r: _bad(r, "dead_letters"), "the dead letter counts")
    (dead,) = _of_rule(report, "dead_letters")
    assert dead["level"] == "warning"
    assert dead["text"].startswith("1 dead letter(s) in the last 2 min (warning at 1")
    await _until_found(env, lambda r: not _bad(r, "dead_letters"), "the window passed", 240)


async def test_a_workflow_without_progress_is_stuck_until_a_worker_runs_it(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    env = _limits(tmp_path, stuck_after_s=1, stuck_workflows_critical=1000, window_s=600)
    await _until(2, "no worker yet", env)
    workflow_id = (await submit_psd(client, make_demo_psd(), "stuck.psd")).workflow_id

    def stuck_ours(report: dict[str, Any]) -> bool:
        return any(workflow_id[:8] in f["text"] for f in _of_rule(report, "stuck_workflows"))

    report = await _until_found(env, stuck_ours, "the workflow waits for a worker")
    (stuck,) = _of_rule(report, "stuck_workflows")
    assert stuck["level"] == "warning" and "without progress for 1 s or more" in stuck["text"]
    worker = start_workers(processes=1)
    await worker.ready(events)
    await _until_found(env, lambda r: not stuck_ours(r), "the worker ran it")


async def test_a_silent_worker_is_lost_and_found_again(
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    env = _limits(tmp_path, worker_gone_after_s=600)
    worker = start_workers(processes=1, env={"ONEMANAGE_HEARTBEAT_INTERVAL": "0.5"})
    (worker_id,) = await worker.ready(events)
    with worker.paused():
        report = await _until_found(
            env, lambda r: _bad(r, "worker_lost", worker_id), "the worker stopped beating"
        )
        (lost,) = _of_rule(report, "worker_lost", worker_id)
        assert lost["text"].startswith(f"worker {worker_id} lost: no heartbeat for ")
    report = await _until_found(
        env, lambda r: not _bad(r, "worker_lost", worker_id), "the worker beats again"
    )
    (found,) = _of_rule(report, "worker_lost", worker_id)
    assert found["text"] == f"worker {worker_id} beats (every 0.5 s)"


async def test_a_cluster_with_workers_but_no_evaluator_warns_until_one_evaluates(
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """A worker running only its own modules beats but evaluates nothing (no engine.builtin)."""
    env = _limits(tmp_path, evaluate_every_s=0.5)
    evaluating = start_workers(processes=1, env=env)
    (evaluator_id,) = await evaluating.ready(events)
    report = await _until_found(
        env,
        lambda r: any(evaluator_id in f["text"] for f in _of_rule(r, "evaluator")),
        "the evaluator looked",
    )
    (ok,) = _of_rule(report, "evaluator")
    assert ok["level"] == "ok" and ok["text"].startswith(f"alert evaluator {evaluator_id}: last")
    plain = start_workers(processes=1, modules=("tests.support.tasks",))
    await plain.ready(events)
    assert await asyncio.to_thread(evaluating.stop) == 0
    report = await _until_found(env, lambda r: _bad(r, "evaluator"), "nobody evaluates")
    (silent,) = _of_rule(report, "evaluator")
    assert silent["level"] == "warning" and "no worker process raises or clears" in silent["text"]
    again = start_workers(processes=1, env=env)
    await again.ready(events)
    await _until_found(env, lambda r: not _bad(r, "evaluator"), "a new evaluator looked")


def test_storage_is_judged_against_the_accounts_limit_when_it_has_one() -> None:
    t = Thresholds()
    assert alerts.storage_used(500, -1, 2048, t)[0] == alerts.OK
    level, text = alerts.storage_used(85, 100, 0, t)
    assert level == alerts.WARNING and "85 B of the account's 100 B stored (85%" in text
    assert alerts.storage_used(96, 100, 0, t)[0] == alerts.CRITICAL


async def test_the_check_says_jetstream_answers_and_how_much_it_holds() -> None:
    code, report = await _report()
    (js,) = _of_rule(report, "jetstream")
    assert js["level"] == "ok" and js["text"].startswith("JetStream on: ")
    assert code != 3, report
