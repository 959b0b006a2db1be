"""One definition of the counts (engine.counts) on every surface, and workers that age out
and group by their command: the console against the session's real server and workers."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Static

from console.app import ConsoleApp, ConsoleOptions
from console.widgets.workers import Workers
from engine.broker import OneManageBroker
from engine.counts import Counts
from engine.identity import HOST
from engine.services.samples import make_demo_psd
from engine.streams import EVENTS
from engine.submit import submit_psd
from tests.support.harness import (
    ROOT,
    EventCollector,
    WorkerProcess,
    kill_worker,
    onemanage,
    settled,
)
from tests.support.waiting import eventually, until

pytestmark = pytest.mark.slow  # real apps and workers on the session server

SIZE = (160, 50)
CALM = ROOT / "tests" / "support" / "calm-alerts.toml"
STATS_DURABLE = "task-stats"


def text_of(panel: Static) -> str:
    console = Console(width=panel.content_size.width or 68, file=io.StringIO(), record=True)
    console.print(panel.content)
    return console.export_text()


async def status(env: dict[str, str] | None = None) -> dict[str, object]:
    done = await asyncio.to_thread(onemanage, "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    document: dict[str, object] = json.loads(done.stdout)
    return document


async def status_counts() -> Counts:
    figures = (await status())["counts"]
    assert isinstance(figures, dict), figures
    return Counts(**figures)


def thresholds(tmp_path: Path, gone_after_s: float) -> Path:
    limits = tmp_path / "alerts.toml"
    limits.write_text(
        CALM.read_text().replace("worker_gone_after_s = 0", f"worker_gone_after_s = {gone_after_s}")
    )
    return limits


async def test_counts_agree_in_header_panel_and_status_after_a_mixed_run(
    client: OneManageBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONEMANAGE_ALERTS_FILE", str(CALM))
    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=5), with_worker=True))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.worker_process is not None and app.state.workers)
        assert app.worker_process is not None
        # The header names the worker as the Workers panel does: its command's host:pid.
        command = f"{HOST}:{app.worker_process.pid}"
        assert f"worker {command}" in app.backend
        panel = app.query_one(Workers)
        await until(pilot, lambda: command in [c for c, _ in app.state.worker_groups()])
        await until(pilot, lambda: command in text_of(panel))

        await settled(client, EVENTS, STATS_DURABLE)  # earlier tests' events all folded
        before = await status_counts()
        good = [await submit_psd(client, make_demo_psd(seed=n), f"good-{n}.psd") for n in (1, 2)]
        bad = await submit_psd(client, make_demo_psd()[:300], "bad.psd")  # truncated
        ids = [s.workflow_id for s in good]

        def ended() -> bool:
            rows = app.state.rows
            return all(w in rows and rows[w].state == "completed" for w in ids) and (
                bad.workflow_id in rows and rows[bad.workflow_id].state == "failed"
            )

        await until(pilot, ended, timeout=180)

        async def folded() -> bool:  # the orchestrators' own outcomes come after the events
            now = await status_counts()
            return (
                now.workflows_completed - before.workflows_completed >= 2
                and now.workflows_failed - before.workflows_failed >= 1
            )

        await eventually(folded, timeout=60)
        await settled(client, EVENTS, STATS_DURABLE)
        after = await status_counts()
        assert (after.workflows_completed - before.workflows_completed) == 2, (before, after)
        assert (after.workflows_failed - before.workflows_failed) == 1, (before, after)
        # Four steps per good file; the bad one fails at its first step, once.
        assert (after.tasks_ok - before.tasks_ok) == 8, (before, after)
        assert (after.tasks_failed - before.tasks_failed) == 1, (before, after)
        assert after.tasks_dead_lettered == before.tasks_dead_lettered

        # `onemanage check` states the same counts (a quiet finding: in --json).
        checked = await asyncio.to_thread(
            onemanage, "check", "--json", env={"ONEMANAGE_ALERTS_FILE": str(CALM)}
        )
        report = json.loads(checked.stdout)
        texts = [f["text"] for f in report["findings"] if f["text"].startswith("counts: ")]
        assert texts == [f"counts: {after.line()}"], checked.stdout

        # The console reads the same statistics: header and panel show status's figures.
        await until(pilot, lambda: app.state.counts() == after, timeout=60)
        await until(pilot, lambda: after.line() in app.status_line())
        shown = await until(pilot, lambda: text_of(panel))
        await until(pilot, lambda: after.tasks_text() in text_of(panel), what=lambda: shown)
        assert after.workflows_text() in text_of(panel)
        # The workflow lane's task type is in the percentile table, labelled as workflows
        # (the name column folds the label onto a second line).
        windows = [name for name, _ in app.state.task_windows()]
        assert windows[0] == "psd.process (workflows)" and "psd.validate" in windows
        table = text_of(panel).split("last hour", 1)[1]
        assert "psd.process" in table and "(workflows)" in table

        # The bad file is one failure: its workflow, with its step's error inside.
        mine = [r for r in app.state.failure_rows() if r.correlation_id == bad.workflow_id]
        assert [(r.key, r.step, r.error_type) for r in mine] == [
            (bad.workflow_id, "validate", "truncated")
        ]
        await pilot.press("q")


async def test_a_worker_command_is_one_group_and_a_killed_one_ages_out_into_gone(
    client: OneManageBroker,
    events: EventCollector,
    start_workers: Callable[..., WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone_after = 8.0
    limits = thresholds(tmp_path, gone_after)
    env = {"ONEMANAGE_ALERTS_FILE": str(limits)}
    monkeypatch.setenv("ONEMANAGE_ALERTS_FILE", str(limits))
    worker = start_workers(processes=2, env={"ONEMANAGE_HEARTBEAT_INTERVAL": "0.5"})
    processes = await worker.ready(events)
    command = f"{HOST}:{worker.process.pid}"

    document = await status(env)
    groups = {g["command"]: g for g in document["worker_groups"]}  # type: ignore[attr-defined]
    assert sorted(groups[command]["processes"]) == sorted(processes)
    assert document["worker_gone_after_s"] == gone_after

    app = ConsoleApp(ConsoleOptions(since=timedelta(seconds=30)))
    async with app.run_test(size=SIZE) as pilot:
        panel = app.query_one(Workers)

        def grouped() -> bool:
            groups = dict(app.state.worker_groups())
            return {v.beat.worker_id for v in groups.get(command, [])} == processes

        await until(pilot, grouped)
        await until(pilot, lambda: command in text_of(panel))
        assert all(pid in text_of(panel) for pid in processes)
        gone_before = len(app.state.gone)

        # The whole group at once: no process of it says goodbye (a crashed host).
        await asyncio.to_thread(kill_worker, worker)
        await until(
            pilot,
            lambda: any(
                app.state.worker_state(app.state.workers[p], app.state.clock()) == "lost"
                for p in processes
                if p in app.state.workers
            ),
            timeout=60,
        )
        await until(pilot, lambda: "LOST" in text_of(panel))
        # Past the gone-after time they leave the list and are counted gone.
        await until(pilot, lambda: not processes & set(app.state.workers), timeout=90)
        assert processes <= set(app.state.gone)
        assert len(app.state.gone) >= gone_before + 2
        await until(pilot, lambda: command not in text_of(panel))
        assert f"gone {len(app.state.gone)}" in text_of(panel)

    async def counted_gone() -> dict[str, object] | None:
        document = await status(env)
        live = {w["worker_id"] for w in document["workers"]}  # type: ignore[attr-defined]
        gone = document["workers_gone"]
        return document if not processes & live and isinstance(gone, int) and gone >= 2 else None

    document = await eventually(counted_gone, timeout=60)
    assert command not in {g["command"] for g in document["worker_groups"]}  # type: ignore[attr-defined]
