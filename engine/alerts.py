"""Alert rules: each key figure against a warning and a critical threshold, one definition.

``onemanage check`` evaluates them today; the console and an evaluator in the
worker are to use the same rules (issue 11), so that a threshold means one
thing everywhere. Thresholds have defaults a new user can live with and are
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
    hours = t.window_s / 3600
    return level, (
        f"{count:,} dead letter(s) in the last {hours:g} h (warning at "
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
