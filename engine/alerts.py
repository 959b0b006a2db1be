"""Alert rules: each key figure against a warning and a critical threshold, one definition.

``onemanage check`` prints them and the worker's elected evaluator
(engine.alerting) raises and clears alerts on them, so that a threshold means
one thing everywhere. Thresholds have defaults a new user can live with and are
overridden in a TOML file: ``ONEMANAGE_ALERTS_FILE``, else
``<data dir>/alerts.toml`` when it exists (docs/troubleshooting.md shows a
commented example). A rule is pure: figures in, a level and a sentence out.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from engine.settings import Settings

OK, WARNING, CRITICAL = 0, 1, 2


@dataclass(frozen=True)
class Thresholds:
    """Each rule's limits: a figure at or above ``*_warning`` warns, at ``*_critical`` pages."""

    # Messages a durable still has to deliver (TASKS: tasks queued; EVENTS: a listener behind).
    consumer_lag_warning: int = 1_000
    consumer_lag_critical: int = 10_000
    # Messages delivered more than once and not yet acknowledged, per durable.
    redelivered_warning: int = 10
    redelivered_critical: int = 100
    # Dead-lettered tasks and events in the last ``window_s``.
    dead_letters_warning: int = 1
    dead_letters_critical: int = 10
    # Failed share of a task type's finished runs, once it has ``min_runs`` of them.
    failure_rate_warning: float = 0.10
    failure_rate_critical: float = 0.50
    min_runs: int = 20
    window_s: float = 3600.0
    # The account's JetStream storage in use, as a share of its limit (when it has one).
    storage_used_warning: float = 0.80
    storage_used_critical: float = 0.95
    # Age of the oldest task not yet acknowledged (queued or running), in seconds.
    oldest_pending_warning_s: float = 300.0
    oldest_pending_critical_s: float = 1800.0
    # A task type's p95 run time over the last ``percentile_window_s``, once it has ``min_runs``.
    run_p95_warning_ms: float = 60_000.0
    run_p95_critical_ms: float = 600_000.0
    percentile_window_s: float = 900.0
    # A workflow with no step done for ``stuck_after_s`` is stuck; this many of them page.
    stuck_after_s: float = 600.0
    stuck_workflows_critical: int = 10
    # A worker silent for 3 heartbeats is lost; after this long it is counted gone, not lost.
    worker_gone_after_s: float = 600.0
    # The evaluator: how often it looks, and how many looks in a row raise or clear an alert.
    evaluate_every_s: float = 15.0
    raise_after: int = 2
    clear_after: int = 3


class ThresholdsError(ValueError):
    """The thresholds file cannot be used; the message names the file and the key."""


def thresholds_path(settings: Settings) -> Path:
    named = os.environ.get("ONEMANAGE_ALERTS_FILE")
    return Path(named) if named else settings.data_dir / "alerts.toml"


def load_thresholds(settings: Settings) -> Thresholds:
    """The defaults, with what the thresholds file sets (a missing file sets nothing)."""
    path = thresholds_path(settings)
    try:
        text = path.read_text()
    except FileNotFoundError:
        if os.environ.get("ONEMANAGE_ALERTS_FILE"):
            raise ThresholdsError(f"{path}: ONEMANAGE_ALERTS_FILE names no file") from None
        return Thresholds()
    try:
        values = tomllib.loads(text).get("thresholds", {})
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(f"{path}: {exc}") from None
    known = {f.name: f for f in fields(Thresholds)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ThresholdsError(f"{path}: unknown threshold(s) {unknown}; known: {sorted(known)}")
    for name, value in values.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ThresholdsError(f"{path}: {name} must be a number >= 0, not {value!r}")
    for name in ("evaluate_every_s", "raise_after", "clear_after"):
        if name in values and values[name] == 0:
            raise ThresholdsError(f"{path}: {name} must be above 0")
    return replace(Thresholds(), **values)


def _level(value: float, warning: float, critical: float) -> int:
    if value >= critical:
        return CRITICAL
    return WARNING if value >= warning else OK


def consumer_lag(durable: str, pending: int, t: Thresholds) -> tuple[int, str]:
    level = _level(pending, t.consumer_lag_warning, t.consumer_lag_critical)
    return level, (
        f"durable {durable}: {pending:,} to deliver (warning at {t.consumer_lag_warning:,}, "
        f"critical at {t.consumer_lag_critical:,})"
    )


def redelivered(durable: str, count: int, t: Thresholds) -> tuple[int, str]:
    level = _level(count, t.redelivered_warning, t.redelivered_critical)
    return level, (
        f"durable {durable}: {count:,} redelivered and not yet acknowledged (warning at "
        f"{t.redelivered_warning:,}, critical at {t.redelivered_critical:,})"
    )


def dead_letters(count: int, t: Thresholds) -> tuple[int, str]:
    level = _level(count, t.dead_letters_warning, t.dead_letters_critical)
    return level, (
        f"{count:,} dead letter(s) in the last {_seconds(t.window_s)} (warning at "
        f"{t.dead_letters_warning:,}, critical at {t.dead_letters_critical:,}): "
        "see `onemanage events --type task.dead_lettered`"
    )


def failure_rate(task_name: str, failed: int, succeeded: int, t: Thresholds) -> tuple[int, str]:
    runs = failed + succeeded
    if runs < t.min_runs:
        return OK, f"task {task_name}: {failed} of {runs} runs failed (too few to judge)"
    rate = failed / runs
    level = _level(rate, t.failure_rate_warning, t.failure_rate_critical)
    return level, (
        f"task {task_name}: {rate:.0%} of {runs:,} runs failed (warning at "
        f"{t.failure_rate_warning:.0%}, critical at {t.failure_rate_critical:.0%})"
    )


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.0f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.0f} h"


