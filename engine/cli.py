"""`onemanage`: run the embedded server, workers, and look at the system.

With no ONEMANAGE_NATS_URL every command uses the embedded nats-server of the
data directory: the first command starts it, the others reuse it, so
`onemanage worker` in one terminal and `onemanage submit` in another just work.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import importlib
import importlib.metadata
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import embedded
from engine.eventlines import parse_duration
from engine.redaction import redact, redact_logging
from engine.settings import Settings, load_settings

if TYPE_CHECKING:
    from engine.events.schemas import BaseEvent

logger = logging.getLogger("onemanage")


def _embedded_or_exit(settings: Settings) -> embedded.EmbeddedServer:
    try:
        return embedded.ensure(settings.data_dir)
    except embedded.EmbeddedServerError as exc:
        sys.exit(f"onemanage: {exc}")


# -- server -------------------------------------------------------------------------


def _server_config(args: argparse.Namespace) -> int:
    """Write a configuration with the three roles, and their credentials, for your servers."""
    import secrets

    from engine import credentials
    from engine.roles import ROLES
    from engine.serverconf import Plan, server_configs

    out: Path = args.out.resolve()
    if args.tls_cert and not args.tls_key:
        sys.exit("onemanage: --tls-cert needs --tls-key")
    routes = tuple(r.strip() for r in (args.cluster or "").split(",") if r.strip())
    if len(routes) == 1:
        sys.exit("onemanage: a cluster needs at least 2 nodes (3 for JetStream to survive one)")
    plan = Plan(
        host=args.host,
        port=args.port or 4222,
        monitor_port=args.monitor_port,
        store_dir=(args.store or out / "store").resolve(),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        routes=routes,
    )
    directory = out / "credentials"
    found = credentials.ensure(directory, ROLES)
    route_file = directory / "route.password"
    if not route_file.exists():
        credentials.write_private(route_file, secrets.token_urlsafe(32))
    files = server_configs(plan, found, route_file.read_text().strip())
    for name, text in files.items():
        credentials.write_private(out / name, text)
    print(f"wrote {', '.join(files)} and the credentials of {', '.join(ROLES)} to {out} (0600)")
    first = next(iter(files))
    print(f"run: nats-server -c {out / first}" + (" (one file per node)" if routes else ""))
    scheme = "tls" if plan.tls_cert else "nats"
    print("connect, on each machine:")
    nodes = [f"{scheme}://{plan.host}:{port}" for port in plan.client_ports()]
    print(f"  export ONEMANAGE_NATS_URL={','.join(nodes)}")
    print(f"  export ONEMANAGE_CREDENTIALS_DIR={directory}")
    print("  each command uses its role's file there: worker (onemanage worker), operator")
    print("  (submit, the console), viewer (status, check); give a machine only the files")
    print("  of the roles it needs. Roles and permissions: docs/security.md")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    if args.action == "config":
        return _server_config(args)
    settings = load_settings()
    data_dir = settings.data_dir
    running = embedded.find_running(data_dir)
    if args.action == "status":
        if running is None:
            print(f"no embedded nats-server running in {data_dir}")
            return 1
        print(
            f"embedded nats-server {running.url} (pid {running.pid}, monitor {running.monitor_url})"
        )
        print(f"store: {embedded.store_dir(data_dir)}")
        print(f"credentials: {embedded.credentials_dir(data_dir)} (one file per role, 0600)")
        return 0
    if args.action == "stop":
        if running is None:
            print(f"no embedded nats-server running in {data_dir}")
            return 0
        running.stop()
        print(f"stopped nats-server pid {running.pid}")
        return 0
    if running is not None:
        print(
            f"already running: {running.url} (pid {running.pid}); `onemanage server stop` stops it"
        )
        return 1
    try:
        server = embedded.start(data_dir, port=args.port, detach=False)
    except embedded.EmbeddedServerError as exc:
        sys.exit(f"onemanage: {exc}")
    print(f"nats-server {server.url} (pid {server.pid}, monitor {server.monitor_url})")
    print(f"store: {embedded.store_dir(data_dir)}   log: {embedded.log_file(data_dir)}")
    print("Ctrl-C stops it.")
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop and server.process is not None and server.process.poll() is None:
        time.sleep(0.2)
    server.stop()
    print("stopped")
    return 0


# -- worker -------------------------------------------------------------------------


def _import_or_exit(modules: Sequence[str]) -> None:
    """Import the worker's modules here first: a wrong name or a broken module stops it.

    taskiq's own import only logs a warning and runs without them, so every task
    of a missing module would be handed back until it is dead-lettered.
    """
    from taskiq.cli.utils import add_cwd_in_path

    for name in modules:
        try:
            with add_cwd_in_path():
                importlib.import_module(name)
        except Exception as exc:
            sys.exit(f"onemanage: cannot import {name}: {type(exc).__name__}: {exc}")


def _metrics_dir() -> Path:
    """prometheus-client's multiprocess directory, set before anything imports the library."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess dir was set")
    directory = Path(tempfile.mkdtemp(prefix="onemanage-metrics-"))  # 0700
    atexit.register(shutil.rmtree, directory, True)  # the command's process only: children _exit
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def cmd_worker(args: argparse.Namespace) -> int:
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker

    metrics_dir = _metrics_dir() if args.metrics_port is not None else None
    from engine.app import BUILTIN_MODULES, WORKER_PARENT

    os.environ[WORKER_PARENT] = str(os.getpid())  # its processes die with it (engine.app)
    modules = list(args.modules or BUILTIN_MODULES)
    _import_or_exit(modules)
    settings = load_settings()
    server = None
    if settings.embedded:
        server = _embedded_or_exit(settings)
        os.environ["ONEMANAGE_NATS_URL"] = server.url  # the children connect, never start
        os.environ["ONEMANAGE_CREDENTIALS_DIR"] = str(server.credentials_dir)
        how = "started" if server.owned else "reusing"
        store = embedded.store_dir(settings.data_dir)
        print(f"{how} embedded nats-server {server.url} (store {store})")
    if args.concurrency:
        os.environ["ONEMANAGE_CONCURRENCY"] = str(args.concurrency)
    worker_args = WorkerArgs(
        broker="engine.app:broker",
        modules=modules,
        workers=args.processes,
        log_level=args.log_level,
        max_async_tasks=10_000,  # lanes bound concurrency; see engine.lanes.Lane
        shutdown_timeout=10.0,
        wait_tasks_timeout=args.drain_timeout,
    )
    if metrics_dir is not None:
        from engine import metrics

        try:
            metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as exc:
            sys.exit(
                f"onemanage: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {exc}"
            )
        print(f"metrics on http://{args.metrics_host}:{args.metrics_port}/metrics")
    try:
        status = run_worker(worker_args)
    finally:
        for child in multiprocessing.active_children():  # drain: let them finish
            child.join()
        if server is not None:
            print(f"embedded nats-server: {server.release()}")
    return int(status or 0)


