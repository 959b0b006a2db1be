"""The engine's header parser gives what nats-py's own gives, on every kind of block."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from engine.connection import _Client
from engine.headers import parse_header_lines

BLOCKS = [
    b"Nats-Stream: EVENTS\r\nNats-Subject: events.task.queued\r\nNats-Sequence: 17\r\n"
    b"Nats-Time-Stamp: 2026-12-03T09:30:00.123456789Z\r\nNats-Num-Pending: 3\r\n\r\n",
    b"Name:Value\r\nTabbed:\tvalue \t\r\n\r\n",  # no space after the colon, tabs around
    b"A: one: two\r\nEmpty:\r\n:no name\r\nno colon\r\n\r\n",
    b"Bad Name: x\r\nBad\x1cName: y\r\n\x0bLead: z\r\n",  # whitespace inside or around a name
    b"Value: \x1cfile separator kept\x1c\r\n",  # bytes.strip() keeps it, str.strip() would not
    b"Caf\xc3\xa9: name not ascii\r\nOk: caf\xc3\xa9\r\nBroken: \xff\xfe\r\n",
    b"Dup: first\r\nDup: second\r\n",
    b"",
    b"\r\n\r\n",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_the_same_dict_as_nats_py(block: bytes) -> None:
    assert parse_header_lines(block) == Client._parse_header_lines(block)


def test_the_engine_client_parses_with_it() -> None:
    """Every connection the engine opens is a _Client (engine.connection)."""
    assert _Client._parse_header_lines is parse_header_lines
