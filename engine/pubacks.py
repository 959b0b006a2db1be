"""JetStream publishes acknowledged through one reply subscription per connection.

nats-py's ``js.publish`` is a request: a random token (a syscall), a future
with ``asyncio.wait_for`` around it, and a PubAck built through its generic
dataclass conversion. That took ~87 µs of client CPU per stored message, and a
task makes several (its kick, its lifecycle events, its result). Here each
publish waits on a plain future keyed by a counter on one wildcard inbox, and
one timer sweeps the deadlines of all of them: ~40 µs
(docs/adr/0003-throughput.md). The answers mean what js.publish's mean: a
PubAck, a ``NoStreamResponseError`` when no stream listens (an election), the
server's APIError, or ``nats.errors.TimeoutError`` when no answer came in time
(the message may have been stored), or ``PermissionDeniedError`` when the
connection remembers that the server refused the subject (engine.connection's
client does, and its requests answer the same).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import time
import weakref
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header, PubAck

from engine.errors import PermissionDeniedError

NO_RESPONDERS = "503"
SWEEP = 0.05  # seconds between looks at the deadlines while publishes wait


class PubAcks:
    """The publishes of one connection that wait for the stream's answer."""

    def __init__(self, nc: Client, refused: Callable[[str], str | None] | None = None) -> None:
        self._nc = nc
        self._refused = refused  # what the server refused on a subject, if it did
        self._inbox = ""  # "<inbox prefix>.<nuid>.", set by the first publish
        self._subscribing: asyncio.Lock | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._deadlines: list[tuple[float, str]] = []  # a heap
        self._sweeper: asyncio.TimerHandle | None = None

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> PubAck:
        """Store one message; the stream's PubAck, or the error js.publish would raise."""
        if not self._inbox:
            await self._subscribe()
        loop = asyncio.get_running_loop()
        token = str(next(self._tokens))
        answer: asyncio.Future[Msg] = loop.create_future()
        self._waiting[token] = answer
        heapq.heappush(self._deadlines, (time.monotonic() + timeout, token))
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP, self._sweep)
        try:
            await self._nc.publish(subject, payload, reply=self._inbox + token, headers=headers)
            msg = await answer
        except nats.errors.TimeoutError:
            if self._refused is not None and self._refused(subject):
                raise PermissionDeniedError(f"publish to {subject}") from None
            raise
        finally:
            self._waiting.pop(token, None)
        return _pub_ack(msg)

    async def _subscribe(self) -> None:
        if self._subscribing is None:
            self._subscribing = asyncio.Lock()
        async with self._subscribing:
            if not self._inbox:
                inbox = self._nc.new_inbox() + "."
                await self._nc.subscribe(inbox + "*", cb=self._answered)
                self._inbox = inbox

    async def _answered(self, msg: Msg) -> None:
        answer = self._waiting.pop(msg.subject[len(self._inbox) :], None)
        if answer is not None and not answer.done():
            answer.set_result(msg)

    def _sweep(self) -> None:
        """Fail every publish whose deadline passed; look again while any waits."""
        self._sweeper = None
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = heapq.heappop(self._deadlines)
            answer = self._waiting.pop(token, None)
            if answer is not None and not answer.done():
                answer.set_exception(nats.errors.TimeoutError())
        if self._waiting:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP, self._sweep)
        else:
            self._deadlines.clear()  # only answered publishes were left in it


def _pub_ack(msg: Msg) -> PubAck:
    if msg.headers and msg.headers.get(Header.STATUS) == NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    resp = json.loads(msg.data)
    if "error" in resp:
        raise nats.js.errors.APIError.from_error(resp["error"])
    return PubAck(
        stream=resp["stream"],
        seq=resp["seq"],
        domain=resp.get("domain"),
        duplicate=resp.get("duplicate"),
    )


_BY_CONNECTION: weakref.WeakKeyDictionary[Client, PubAcks] = weakref.WeakKeyDictionary()


def pub_acks(nc: Client) -> PubAcks:
    """The connection's one PubAcks (created at first use, gone with the connection)."""
    acks = _BY_CONNECTION.get(nc)
    if acks is None:
        acks = _BY_CONNECTION[nc] = PubAcks(nc, getattr(nc, "refused", None))
    return acks