# -- status and check ---------------------------------------------------------------


def _client(coro_factory: Callable[[], Awaitable[int]]) -> int:
    """Run ``coro_factory`` with the broker started as a client."""
    from engine.app import broker
    from engine.errors import PermissionDeniedError

    async def run() -> int:
        try:
            await broker.startup()
        except Exception as exc:
            why = redact(f"{type(exc).__name__}: {exc}")
            print(f"onemanage: cannot connect: {why}", file=sys.stderr)
            return 2
        try:
            return await coro_factory()
        except PermissionDeniedError as exc:  # the role's rights, not a fault: no traceback
            print(f"onemanage: {exc} (connected as {broker.role})", file=sys.stderr)
            return 2
        finally:
            await broker.shutdown()

    return asyncio.run(run())


async def _status(as_json: bool) -> int:
    """Streams, consumers, live workers and task statistics: one screen, or one JSON document.

    It only reads (the viewer role): stream and consumer info, heartbeats and
    statistics by direct get, so it leaves nothing on the server.
    """
    from engine import alerts, counts, liveness, monitor, statusview
    from engine.app import broker
    from engine.events import windows
    from engine.events.stats import read_task_stats
    from engine.streams import EVENTS, TASKS

    try:
        limits = alerts.load_thresholds(broker.settings)
    except alerts.ThresholdsError as exc:
        print(f"onemanage: {exc}; default thresholds used", file=sys.stderr)
        limits = alerts.Thresholds()
    streams = {name: await monitor.stream_figures(broker, name) for name in (TASKS, EVENTS)}
    consumers = await monitor.consumer_figures(broker)
    census = await liveness.census(broker, limits.worker_gone_after_s, limits.window_s)
    workers = census.live
    stats_error = None
    try:
        stats = await read_task_stats(broker)
    except Exception as exc:
        stats, stats_error = [], redact(f"{type(exc).__name__}: {exc}")
    now = datetime.now(UTC)
    hours = [windows.window(s.recent, now) for s in stats]
    figures = counts.counts(stats)
    if as_json:
        document = {
            "server": redact(", ".join(broker.servers())),
            "streams": {
                name: None if figures is None else dataclasses.asdict(figures)
                for name, figures in streams.items()
            },
            "consumers": [{**dataclasses.asdict(c), "impossible": c.impossible} for c in consumers],
            "workers": [w.model_dump(mode="json") for w in workers],
            "worker_groups": [g.as_dict() for g in liveness.group_workers(workers)],
            "workers_lost": [
                {"worker_id": lost.beat.worker_id, "silent_s": round(lost.silent_s, 1)}
                for lost in census.lost
            ],
            "workers_gone": census.gone,
            "worker_gone_after_s": limits.worker_gone_after_s,
            "counts": None if stats_error else figures.as_dict(),
            "task_stats": [
                {**s.model_dump(mode="json", exclude={"recent"}), "last_hour": hour.as_dict()}
                for s, hour in zip(stats, hours, strict=True)
            ],
            "task_stats_error": stats_error,
        }
        print(json.dumps(document, indent=2, default=str))
        return 0
    print(f"server: {redact(', '.join(broker.servers()))}")
    blocks = [statusview.streams(streams), statusview.consumers(consumers)]
    blocks.append(statusview.workers(census, limits.worker_gone_after_s))
    if stats_error:
        blocks.append([f"task statistics unavailable: {stats_error}"])
    else:
        blocks.append(statusview.counts(figures))
    if stats:
        blocks.append(statusview.last_hour(stats, hours))
    print("\n\n".join("\n".join(block) for block in blocks))
    return 0


