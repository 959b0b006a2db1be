"""The PSD service against psd-tools alone, and how long a PSD step waits in the queue.

(a) Service / psd-tools: for each file (default: PSDs this script generates; or every
.psd/.psb in the directories given, e.g. ../shared/fixtures/psd, read where they are), the
engine's PSD service does what the workflow's four steps do (``inspect``, ``parse``,
``render_preview``, ``export_layers``; the last two each in a sandbox child), and psd-tools
alone does ``PSDImage.open`` + ``composite()`` of the same bytes; both in this process,
alternated, median of ``--repeat`` runs each. Prints both times and their ratio per file.
The figure is the median over files of the per-file ratio (target <= 3x). Files the service
refuses (a PsdError code) or psd-tools cannot composite are listed and left out.

(b) Queue wait: one real worker process (``onemanage worker -p 1``) on a private server,
otherwise idle, runs ``--workflows`` PSD workflows submitted one after another, each once the
one before has ended. For each step task, the wait is its TaskStarted timestamp (taken by the
worker as the task starts) minus its TaskQueued one (stamped by the orchestrator just before
it kicks the step); both clocks are this host's. Prints p50/p99/max over all steps (target
p99 < 50 ms), and the same for the orchestrators (kicked by this process).

Usage: python -m bench.psd [DIR ...] [--repeat 3] [--workflows 30] [--skip-queue]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import cast

from psd_tools import PSDImage

from bench.common import (
    private_server,
    record,
    start_worker,
    stop_worker,
    wait_for_workers,
    write_results,
)
from engine import monitor
from engine.app import broker
from engine.events.schemas import (
    BaseEvent,
    PsdWorkflowCompleted,
    PsdWorkflowFailed,
    TaskQueued,
    TaskStarted,
)
from engine.services import psd
from engine.services.limits import Limits
from engine.services.samples import DEMO_LAYERS, DEMO_SIZE, Fill, Group, make_demo_psd, make_psd
from engine.settings import load_settings
from engine.submit import SubmitError, submit_psd
from engine.tasks.names import PROCESS_TASK

STEPS = ("inspect", "parse", "preview", "export")
Files = list[tuple[str, bytes]]


# -- inputs -----------------------------------------------------------------------------


def _scaled(layers: Sequence[Fill | Group], factor: int) -> tuple[Fill | Group, ...]:
    """The demo's tree with every box ``factor`` times bigger."""
    out: list[Fill | Group] = []
    for spec in layers:
        if isinstance(spec, Group):
            out.append(replace(spec, layers=_scaled(spec.layers, factor)))
        else:
            left, top, right, bottom = (side * factor for side in spec.box)
            out.append(replace(spec, box=(left, top, right, bottom)))
    return tuple(out)


def generated() -> Files:
    """Demo documents: seeds, PSB, twice the size, and one without a stored composite."""
    width, height = DEMO_SIZE
    return [
        ("demo-800x600.psd", make_demo_psd()),
        ("demo-seed7.psd", make_demo_psd(seed=7)),
        ("demo-seed3.psb", make_demo_psd(psb=True, seed=3)),
        ("demo-1600x1200.psd", make_psd(_scaled(DEMO_LAYERS, 2), (width * 2, height * 2))),
        ("demo-no-composite.psd", make_psd(DEMO_LAYERS, DEMO_SIZE, composite=False)),
    ]


def from_dirs(dirs: list[str]) -> Files:
    files: Files = []
    for directory in dirs:
        for path in sorted(Path(directory).iterdir()):
            if path.is_file() and path.suffix.lower() in (".psd", ".psb"):
                files.append((path.name, path.read_bytes()))
    return files


# -- (a) the service against psd-tools ---------------------------------------------------


def psd_tools_alone(data: bytes) -> tuple[float, str]:
    """psd-tools' own open + composite(); (seconds, "ok" or the exception's type)."""
    started = time.perf_counter()
    try:
        PSDImage.open(io.BytesIO(data)).composite()
    except Exception as exc:
        return time.perf_counter() - started, f"psd-tools: {type(exc).__name__}"
    return time.perf_counter() - started, "ok"


def service(data: bytes, limits: Limits) -> tuple[dict[str, float], str]:
    """The workflow's four service calls, as the steps make them; (seconds per step, "ok" or
    the error code)."""
    calls: tuple[Callable[[], object], ...] = (
        partial(psd.inspect, data, limits),
        partial(psd.parse, data, limits),
        partial(psd.render_preview, data, limits),
        partial(psd.export_layers, data, limits),
    )
    times: dict[str, float] = {}
    for step, call in zip(STEPS, calls, strict=True):
        started = time.perf_counter()
        try:
            call()
        except psd.PsdError as exc:
            times[step] = time.perf_counter() - started
            return times, exc.code  # the last step timed is the one that refused
        times[step] = time.perf_counter() - started
    return times, "ok"


