"""Every benchmark, each ratio against its baseline measured in the same run, with its target.

Runs bench.tasks, bench.publish, bench.console and bench.psd, each in a process
of its own (each starts its own private server), collects what they measured, prints
every target as "met", "missed" or "not measured", with the machine, and
writes the whole result as JSON. Targets are issue 10's; they are not tests:
a missed one is a figure to improve, not a failure.

Usage: python -m bench [--quick] [--json FILE]   (--quick: small runs, under 2 minutes)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ROOT
from engine.embedded import find_binary

Figures = dict[str, float]

# (module, its arguments in a full run, in a quick one)
RUNS: tuple[tuple[str, list[str], list[str]], ...] = (
    ("bench.tasks", ["--tasks", "3000"], ["--tasks", "1000"]),
    ("bench.publish", ["--events", "2000"], ["--events", "300"]),
    ("bench.console", [], ["--events", "30000", "--presses", "40", "--skip-rss"]),
    ("bench.psd", [], ["--repeat", "2", "--workflows", "10"]),  # generated PSDs
)


@dataclass(frozen=True)
class Target:
    """One figure, how it is computed from the measured ones, and what it must reach."""

    name: str
    value: Callable[[Figures], float]
    goal: float
    at_least: bool = True  # False: the figure must stay below the goal
    unit: str = "x"

    def verdict(self, figures: Figures) -> tuple[float | None, str]:
        try:
            value = self.value(figures)
        except (KeyError, ZeroDivisionError):
            return None, "not measured"
        met = value >= self.goal if self.at_least else value < self.goal
        return value, "met" if met else "missed"


def _ratio(top: str, bottom: str) -> Callable[[Figures], float]:
    return lambda f: f[top] / f[bottom]


TARGETS = (
    Target("default worker, 1 process / stock fetch 1",
           _ratio("tasks.engine_1p.per_s", "tasks.stock_fetch1.per_s"), 1.0),
    Target("default worker, 2 processes / stock fetch 1",
           _ratio("tasks.engine_2p.per_s", "tasks.stock_fetch1.per_s"), 1.0),
    Target("engine alone (lifecycle events off) / stock fetch 10",
           _ratio("tasks.engine_alone.per_s", "tasks.stock_fetch10.per_s"), 1.0),
    *(
        Target(f"publish_event / raw js.publish, {c} in flight",
               _ratio(f"publish.c{c}.new_per_s", f"publish.c{c}.raw_per_s"), 0.8)
        for c in (1, 10, 100)
    ),
    Target("console ingest end to end (events/s)",
           lambda f: f["console.ingest.end_to_end_per_s"], 50_000, unit=" ev/s"),
    Target("console ingest / its own in-memory decode + fold",
           _ratio("console.ingest.end_to_end_per_s", "console.ingest.in_memory_per_s"), 0.9),
    Target("console key -> first screen update p95 at 5,000 ev/s (ms)",
           lambda f: f["console.keys.painted_p95_ms"], 100, at_least=False, unit=" ms"),
    Target("console RSS growth over 1M events (MB)",
           lambda f: f["console.rss.growth_mb"], 100, at_least=False, unit=" MB"),
    Target("PSD service / psd-tools open + composite (median)",
           lambda f: f["psd.service_over_psd_tools"], 3.0, at_least=False),
    Target("PSD step wait in queue p99 on an idle worker (ms)",
           lambda f: f["psd.queue_wait_p99_ms"], 50, at_least=False, unit=" ms"),
)  # fmt: skip


def machine() -> dict[str, str]:
    versions = {}
    for package in ("nats-py", "taskiq", "taskiq-nats", "textual", "psd-tools", "pydantic"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "-"
    server = subprocess.run(
        [str(find_binary()), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nats-server": server,
        **versions,
    }


def run(module: str, arguments: list[str]) -> Figures:
    """One benchmark in a process of its own; its output goes through, its figures come back."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = Path(handle.name)
    print(f"\n=== python -m {module} {' '.join(arguments)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, *arguments, "--json", str(path)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )  # fmt: skip
    print(f"=== {module}: exit {done.returncode} in {time.perf_counter() - started:.0f} s")
    try:
        figures: Figures = json.loads(path.read_text() or "{}")
    except ValueError:
        figures = {}
    path.unlink(missing_ok=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs (under 2 minutes)")
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "latest.json",
        help="where to write the result (default: %(default)s)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    figures: Figures = {}
    for module, full, quick in RUNS:
        figures |= run(module, quick if args.quick else full)
    about = machine()
    print("\n=== targets (issue 10), each against its baseline in this run")
    print(", ".join(f"{key} {value}" for key, value in about.items()))
    verdicts = []
    for target in TARGETS:
        value, verdict = target.verdict(figures)
        shown = "-" if value is None else f"{value:,.2f}{target.unit}"
        goal = f"{'>=' if target.at_least else '<'} {target.goal:,g}{target.unit}"
        print(f"  {target.name:60} {shown:>14}  target {goal:>14}  {verdict}")
        verdicts.append({"target": target.name, "value": value, "goal": goal, "verdict": verdict})
    elapsed = time.perf_counter() - started
    print(f"{'quick' if args.quick else 'full'} run in {elapsed:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "when": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "seconds": round(elapsed, 1),
        "machine": about,
        "targets": verdicts,
        "figures": figures,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"result: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