async def _check(as_json: bool) -> int:
    """One line per finding (or one JSON document); exit with the worst, Nagios-style.

    0 ok, 1 a warning, 2 something critical (an unreachable server too), 3 unknown:
    the check itself could not finish (its role may not read something, or it
    met an error it has no finding for). Never a traceback.
    """
    from engine import health
    from engine.app import broker
    from engine.errors import PermissionDeniedError

    found: list[health.Finding] = []

    def note(finding: health.Finding) -> None:
        found.append(finding)
        if not as_json and not finding.quiet:
            print(f"{finding.label} {finding.text}", flush=True)

    try:
        await broker.startup()
    except Exception as exc:
        note(
            health.Finding(health.CRITICAL, redact(f"cannot connect: {type(exc).__name__}: {exc}"))
        )
    else:
        try:
            async for finding in health.findings():
                note(finding)
        except PermissionDeniedError as exc:
            note(health.Finding(health.UNKNOWN, f"{exc} (connected as {broker.role})"))
        except Exception as exc:
            why = redact(f"{type(exc).__name__}: {exc}")
            note(health.Finding(health.UNKNOWN, f"the check could not finish: {why}"))
        finally:
            await broker.shutdown()
    code = health.worst(found)
    if as_json:
        document = {
            "status": health.NAMES[code],
            "code": code,
            "findings": [finding.as_dict() for finding in found],
        }
        print(json.dumps(document, indent=2))
    return code


async def _events(since: timedelta, pattern: str | None, follow: bool, ndjson: bool) -> int:
    """Stored events of the last ``since`` in order, then live ones with ``follow``."""
    from engine import eventlines, monitor
    from engine.app import broker
    from engine.events.schemas import parse_event

    reader = monitor.EventReader(
        broker, datetime.now(UTC) - since, eventlines.subject_for(pattern or "*")
    )

    def show(delivered: monitor.Delivered) -> None:
        event = parse_event(delivered.data, delivered.subject)
        if not eventlines.matches(pattern, event.event_type):
            return
        if ndjson:
            fields = eventlines.as_json(event, delivered.seq, delivered.subject, delivered.data)
            line = json.dumps(fields)
        else:
            line = eventlines.as_line(event, delivered.seq, delivered.subject)
        print(line, flush=follow)

    if follow:
        async for batch in reader.follow():
            for delivered in batch:
                show(delivered)
    else:
        async for delivered in reader.history():
            show(delivered)
    return 0


