"""eventually(): the one way a test waits, for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
            raise AssertionError(f"not true within {timeout:.0f}s: {detail or check}")
        await asyncio.sleep(interval)
