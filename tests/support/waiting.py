"""eventually(): the one way a test waits, for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from textual.pilot import Pilot

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    timeout: float = 60,
    what: str | Callable[[], str] = "",
    interval: float = 0.05,
) -> T:
    """Call ``check`` until it returns something true, and return that.

    ``check`` may be sync or async. Fails the test after ``timeout`` seconds
    with ``what`` (a text, or a function giving one, e.g. what was seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not true within {timeout:g}s: {detail or _source(check)}")
        await asyncio.sleep(interval)


async def until(
    pilot: Pilot[Any],
    check: Callable[[], T],
    timeout: float = 90,
    what: str | Callable[[], str] = "",
) -> T:
    """eventually() for a Textual app under test: its screen catches up before each check."""

    async def caught_up() -> T:
        await pilot.pause(0)  # a turn for the app, and its screen's pending messages handled
        return check()

    return await eventually(caught_up, timeout, what or _source(check))


def _source(check: Callable[..., object]) -> str:
    """The line that wrote ``check`` (a lambda says more than its repr)."""
    try:
        return inspect.getsource(check).strip()
    except (OSError, TypeError):
        return repr(check)