async def _trace(prefix: str, since: timedelta, follow: bool, as_json: bool) -> int:
    """Every event of one task, workflow or correlation id (any unique prefix), in time order
    (live ones under ``--follow`` as they arrive)."""
    from engine import monitor, tracing
    from engine.app import broker
    from engine.events.schemas import BaseEvent, parse_event

    history: list[tuple[int, BaseEvent]] = []
    last_seq = 0
    async for delivered in monitor.read_history(broker, datetime.now(UTC) - since):
        last_seq = delivered.seq
        event = parse_event(delivered.data, delivered.subject)
        if isinstance(event, BaseEvent):
            history.append((delivered.seq, event))
    try:
        full_id = tracing.resolve(prefix, (event for _, event in history))
    except tracing.AmbiguousIdError as exc:
        print(f"onemanage: {exc}; give more of it", file=sys.stderr)
        return 2
    except tracing.IdNotFoundError as exc:
        print(f"onemanage: {exc} in the last {since} (--since goes further back)", file=sys.stderr)
        return 1
    # In time order, as the console's timeline: a kick's "queued" is stored after a fast
    # worker's "started", but stamped before the kick.
    mine = sorted(
        ((seq, event) for seq, event in history if full_id in tracing.ids_of(event)),
        key=lambda pair: (pair[1].timestamp, pair[0]),
    )
    lines: list[dict[str, Any]] = []

    def show(seq: int, event: BaseEvent) -> None:
        first = (mine or [(seq, event)])[0][1].timestamp
        previous = lines[-1]["timestamp"] if lines else event.timestamp
        offset = (event.timestamp - first).total_seconds() * 1000
        gap = (event.timestamp - previous).total_seconds() * 1000
        lines.append({"seq": seq, "offset_ms": offset, "gap_ms": gap, "timestamp": event.timestamp})
        if not as_json:
            what = getattr(event, "task_name", None) or getattr(event, "step", None) or ""
            task = getattr(event, "task_id", None) or ""
            print(f"+{offset:10.1f} ms  (+{gap:9.1f})  {event.event_type:24} {what:20} {task}",
                  flush=follow)  # fmt: skip

    if not as_json:
        print(f"trace of {full_id}")
    for seq, event in mine:
        show(seq, event)
    if follow and not any(tracing.ended(full_id, event) for _, event in mine):
        reader = monitor.EventReader(broker, last_seq + 1)
        async for batch in reader.follow():
            done = False
            for delivered in batch:
                event = parse_event(delivered.data, delivered.subject)
                if isinstance(event, BaseEvent) and full_id in tracing.ids_of(event):
                    mine.append((delivered.seq, event))
                    show(delivered.seq, event)
                    done = done or tracing.ended(full_id, event)
            if done:
                break
    events = [event for _, event in mine]
    runs = tracing.steps(events)
    if as_json:
        document = {
            "id": full_id,
            "events": [
                {
                    "seq": line["seq"],
                    "offset_ms": line["offset_ms"],
                    "gap_ms": line["gap_ms"],
                    **event.model_dump(mode="json"),
                }
                for line, event in zip(lines, events, strict=True)
            ],
            "steps": [dataclasses.asdict(run) for run in runs],
        }
        print(json.dumps(document, indent=2, default=str))
    elif runs and events:
        start, end = events[0].timestamp, events[-1].timestamp
        print()
        for run in runs:
            took = f"{((run.finished or end) - run.started).total_seconds() * 1000:.0f} ms"
            print(f"{run.task_name:20} |{tracing.bar(run, start, end)}| {took:>9} {run.outcome}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    try:
        return _client(lambda: _trace(args.id, args.since, args.follow, args.json))
    except KeyboardInterrupt:  # --follow ends with Ctrl-C too
        return 0


def cmd_events(args: argparse.Namespace) -> int:
    for module in args.imports:  # event types of your own, so they read as events
        importlib.import_module(module)
    try:
        return _client(lambda: _events(args.since, args.type, args.follow, args.ndjson))
    except KeyboardInterrupt:  # --follow ends with Ctrl-C
        return 0


# -- submit and artefacts -----------------------------------------------------------


def _upload_progress(name: str, size: int) -> Callable[[int, int], None] | None:
    """A progress line on stderr for uploads big enough to wait for."""
    if size < 4 * 1024 * 1024:
        return None
    shown = -1

    def show(sent: int, total: int) -> None:
        nonlocal shown
        percent = sent * 100 // max(total, 1)
        if percent // 5 != shown // 5:
            shown = percent
            end = "\n" if sent >= total else ""
            print(f"\r  uploading {name}: {percent:3d}% of {total / 1024**2:.1f} MiB",
                  end=end, file=sys.stderr, flush=True)  # fmt: skip

    return show


def _describe(event: BaseEvent) -> str:
    from engine.events.schemas import (
        PsdStepCompleted,
        PsdWorkflowCompleted,
        PsdWorkflowFailed,
        TaskFailed,
    )

    if isinstance(event, PsdStepCompleted):
        facts = ", ".join(f"{k} {v}" for k, v in event.summary.items() if not isinstance(v, dict))
        return f"step {event.step:<8} done in {event.duration_ms:8.0f} ms   {facts}"
    if isinstance(event, PsdWorkflowCompleted):
        return f"COMPLETED in {event.duration_ms:.0f} ms\n" + _manifest_text(event.manifest)
    if isinstance(event, PsdWorkflowFailed):
        return f"FAILED at step {event.step}: {event.error_code}: {event.error_message}"
    if isinstance(event, TaskFailed) and event.will_retry:
        return f"{event.task_name} attempt {event.attempt} failed, retrying: {event.error_message}"
    return ""


def _manifest_text(m: dict[str, Any]) -> str:
    """The manifest as a person reads it; `onemanage artefacts` fetches the files."""
    doc, layers, preview = m["document"], m["layers"], m["preview"]
    kinds = ", ".join(f"{kind} {count}" for kind, count in layers["by_kind"].items())
    timings = ", ".join(f"{step} {ms:.0f} ms" for step, ms in m["timings_ms"].items())
    lines = [
        f"document   {doc['width']}x{doc['height']} {doc['color_mode']} {doc['depth']}-bit "
        f"{doc['format']}, {doc['layer_count']} layers"
        f"{', stored composite' if doc['has_composite'] else ''}",
        f"layers     {kinds}; {layers['visible']} visible; depth {layers['max_depth']}",
        f"top level  {', '.join(layers['top_level'])}",
        f"preview    {preview['key']} ({preview['width']}x{preview['height']}, "
        f"from the {preview['source']}), thumbnail {preview['thumbnail_key']}",
        f"layer PNGs {len(m['layer_images'])} under {m['workflow_id']}/layers/",
        f"timings    {timings}",
        f"fetch them onemanage artefacts {m['workflow_id']} --out DIR",
    ]
    if layers["fonts"]:
        lines.insert(3, f"fonts      {', '.join(layers['fonts'])}")
    return "\n".join(f"    {line}" for line in lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.services.samples import make_demo_psd

    args.out.write_bytes(make_demo_psd())
    print(f"wrote {args.out}: submit it with `onemanage submit {args.out} --wait`")
    return 0


async def _submit(paths: list[str], wait: bool) -> int:
    from engine import liveness
    from engine.app import broker
    from engine.errors import PublishError
    from engine.events.schemas import PsdWorkflowCompleted
    from engine.storage import StorageError
    from engine.submit import Submission, SubmitError, follow_workflow, read_psd_file, submit_psd

    # No ensure_streams here: creating streams is the worker's right, not the operator's.
    # Every file is checked before any is uploaded: one bad file of many starts nothing.
    files: list[tuple[Path, bytes]] = []
    refused = []
    for name in paths:
        try:
            files.append((Path(name), read_psd_file(Path(name), broker.settings.max_upload_bytes)))
        except SubmitError as exc:
            refused.append(exc)
    if refused:
        for refusal in refused:
            print(f"onemanage: {refusal}", file=sys.stderr)
        print(f"onemanage: nothing submitted ({len(refused)} of {len(paths)} file(s) refused)",
              file=sys.stderr)  # fmt: skip
        return 1
    submissions: list[Submission] = []
    failed = 0
    for path, data in files:
        try:
            progress = _upload_progress(path.name, len(data))
            submission = await submit_psd(broker, data, path.name, progress)
        except (SubmitError, StorageError) as exc:
            print(f"onemanage: {exc}", file=sys.stderr)
            failed += 1
            continue
        except PublishError as exc:  # says whether the workflow may run anyway
            print(f"onemanage: {path.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        submissions.append(submission)
        print(f"{submission.workflow_id}  {path.name}  ({len(data):,} bytes)")
    if not wait or not submissions:
        return 1 if failed else 0
    if not await liveness.live_workers(broker):
        print("no live worker yet: the workflows are queued and run when `onemanage worker` "
              "starts", file=sys.stderr)  # fmt: skip

    async def follow(submission: Submission) -> bool:
        completed = False
        async for event in follow_workflow(broker, submission):
            line = _describe(event)
            if line:
                print(f"{submission.workflow_id[:8]}  {submission.filename}: {line}", flush=True)
            completed = isinstance(event, PsdWorkflowCompleted)
        return completed

    outcomes = await asyncio.gather(*(follow(s) for s in submissions))
    return 0 if all(outcomes) and not failed else 1


async def _act(action: str, target: str, reason: str, wait: bool) -> int:
    """One operator action (engine.actions): 0 done or queued, 1 its outcome failed under
    --wait (or the server could not confirm it), 2 refused (nothing was changed)."""
    from engine import actions, monitor, tracing
    from engine.app import broker
    from engine.errors import PublishError
    from engine.events.schemas import PsdWorkflowCompleted, PsdWorkflowFailed, TaskSucceeded

    since = datetime.now(UTC) - timedelta(seconds=1)
    try:
        if action == "replay":
            outcome = await actions.replay_dead_letter(broker, target)
        elif action == "cancel":
            outcome = await actions.cancel_workflow(broker, target, reason)
        elif action == "retry":
            outcome = await actions.retry_workflow(broker, target)
        else:
            outcome = await actions.resubmit_workflow(broker, target)
    except actions.ActionRefused as exc:
        print(f"onemanage: {action} refused: {exc}", file=sys.stderr)
        return 2
    except PublishError as exc:  # says whether it may happen anyway
        print(f"onemanage: {action}: {exc}", file=sys.stderr)
        return 1
    print(f"{outcome.new_id or outcome.target}  {outcome.detail}", flush=True)
    if not wait:
        return 0
    followed = outcome.new_id or outcome.target
    async for event in monitor.follow(broker, since):
        if followed not in tracing.ids_of(event) or not tracing.ended(followed, event):
            continue
        line = _describe(event) or event.event_type
        print(f"{followed[:8]}: {line}", flush=True)
        if action == "cancel":
            return (
                0 if isinstance(event, PsdWorkflowFailed) and event.error_code == "cancelled" else 1
            )
        return 0 if isinstance(event, PsdWorkflowCompleted | TaskSucceeded) else 1
    return 1


def _add_action(commands: Any, name: str, target: str, what: str, help_text: str) -> Any:
    """A subcommand for one operator action, with --wait and the exit codes in its help."""
    parser = commands.add_parser(
        name,
        help=help_text,
        description=f"{help_text}. Exit codes: 0 done (or queued, without --wait), 1 the "
        "outcome failed (with --wait) or the server could not confirm the action, 2 refused "
        "(a line with the reason's code; nothing was changed) or not allowed.",
    )
    parser.add_argument(target, help=f"{what}, or a unique prefix of it")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow until the outcome; exit 1 on failure (default: return once queued)",
    )
    return parser


async def _artefacts(workflow_id: str, out: Path) -> int:
    from engine.app import broker
    from engine.downloads import DownloadError, download_artefacts

    try:
        written = await download_artefacts(broker, workflow_id, out)
    except DownloadError as exc:
        print(f"onemanage: {exc}" if exc.code == "ambiguous_id" else str(exc), file=sys.stderr)
        return 2 if exc.code == "ambiguous_id" else 1
    print(f"{len(written) - 1} files and manifest.json written to {out}")
    return 0


# -- entry point --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onemanage", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level",
        default="WARNING",
        help="DEBUG, INFO, WARNING or ERROR (default: %(default)s)",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {importlib.metadata.version('onemanage')}"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser(
        "server",
        help="run the embedded nats-server (foreground), or write a config for your own",
        description="run: the embedded server in the foreground; status, stop: the running "
        "one; config: write a nats-server configuration with the worker, operator and "
        "viewer roles and their generated credentials (docs/security.md)",
    )
    server.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=["run", "status", "stop", "config"],
        help="what to do (default: run)",
    )
    server.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port (default: run: a free one; config: 4222)",
    )
    config = server.add_argument_group("config")
    config.add_argument(
        "--out",
        type=Path,
        default=Path("onemanage-server"),
        help="directory for the config and credentials (default: %(default)s)",
    )
    config.add_argument(
        "--host", default="127.0.0.1", help="client address to listen on (default: %(default)s)"
    )
    config.add_argument(
        "--monitor-port",
        type=int,
        default=8222,
        help="HTTP monitoring port, always on 127.0.0.1 (default: %(default)s)",
    )
    config.add_argument(
        "--store", type=Path, default=None, help="JetStream store directory (default: OUT/store)"
    )
    config.add_argument(
        "--tls-cert", type=Path, help="server certificate (PEM): clients use TLS (default: none)"
    )
    config.add_argument("--tls-key", type=Path, help="its private key (PEM) (default: none)")
    config.add_argument(
        "--tls-ca", type=Path, help="CA to verify client certificates with (default: none)"
    )
    config.add_argument("--cluster", metavar="HOST:PORT,...",
                        help="route address of every node: one config file per node "
                             "(default: a single server)")  # fmt: skip
    server.set_defaults(func=cmd_server)

    worker = commands.add_parser(
        "worker",
        help="run headless workers",
        description="Start worker processes (2 by default, see -p) under this command: they "
        "show as one worker (host:pid of this command) and die with it.",
    )
    worker.add_argument(
        "modules",
        nargs="*",
        help="modules whose tasks and listeners to run (default: engine.builtin, the PSD "
        "workflow and the audit-log and task-stats listeners; name it beside yours for both)",
    )
    worker.add_argument(
        "-p", "--processes", type=int, default=2, help="worker processes (default: %(default)s)"
    )
    worker.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=0,
        help="tasks at once per process (default: ONEMANAGE_CONCURRENCY, else 10)",
    )
    worker.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds to wait for running tasks on SIGTERM (default: no limit)",
    )
    worker.add_argument(
        "--metrics-port", type=int, default=None, metavar="N",
        help="serve Prometheus metrics on this port (default: none)",
    )  # fmt: skip
    worker.add_argument(
        "--metrics-host", default="127.0.0.1",
        help="address the metrics listen on (default: %(default)s; 0.0.0.0 for every one)",
    )  # fmt: skip
    worker.set_defaults(func=cmd_worker)

    status = commands.add_parser(
        "status", help="streams, consumers, workers, task statistics (read-only)"
    )
    status.add_argument(
        "--json", action="store_true", help="print it as one JSON document (default: text)"
    )
    status.set_defaults(func=lambda args: _client(lambda: _status(args.json)))

    submit = commands.add_parser("submit", help="submit PSD/PSB files to the workflow")
    submit.add_argument("files", nargs="+", help="PSD or PSB files, each a workflow")
    submit.add_argument(
        "--wait",
        action="store_true",
        help="follow until done; exit 1 on failure (default: return once queued)",
    )
    submit.set_defaults(func=lambda args: _client(lambda: _submit(args.files, args.wait)))

    demo = commands.add_parser("demo", help="write a generated layered demo PSD")
    demo.add_argument(
        "--out", type=Path, default=Path("demo.psd"), help="file to write (default: %(default)s)"
    )
    demo.set_defaults(func=cmd_demo)

    artefacts = commands.add_parser("artefacts", help="download a workflow's preview and layers")
    artefacts.add_argument("workflow_id", help="the workflow's id, or a unique prefix of it")
    artefacts.add_argument(
        "--out", type=Path, default=Path("."), help="directory to write to (default: %(default)s)"
    )
    artefacts.set_defaults(
        func=lambda args: _client(lambda: _artefacts(args.workflow_id, args.out))
    )

    events = commands.add_parser(
        "events",
        help="stored events in order, as lines or NDJSON (for scripts and jq)",
        description="the events of the last --since, oldest first, then, with --follow, live "
        "ones until Ctrl-C; unreadable ones are shown, marked, with the reason",
    )
    events.add_argument(
        "--since", type=parse_duration, default=timedelta(minutes=10),
        help="how far back to start: 90s, 10m, 1h, 2d (default: 10m)",
    )  # fmt: skip
    events.add_argument(
        "--type", default=None, metavar="PATTERN",
        help="event types to show, shell-style: 'psd.*', 'task.failed' (default: all)",
    )  # fmt: skip
    events.add_argument(
        "--follow",
        action="store_true",
        help="go on with live events until Ctrl-C (default: stop now)",
    )
    events.add_argument(
        "--ndjson", action="store_true", help="one JSON object per line (default: text lines)"
    )
    events.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE",
        help="a module defining your own event types, so they read as events "
        "(repeatable; default: none)",
    )  # fmt: skip
    events.set_defaults(func=cmd_events)

    trace = commands.add_parser(
        "trace",
        help="every event of a task, workflow or correlation id, in order, with the gaps",
        description="any unique prefix of the id works (the 8 characters the console shows); "
        "an ambiguous one is refused with the candidates",
    )
    trace.add_argument("id", help="a task, workflow or correlation id, or a unique prefix of it")
    trace.add_argument(
        "--since", type=parse_duration, default=timedelta(days=1),
        help="how far back to look for it: 90s, 10m, 1h, 2d (default: 1d)",
    )  # fmt: skip
    trace.add_argument(
        "--follow", action="store_true", help="stay live until it ends (default: stop now)"
    )
    trace.add_argument(
        "--json", action="store_true", help="print it as one JSON document (default: text)"
    )
    trace.set_defaults(func=cmd_trace)

    replay = _add_action(
        commands, "replay", "id", "the dead-lettered task's id or its dead letter's event id",
        "send a dead-lettered task's stored payload again as a new task, linked to it",
    )  # fmt: skip
    replay.set_defaults(func=lambda args: _client(lambda: _act("replay", args.id, "", args.wait)))
    cancel = _add_action(
        commands, "cancel", "workflow_id", "the workflow's id",
        "end a running, queued or stuck workflow with one failure of code cancelled",
    )  # fmt: skip
    cancel.add_argument(
        "--reason", default="", metavar="TEXT",
        help="why, shown in the failure's message (default: none)",
    )  # fmt: skip
    cancel.set_defaults(
        func=lambda args: _client(lambda: _act("cancel", args.workflow_id, args.reason, args.wait))
    )
    for name, text in (
        ("retry", "run a failed (or cancelled) workflow again from its stored input, linked"),
        ("resubmit", "run any workflow's stored input again as a new workflow, linked"),
    ):
        again = _add_action(commands, name, "workflow_id", "the workflow's id", text)
        again.set_defaults(
            func=lambda args, name=name: _client(
                lambda: _act(name, args.workflow_id, "", args.wait)
            )
        )

    check = commands.add_parser(
        "check",
        help="health check: connection, streams, workers (exit 0 ok, 1 warning, 2 critical, "
        "3 unknown)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="print the findings as one JSON document (default: lines)",
    )
    check.set_defaults(func=lambda args: asyncio.run(_check(args.json)))
    return parser


# Whose credentials each command connects with (engine.roles): a look needs no more
# than the viewer's rights, a submission the operator's.
ROLE_OF_COMMAND = {
    "worker": "worker",
    "submit": "operator",
    "replay": "operator",
    "cancel": "operator",
    "retry": "operator",
    "resubmit": "operator",
    "status": "viewer",
    "check": "viewer",
    "events": "viewer",
    "trace": "viewer",
    "artefacts": "viewer",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ROLE_OF_COMMAND:  # before anything reads the settings
        os.environ["ONEMANAGE_ROLE"] = ROLE_OF_COMMAND[args.command]
    args.log_level = args.log_level.upper()
    if args.command == "worker" and args.log_level == "WARNING":
        args.log_level = "INFO"  # a service says what it does
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact_logging()
    if args.log_level == "INFO":  # not a line per task and per event
        logging.getLogger("taskiq.receiver.receiver").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (`| head`, a jq that quit): stop quietly, as a shell tool does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer stopped that way


if __name__ == "__main__":
    sys.exit(main())
