"""Docs that cannot rot: every fenced block of README.md and docs/ is run, in order.

Each document gets a private nats-server (``engine.embedded.start``), its own
data directory and a scratch directory, which is both the working directory of
its commands and the root of the files its blocks define (``# myapp/tasks.py``),
so one document cannot disturb another or the rest of the suite: a snippet may
delete a stream, a worker may run modules no other test knows. What each kind
of block becomes is in docs/developer-guide.md, "Docs that run"; the
conventions are in tests/docs/blocks.py.

A block's test id is its file and line (``docs/migration.md:120``). Selecting one
block runs the blocks above it in its document first, as a reader would have.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from console import config as console_config
from console.app import ConsoleApp
from engine import embedded
from engine.alerts import load_thresholds
from engine.broker import OneManageBroker
from engine.events.schemas import BaseEvent, WorkerHeartbeat
from engine.settings import Settings, load_settings
from tests.docs.blocks import ROOT, Block, Document, documents
from tests.support.harness import EventCollector
from tests.support.servers import admin_config, as_admin
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

DOCUMENTS = documents()
BLOCKS = [block for document in DOCUMENTS for block in document.blocks if block.runnable]
# What runs: a block marked skip is not a test at all (test_skips_stay_few_and_say_why
# holds the marked ones to a short list with reasons), so nothing shows as skipped.
RUN = [block for block in BLOCKS if block.skip is None]
MAX_SKIPS = 6  # the quick start (2), tests and .ci/run, the old system's sketches (2), benchmarks
BLOCK_TIMEOUT = 180.0  # seconds for one foreground block (a PSD workflow takes a few)
BIN = Path(sys.executable).parent  # .venv/bin: `onemanage`, `taskiq`, `python`

# A script block runs as `python FILE` would, and may also await at top level.
RUNNER = """\
import ast, asyncio, inspect, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as handle:
    code = compile(handle.read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
sys.argv = sys.argv[1:]
result = eval(code, {"__name__": "__main__", "__file__": path})
if inspect.iscoroutine(result):
    asyncio.run(result)
"""


@dataclass
class Background:
    block: Block
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


class DocumentRun:
    """One document's server, directories and background commands, block after block."""

    def __init__(self, doc: str, base: Path) -> None:
        self.doc = doc
        self.blocks = [block for block in RUN if block.doc == doc]
        self.next = 0  # the index of the first block not yet run
        self.base = base
        self.work = base / "work"  # working directory and root of the documents' files
        self.snippets = base / "snippets"  # script blocks and logs, out of the reader's way
        for directory in (self.work, self.snippets):
            directory.mkdir(parents=True)
        config, password = admin_config(base / "server")
        self.server = embedded.start(base / "server", detach=False, config=config)
        data = base / "data"
        self.env = {
            **os.environ,
            "ONEMANAGE_NATS_URL": self.server.url,
            "ONEMANAGE_CREDENTIALS_DIR": str(self.server.credentials_dir),
            "ONEMANAGE_DATA_DIR": str(data),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(self.work), str(ROOT)]),
            # The suite's 0.5 s would call a worker lost after 1.5 s without a beat, which a
            # loaded machine can reach between a worker's start and `onemanage check`.
            "ONEMANAGE_HEARTBEAT_INTERVAL": "2",
        }
        # The documents' commands run as their roles; this connection watches as the tests'.
        self.broker = OneManageBroker(
            as_admin(Settings(nats_url=[self.server.url], data_dir=data), password)
        )
        self.background: list[Background] = []

    async def start(self) -> None:
        """Connect, and create the streams: the docs assume a worker has started once."""
        await self.broker.startup()
        await self.broker.ensure_streams()

    async def run_through(self, block: Block) -> None:
        """Run ``block``, after any block above it in the document that has not run yet."""
        index = self.blocks.index(block)
        while self.next < index:
            earlier = self.blocks[self.next]
            self.next += 1
            try:
                await self.run(earlier)
            except Exception as exc:
                raise AssertionError(f"{earlier.id}, above this block, failed: {exc}") from exc
        self.next = index + 1
        await self.run(block)

    @property
    def finished(self) -> bool:
        return self.next >= len(self.blocks)

    async def run(self, block: Block) -> None:
        kind = block.kind
        if block.background:
            assert kind == "shell", f"{block.id}: only a shell command can run in the background"
            await self._background(block)
            return
        if kind == "shell":
            output = await self._command(["bash", "-e", "-o", "pipefail", "-c", block.commands()])
        elif kind == "python":
            script = self.snippets / f"block_{block.line}.py"
            script.write_text(block.text, encoding="utf-8")
            output = await self._command([sys.executable, "-c", RUNNER, str(script)])
        elif kind == "python-file":
            output = await self._file(block)
        elif kind == "doctest":
            session = self.snippets / f"block_{block.line}.txt"
            session.write_text(block.text, encoding="utf-8")
            output = await self._command([sys.executable, "-m", "doctest", str(session)])
        elif kind == "toml" and "[thresholds]" in block.text:
            output = self._alert_thresholds(block)
        elif kind == "toml":
            output = self._console_config(block)
        elif kind == "conf":
            conf = self.snippets / f"block_{block.line}.conf"
            conf.write_text(block.text, encoding="utf-8")
            output = await self._command([str(embedded.find_binary()), "-t", "-c", str(conf)])
        else:
            raise AssertionError(f"{block.id}: no way to run a {kind} block")
        for text in block.expect:
            assert text in output, f"{block.id}: {text!r} not in the output:\n{output}"

    async def _file(self, block: Block) -> str:
        """Write the file the block is; import it at once if it is a module of a package."""
        assert block.path is not None
        target = self.work / block.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        if "/" not in block.path:  # a script: a later block runs it (test_scripts_are_run)
            compile(block.text, str(target), "exec")
            return ""
        module = block.path.removesuffix(".py").replace("/", ".")
        return await self._command([sys.executable, "-c", f"import {module}"])

    def _alert_thresholds(self, block: Block) -> str:
        """An alerts file (engine.alerts): check would read it without a problem."""
        path = self.snippets / f"block_{block.line}.toml"
        path.write_text(block.text, encoding="utf-8")
        os.environ["ONEMANAGE_ALERTS_FILE"] = str(path)
        try:
            return str(load_thresholds(load_settings()))
        finally:
            del os.environ["ONEMANAGE_ALERTS_FILE"]

    def _console_config(self, block: Block) -> str:
        path = self.snippets / f"block_{block.line}.toml"
        path.write_text(block.text, encoding="utf-8")
        known = {b.id for b in ConsoleApp(connect=False).all_bindings() if b.id}
        loaded = console_config.load(path, known)
        assert not loaded.problems, f"{block.id}: {loaded.problems}"
        assert loaded.keys, f"{block.id}: no key remapped"
        return "\n".join(f"{key} = {value}" for key, value in loaded.keys.items())

    async def _command(self, argv: list[str]) -> str:
        """Run to the end in the working directory; its stdout. Fails on a non-zero exit."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.work,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), BLOCK_TIMEOUT)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: this command's group
            await process.wait()
            raise AssertionError(f"still running after {BLOCK_TIMEOUT:.0f}s") from None
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        assert process.returncode == 0, (
            f"exit code {process.returncode}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        )
        return stdout

    async def _background(self, block: Block) -> None:
        """Start a worker command; it is ready once one of its processes sends a heartbeat."""
        lines = [line for line in block.commands().splitlines() if line.strip()]
        assert len(lines) == 1, f"{block.id}: a background block is one command"
        log = self.snippets / f"background_{block.line}.log"
        started_at = datetime.now(UTC).replace(microsecond=0)
        async with EventCollector(self.broker, "events.worker.heartbeat") as beats:
            process = _spawn(f"exec {lines[0]}", self.work, self.env, log)
            running = Background(block, process, log)
            self.background.append(running)

            def fresh(event: BaseEvent) -> bool:
                return (
                    isinstance(event, WorkerHeartbeat)
                    and event.state == "running"
                    and event.started_at >= started_at
                )

            def ready() -> bool:
                code = process.poll()
                assert code is None, f"exited with {code} before its first heartbeat:\n" + (
                    running.output()
                )
                return bool(beats.matching(fresh))

            await eventually(ready, timeout=60, what=running.output)
        problems = re.findall(r"Cannot import .*", running.output())
        assert not problems, f"{block.id}: {problems}\n{running.output()}"

    async def close(self) -> None:
        """Stop the background commands (SIGTERM, by pid), then the server."""
        failures = []
        try:
            for running in reversed(self.background):
                code = await asyncio.to_thread(_terminate, running.process)
                if code != 0:
                    failures.append(f"{running.block.id} exited {code}:\n{running.output()}")
            self.background.clear()
            await self.broker.shutdown()
        finally:
            self.server.stop()
        assert not failures, "\n".join(failures)


def _spawn(command: str, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``command`` in its own session (exec: SIGTERM reaches it, not a shell), output to ``log``."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _terminate(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, as a service manager would; SIGKILL to its group if it does not drain."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            return -signal.SIGKILL
    return process.returncode


class Runs:
    """The document being run; the previous one is closed when the next one starts."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.current: DocumentRun | None = None

    async def of(self, doc: str) -> DocumentRun:
        if self.current is not None and self.current.doc != doc:
            await self.close()
        if self.current is None:
            name = re.sub(r"\W+", "-", doc.removesuffix(".md"))
            run = DocumentRun(doc, self.factory.mktemp(f"doc-{name}"))
            try:
                await run.start()
            except BaseException:
                await run.close()
                raise
            self.current = run
        return self.current

    async def close(self) -> None:
        run, self.current = self.current, None
        if run is not None:
            await run.close()