@dataclass
class FileResult:
    name: str
    size: int
    engine_s: float
    psd_tools_s: float
    steps_s: dict[str, float]
    outcome: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def measure(name: str, data: bytes, limits: Limits, repeat: int) -> FileResult:
    engine: list[dict[str, float]] = []
    alone: list[float] = []
    outcome = "ok"
    for _ in range(repeat):  # alternated, so that noise falls on both alike
        seconds, base_outcome = psd_tools_alone(data)
        alone.append(seconds)
        steps, outcome = service(data, limits)
        engine.append(steps)
        if outcome != "ok":
            outcome += f" at {list(steps)[-1]}"
        if outcome != "ok" or base_outcome != "ok":
            outcome = outcome if outcome != "ok" else base_outcome
            break
    steps_s = {step: statistics.median(run.get(step, 0.0) for run in engine) for step in STEPS}
    return FileResult(
        name,
        len(data),
        statistics.median(sum(run.values()) for run in engine),
        statistics.median(alone),
        steps_s,
        outcome,
    )


def compare(files: Files, limits: Limits, repeat: int) -> list[FileResult]:
    service(make_demo_psd(), limits)  # starts this process's sandbox zygote, warms imports
    psd_tools_alone(make_demo_psd())
    print(f"(a) service (inspect + parse + preview + export) / psd-tools open + composite(), "
          f"median of {repeat}")  # fmt: skip
    print(f"{'file':34} {'bytes':>9} {'psd-tools':>10} {'service':>9} {'ratio':>7}   "
          f"{'inspect':>7} {'parse':>7} {'preview':>7} {'export':>7}  outcome")  # fmt: skip
    results = []
    for name, data in files:
        result = measure(name, data, limits, repeat)
        results.append(result)
        ratio = f"{result.engine_s / result.psd_tools_s:6.2f}x" if result.ok else "     -"
        steps = " ".join(f"{result.steps_s[s] * 1000:5.0f}ms" for s in STEPS)
        print(f"{name[:34]:34} {result.size:9,} {result.psd_tools_s * 1000:8.0f}ms "
              f"{result.engine_s * 1000:7.0f}ms {ratio}   {steps}  {result.outcome}")  # fmt: skip
    ok = [r for r in results if r.ok]
    refused = [r for r in results if not r.ok]
    if refused:
        print(f"left out ({len(refused)}): "
              + ", ".join(f"{r.name} ({r.outcome})" for r in refused))  # fmt: skip
    if ok:
        median_ratio = statistics.median(r.engine_s / r.psd_tools_s for r in ok)
        engine_ms = statistics.median(r.engine_s for r in ok) * 1000
        alone_ms = statistics.median(r.psd_tools_s for r in ok) * 1000
        record("psd.service_over_psd_tools", median_ratio)
        record("psd.service_ms_median", engine_ms)
        record("psd.psd_tools_ms_median", alone_ms)
        print(f"{len(ok)} files: median ratio {median_ratio:.2f}x (target <= 3x); median times: "
              f"service {engine_ms:.0f} ms, psd-tools {alone_ms:.0f} ms")  # fmt: skip
    record("psd.files_measured", len(ok))
    record("psd.files_left_out", len(refused))
    return results


