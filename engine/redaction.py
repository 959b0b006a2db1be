"""Secrets never shown: credentials inside URLs are masked in every output and log line.

A password given in ``ONEMANAGE_NATS_URL`` (``nats://admin:PW@host``) was
printed by ``status`` and ``check``, shown in the console's header and logged
on reconnect. Everything that shows a server goes through ``redact``, and
the CLI's and the console's log handlers carry ``RedactingFilter``, which
masks it in any record, nats-py's and taskiq's included.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
# scheme://user:password@  or  scheme://token@
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<info>[^\s/@]+)@")


def _mask(match: re.Match[str]) -> str:
    user, colon, _ = match.group("info").partition(":")
    kept = f"{user}:{MASK}" if colon else MASK  # no colon: the whole thing is a token
    return f"{match.group('scheme')}{kept}@"


def redact(text: str) -> str:
    """``text`` with the password (or token) of every URL in it masked."""
    return _USERINFO.sub(_mask, text) if "@" in text else text


def redact_netloc(netloc: str) -> str:
    """A URL's ``host:port`` part (which may hold ``user:password@``), masked."""
    return redact(f"nats://{netloc}").removeprefix("nats://")


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's final message, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def redact_logging() -> None:
    """Put RedactingFilter on every handler of the root logger (call after configuring it)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