@pytest.fixture(scope="module")
async def runs(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Runs]:
    held = Runs(tmp_path_factory)
    yield held
    await held.close()


@pytest.mark.parametrize("block", [pytest.param(block, id=block.id) for block in RUN])
async def test_block(block: Block, runs: Runs) -> None:
    run = await runs.of(block.doc)
    try:
        await run.run_through(block)
    finally:
        if run.finished:
            await runs.close()  # the document's workers must stop cleanly: part of its last block


# -- the rules of the docs themselves (no server) -----------------------------------


def _all() -> list[Block]:
    return [block for document in DOCUMENTS for block in document.blocks]


def test_every_doc_test_comment_is_understood() -> None:
    problems = [problem for document in DOCUMENTS for problem in document.problems]
    assert not problems, "\n".join(problems)


def test_every_block_is_run_or_is_output() -> None:
    unknown = [f"{b.id}: ```{b.lang}" for b in _all() if b.kind == "unknown"]
    assert not unknown, "no way to run these (tag them, or teach tests/docs):\n" + "\n".join(
        unknown
    )
    looks_like_code = re.compile(
        r"^\s*(\$ |onemanage |python |import |from \w+ import |async def )"
    )
    untagged = [b.id for b in _all() if b.kind == "output" and looks_like_code.match(b.text)]
    assert not untagged, f"untagged blocks that are commands or code (tag them): {untagged}"


