"""Import cost is paid where the work is: a client loads no psd-tools, SciPy or Pillow.

Each check runs in a fresh interpreter, so what this test process already
imported does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NatsServer
from tests.support.harness import ROOT

HEAVY = ("psd_tools", "scipy", "PIL", "numpy", "textual")


def _loaded_after(code: str) -> list[str]:
    report = f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    probe = f"{code}\nimport json, sys\n{report}"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import engine.broker",
        "import engine.app",
        "from engine.app import broker, event_listener",
        # what `onemanage submit`, `status` and `check` import
        "import engine.cli, engine.submit, engine.monitor, engine.events.stats",
        "import engine.tasks.diagnostics, engine.tasks.names",
    ],
)
def test_a_client_loads_no_psd_code(code: str) -> None:
    assert _loaded_after(code) == []


def test_the_psd_application_loads_it_where_the_work_is() -> None:
    assert {"psd_tools", "PIL"} <= set(_loaded_after("import engine.builtin"))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["status"], "server: nats://"),
        (["check"], "ok   connected to"),
        (["submit", "not-a-psd.txt"], "not a PSD or PSB file"),
    ],
)
@pytest.mark.slow  # three commands, each a fresh interpreter and a connection
def test_the_commands_load_no_psd_code(
    nats_server: NatsServer, tmp_path: Path, args: list[str], says: str
) -> None:
    """The real commands against the session's server, traced by -X importtime."""
    (tmp_path / "not-a-psd.txt").write_text("refused before anything is uploaded")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "engine.cli", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert says in done.stdout + done.stderr, done.stdout + done.stderr  # it did its work
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "engine" in imported  # the trace is there
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