# -- (b) the queue wait of a step on an idle worker ---------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Waits:
    steps: list[float] = field(default_factory=list)  # ms
    orchestrators: list[float] = field(default_factory=list)  # ms
    by_step: dict[str, list[float]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    unpaired: int = 0


async def one_workflow(name: str, data: bytes, waits: Waits | None) -> str:
    """Submit one workflow and read its events until it ended and each task it queued started."""
    try:
        submission = await submit_psd(broker, data, name)
    except SubmitError:
        return "refused by submit"
    queued: dict[str, tuple[str, datetime]] = {}
    started: dict[str, datetime] = {}
    outcome: str | None = None
    deadline = time.monotonic() + 600
    since = submission.submitted_at - timedelta(seconds=1)
    reader = cast(AsyncGenerator[BaseEvent, None], monitor.follow(broker, since))
    async with contextlib.aclosing(reader) as events:
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = await asyncio.wait_for(anext(events), max(remaining, 0.001))
            except TimeoutError:
                break
            if event.correlation_id != submission.workflow_id:
                continue
            if isinstance(event, TaskQueued):
                queued[event.task_id] = (event.task_name, event.timestamp)
            elif isinstance(event, TaskStarted) and event.attempt == 1:
                started[event.task_id] = event.timestamp
            elif isinstance(event, PsdWorkflowCompleted):
                outcome = "ok"
            elif isinstance(event, PsdWorkflowFailed):
                outcome = event.error_code
            if outcome is not None:
                if queued and set(queued) <= set(started):
                    break
                # What has not started 5 s after the outcome is counted as unpaired.
                deadline = min(deadline, time.monotonic() + 5)
    if waits is None:
        return outcome or "no outcome"
    for task_id, (task_name, queued_at) in queued.items():
        if task_id not in started:
            waits.unpaired += 1
            continue
        wait_ms = (started[task_id] - queued_at).total_seconds() * 1000
        if task_name == PROCESS_TASK:
            waits.orchestrators.append(wait_ms)
        else:
            waits.steps.append(wait_ms)
            waits.by_step.setdefault(task_name, []).append(wait_ms)
    outcome = outcome or "no outcome"
    waits.outcomes[outcome] = waits.outcomes.get(outcome, 0) + 1
    return outcome


async def queue_wait(files: Files, workflows: int) -> None:
    print(f"\n(b) step wait in queue (TaskStarted - TaskQueued), 1 idle worker process, "
          f"{workflows} workflows one after another")  # fmt: skip
    server, _ = private_server()
    since = time.time()
    worker = start_worker(1)
    waits = Waits()
    try:
        await broker.startup()
        await broker.ensure_streams()
        await wait_for_workers(broker, 1, since)
        await one_workflow("warm-up.psd", make_demo_psd(), None)
        started = time.perf_counter()
        for index in range(workflows):
            name, data = files[index % len(files)]
            await one_workflow(name, data, waits)
        elapsed = time.perf_counter() - started
        await broker.shutdown()
    finally:
        stop_worker(worker)
        server.stop()
    outcomes = ", ".join(f"{count} {outcome}" for outcome, count in sorted(waits.outcomes.items()))
    print(f"{workflows} workflows in {elapsed:.1f} s ({outcomes}); "
          f"{len(waits.steps)} steps, {waits.unpaired} queued without a start seen")  # fmt: skip

    def line(label: str, values: list[float]) -> str:
        return (f"  {label:27} n={len(values):4}  p50 {percentile(values, 0.5):6.1f} ms  "
                f"p99 {percentile(values, 0.99):6.1f} ms  max {max(values):6.1f} ms")  # fmt: skip

    if waits.steps:
        print(line("all steps", waits.steps))
        for task_name, values in sorted(waits.by_step.items()):
            print(line(task_name, values))
        record("psd.queue_wait_p50_ms", percentile(waits.steps, 0.5))
        record("psd.queue_wait_p99_ms", percentile(waits.steps, 0.99))
        record("psd.queue_wait_max_ms", max(waits.steps))
        record("psd.queue_wait_steps", len(waits.steps))
        print(f"  step p99 {percentile(waits.steps, 0.99):.1f} ms (target < 50 ms)")
    if waits.orchestrators:
        print(line(f"{PROCESS_TASK} (orchestrator)", waits.orchestrators))
        record("psd.orchestrator_wait_p50_ms", percentile(waits.orchestrators, 0.5))
        record("psd.orchestrator_wait_max_ms", max(waits.orchestrators))


# -- main -------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", help="directories of .psd/.psb files")
    parser.add_argument("--repeat", type=int, default=3, help="runs per file (median)")
    parser.add_argument("--workflows", type=int, default=30, help="workflows for (b)")
    parser.add_argument("--skip-queue", action="store_true", help="leave (b) out")
    parser.add_argument("--json", help="write the figures here (for python -m bench)")
    args = parser.parse_args()
    missing = [directory for directory in args.dirs if not Path(directory).is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(missing)}")
    files = from_dirs(args.dirs) if args.dirs else generated()
    if not files:
        parser.error(f"no .psd or .psb files in {', '.join(args.dirs)}")
    limits = load_settings().psd  # what a worker started from this environment uses
    results = compare(files, limits, max(1, args.repeat))
    accepted = [file for file, result in zip(files, results, strict=True) if result.ok]
    if not args.skip_queue and args.workflows > 0:
        asyncio.run(queue_wait(accepted or files, args.workflows))
    write_results(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
