"""`onemanage events`: stored events in order, filtered by type, as lines or NDJSON."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest

from engine.broker import OneManageBroker
from engine.eventlines import subject_for
from engine.events.publisher import publish_event
from tests.support.harness import ROOT, onemanage
from tests.support.tasks import ProbeEvent
from tests.support.waiting import eventually


def _events(*args: str) -> subprocess.CompletedProcess[str]:
    return onemanage("events", *args)


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]  # every line parses


async def _probes(client: OneManageBroker, note: str, count: int) -> list[int]:
    seqs = []
    for n in range(count):
        ack = await publish_event(client, ProbeEvent(n=n, note=note))
        assert ack is not None
        seqs.append(ack.seq)
    return seqs


def test_a_type_pattern_is_the_narrowest_subject() -> None:
    assert subject_for("psd.*") == "events.psd.>"
    assert subject_for("psd.workflow.completed") == "events.psd.workflow.completed"
    assert subject_for("*") == "events.>"
    assert subject_for("task.fail*") == "events.task.>"


async def test_ndjson_lines_in_order_with_only_the_type_asked_for(
    client: OneManageBroker,
) -> None:
    note = uuid.uuid4().hex
    seqs = await _probes(client, note, 3)
    # Not JSON at all, on a subject the pattern covers: shown, marked, with the reason.
    await client.js.publish("events.test.garbled", b"{not json", headers={"Nats-Msg-Id": note})
    mine_too = ("--import", "tests.support.tasks")  # the test's own event types
    done = await asyncio.to_thread(
        _events, "--since", "10m", "--type", "test.*", "--ndjson", *mine_too
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stdout)
    mine = [line for line in lines if line.get("note") == note]
    assert [(line["seq"], line["n"], line["event_type"]) for line in mine] == [
        (seq, n, "test.probe") for n, seq in enumerate(seqs)
    ]
    assert all(line["event_type"].startswith("test.") for line in lines if "event_type" in line)
    assert not [line for line in mine if "unreadable" in line]
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)

    everything = _lines((await asyncio.to_thread(_events, "--since", "10m", "--ndjson")).stdout)
    garbled = [line for line in everything if line["subject"] == "events.test.garbled"]
    assert garbled and garbled[-1]["unreadable"] == "not_json"
    # Without the module, its events are still shown whole, and say why they are unread.
    unknown = [line for line in everything if line.get("note") == note]
    assert [(line["n"], line["unreadable"]) for line in unknown] == [
        (n, "unknown_type") for n in range(3)
    ]

    others = await asyncio.to_thread(_events, "--since", "10m", "--type", "task.*", "--ndjson")
    assert not [line for line in _lines(others.stdout) if line.get("note") == note]

    text = await asyncio.to_thread(_events, "--since", "10m", "--type", "test.probe", *mine_too)
    assert f'note="{note}"' in text.stdout and "test.probe" in text.stdout


def _follow() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "events", "--since", "1s", "--type", "test.probe",
         "--follow", "--ndjson", "--import", "tests.support.tasks"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_follow_shows_live_events_until_interrupted(client: OneManageBroker) -> None:
    note = uuid.uuid4().hex
    follower = _follow()
    assert follower.stdout is not None
    seen: list[dict[str, Any]] = []
    try:
        reader = asyncio.create_task(asyncio.to_thread(follower.stdout.readline))

        async def arrived() -> bool:
            nonlocal reader
            await _probes(client, note, 1)  # published until the follower shows one
            while reader.done():
                line = reader.result()
                if not line:
                    pytest.fail(f"events --follow ended: {follower.stderr}")
                seen.append(json.loads(line))
                reader = asyncio.create_task(asyncio.to_thread(follower.stdout.readline))
            return any(line.get("note") == note for line in seen)

        await eventually(arrived, 60, "events --follow never showed a live event", interval=0.5)
    finally:
        follower.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(follower.wait, 30) == 0


async def test_a_reader_that_quits_early_ends_the_dump_quietly(client: OneManageBroker) -> None:
    """`onemanage events | head -1`: the dump stops at the closed pipe, with no traceback."""
    note = uuid.uuid4().hex
    await _probes(client, note, 400)  # more than a pipe's buffer (64 KiB) to write
    done = await asyncio.to_thread(
        subprocess.run,
        f"{sys.executable} -m engine.cli events --since 10m --ndjson | head -n 1",
        shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and json.loads(done.stdout)["seq"] >= 1
    assert done.stderr == "", done.stderr