def oldest_pending(age_s: float, t: Thresholds) -> tuple[int, str]:
    level = _level(age_s, t.oldest_pending_warning_s, t.oldest_pending_critical_s)
    return level, (
        f"oldest unacknowledged task queued {_seconds(age_s)} ago (warning at "
        f"{_seconds(t.oldest_pending_warning_s)}, critical at "
        f"{_seconds(t.oldest_pending_critical_s)})"
    )


def run_p95(task_name: str, p95_ms: float | None, runs: int, t: Thresholds) -> tuple[int, str]:
    minutes = t.percentile_window_s / 60
    if p95_ms is None or runs < t.min_runs:
        return OK, f"task {task_name}: {runs} runs in {minutes:g} min (too few for a p95)"
    level = _level(p95_ms, t.run_p95_warning_ms, t.run_p95_critical_ms)
    return level, (
        f"task {task_name}: p95 run time {p95_ms / 1000:.3g} s over {runs:,} runs in the last "
        f"{minutes:g} min (warning at {t.run_p95_warning_ms / 1000:g} s, critical at "
        f"{t.run_p95_critical_ms / 1000:g} s)"
    )


def worker_lost(worker_id: str, silent_s: float, t: Thresholds) -> tuple[int, str]:
    return WARNING, (
        f"worker {worker_id} lost: no heartbeat for {_seconds(silent_s)} and no goodbye "
        f"(counted gone after {_seconds(t.worker_gone_after_s)})"
    )


def stuck_workflows(stuck: list[tuple[str, float]], t: Thresholds) -> tuple[int, str]:
    """``stuck``: (workflow id, seconds since its last progress) of each open workflow."""
    late = sorted((age, wid) for wid, age in stuck if age >= t.stuck_after_s)
    if not late:
        return OK, f"no workflow without progress for {_seconds(t.stuck_after_s)}"
    level = CRITICAL if len(late) >= t.stuck_workflows_critical else WARNING
    shown = ", ".join(f"{wid[:8]} ({_seconds(age)})" for age, wid in late[:5])  # newest
    return level, (
        f"{len(late)} workflow(s) without progress for {_seconds(t.stuck_after_s)} or more: "
        f"{shown} (critical at {t.stuck_workflows_critical}; `onemanage trace ID`)"
    )


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def storage_used(used: int, limit: int, reserved: int, t: Thresholds) -> tuple[int, str]:
    """``limit`` <= 0: the account has none (the server's own store limit still applies)."""
    if limit <= 0:
        return OK, (
            f"JetStream on: {_size(used)} stored, {_size(reserved)} reserved by stream limits; "
            "no account limit (a full server store shows as a worker that cannot store)"
        )
    share = used / limit
    level = _level(share, t.storage_used_warning, t.storage_used_critical)
    return level, (
        f"JetStream on: {_size(used)} of the account's {_size(limit)} stored ({share:.0%}; "
        f"warning at {t.storage_used_warning:.0%}, critical at {t.storage_used_critical:.0%})"
    )