def test_skips_stay_few_and_say_why() -> None:
    skipped = [f"{b.id}: {b.skip}" for b in BLOCKS if b.skip is not None]
    assert all(b.skip and b.skip != "no reason given" for b in BLOCKS if b.skip is not None)
    assert len(skipped) <= MAX_SKIPS, "more blocks skipped than run-worthy:\n" + "\n".join(skipped)
    ran = [b for b in BLOCKS if b.skip is None]
    assert len(ran) >= 4 * len(skipped), f"{len(ran)} blocks run, {len(skipped)} skipped"


def test_background_blocks_are_one_shell_command() -> None:
    for block in _all():
        if block.background:
            assert block.kind == "shell", block.id
            assert len([line for line in block.commands().splitlines() if line.strip()]) == 1


def test_scripts_are_run_by_a_later_block() -> None:
    """A script a document defines (``# replay.py``) is run further down, or it is not tested."""
    for document in DOCUMENTS:
        blocks = [b for b in document.blocks if b.runnable and b.skip is None]
        for index, block in enumerate(blocks):
            if block.kind == "python-file" and block.path and "/" not in block.path:
                later = [b for b in blocks[index + 1 :] if b.kind == "shell"]
                assert any(block.path in b.text for b in later), (
                    f"{block.id}: no later shell block runs {block.path}"
                )


def test_the_extractor_reads_indented_fences_and_their_comments() -> None:
    from tests.docs.blocks import parse

    text = (
        "1. Step one:\n\n"
        "   <!-- doc-test: background -->\n"
        "   ```sh\n"
        "   onemanage worker myapp.tasks\n"
        "   ```\n\n"
        "<!-- doc-test: skip: it cannot run here -->\n"
        "```python\n"
        "# myapp/tasks.py\n"
        "````\n"  # a longer fence than the opening one closes it too
        "```\n"
        "a diagram\n"
        "```\n"
        "<!-- doc-test: expect -->\n"
        "```sh\n"
        "true\n"
        "```\n"
        "<!-- doc-test: background -->\n"
        "text\n"
    )
    document: Document = parse(text, "x.md")
    worker, sketch, diagram, _ = document.blocks
    assert (worker.line, worker.kind, worker.background) == (4, "shell", True)
    assert worker.text == "onemanage worker myapp.tasks\n"
    assert (sketch.id, sketch.kind, sketch.path, sketch.skip) == (
        "x.md:9",
        "python-file",
        "myapp/tasks.py",
        "it cannot run here",
    )
    assert diagram.kind == "output"
    assert document.problems == [
        "x.md:15: unknown doc-test 'expect'",
        "x.md:19: a doc-test comment not above a fence",
    ]
