"""Workflow overhead: end-to-end workflow time against the same service calls in one process.

For each file (default: PSDs this script generates; or every .psd/.psb in the
directories given, e.g. ../shared/fixtures/psd), runs the four service
functions directly in this process (the baseline), then the whole workflow
through a real worker process, and prints both and their ratio. Target: the
orchestration adds at most 15% plus 50 ms per workflow.

Usage: python -m bench.workflow [DIR ...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.common import private_server, start_worker, stop_worker, wait_for_workers
from bench.psd import from_dirs, service
from engine.app import broker
from engine.events.schemas import PsdWorkflowCompleted, PsdWorkflowFailed
from engine.services.samples import make_demo_psd
from engine.submit import SubmitError, follow_workflow, submit_psd


def generated() -> list[tuple[str, bytes]]:
    return [
        ("demo-800x600.psd", make_demo_psd()),
        ("demo-seed7.psd", make_demo_psd(seed=7)),
    ]


def direct(data: bytes) -> tuple[float, str]:
    """The four service functions in this process; (seconds, outcome)."""
    steps, outcome = service(data, broker.settings.psd)
    return sum(steps.values()), outcome


async def end_to_end(name: str, data: bytes) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        submission = await submit_psd(broker, data, name)
    except SubmitError:
        return time.perf_counter() - started, "refused by submit"
    async for event in follow_workflow(broker, submission):
        if isinstance(event, PsdWorkflowCompleted):
            return time.perf_counter() - started, "ok"
        if isinstance(event, PsdWorkflowFailed):
            return time.perf_counter() - started, event.error_code
    raise RuntimeError("the workflow ended without an outcome")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dirs", nargs="*")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    files = from_dirs(args.dirs) if args.dirs else generated()
    server, _ = private_server()
    since = time.time()
    worker = start_worker(1)
    try:
        await broker.startup()
        await broker.ensure_streams()
        await wait_for_workers(broker, 1, since)
        await end_to_end("warm-up.psd", make_demo_psd())
        print(f"{'file':34} {'direct':>9} {'workflow':>9} {'ratio':>6} {'overhead':>9}  outcome")
        within = 0
        for name, data in files:
            base = [direct(data) for _ in range(args.repeat)]
            flow = [await end_to_end(name, data) for _ in range(args.repeat)]
            d = statistics.median(t for t, _ in base)
            w = statistics.median(t for t, _ in flow)
            outcome = flow[0][1]
            if outcome != base[0][1]:
                outcome += f" (direct: {base[0][1]})"
            ok = w <= d * 1.15 + 0.050
            within += ok
            print(
                f"{name[:34]:34} {d * 1000:7.0f}ms {w * 1000:7.0f}ms {w / d:5.2f}x "
                f"{(w - d) * 1000:+7.0f}ms  {outcome}{'' if ok else '  (over target)'}"
            )
        print(f"{within}/{len(files)} files within 15% + 50 ms (median of {args.repeat})")
        await broker.shutdown()
    finally:
        stop_worker(worker)
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
