"""Batched direct get: a stream's stored messages read with no consumer, so no server state.

A request to ``$JS.API.DIRECT.GET.<stream>`` (a stream that allows direct
get) is answered with up to ``batch`` stored messages, each with its place
in headers, then a status: 204 "EOB" ends the batch, 404 says nothing is
stored there. Nothing is created, so nothing expires, nothing is left
behind, and a read-only user can do nothing with it but read: publishing to
that one subject (and subscribing to its inbox) is the whole permission.

In a cluster any replica may answer, one that is a little behind the
leader too: a short answer is not proof that nothing more is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header

from engine.errors import PermissionDeniedError

SEQUENCE = "Nats-Sequence"
SUBJECT = "Nats-Subject"
PENDING = "Nats-Num-Pending"  # matching messages after this one, on the server that answered
UP_TO_SEQUENCE = "Nats-UpTo-Sequence"  # multi_last: the snapshot a next page must keep to
KV_OPERATION = "KV-Operation"  # DEL or PURGE on a KV bucket's removed keys

END_OF_BATCH = "204"
NOT_FOUND = "404"
NO_RESPONDERS = "503"  # no such stream, or it does not allow direct get
TOO_MANY_RESULTS = "413"  # multi_last matched more subjects than the server answers (1024)


class DirectGetError(Exception):
    """The server refused a direct get (the status says why)."""

    def __init__(self, stream: str, status: str, description: str) -> None:
        super().__init__(f"direct get on {stream}: {status} {description}".rstrip())
        self.stream = stream
        self.status = status


class DirectGetUnavailable(DirectGetError):
    """No stream answers direct gets under that name: missing, or ``allow_direct`` is off."""


@dataclass(frozen=True)
class Answer:
    """One batch: the stored messages, and what the server that answered has after them."""

    messages: list[Msg]
    pending: int  # matching messages after the batch (0 on a 404)
    up_to_seq: int | None = None  # multi_last only

    @property
    def last_seq(self) -> int:
        return sequence(self.messages[-1]) if self.messages else 0


def sequence(msg: Msg) -> int:
    return int(_headers(msg)[SEQUENCE])


def subject(msg: Msg) -> str:
    return _headers(msg)[SUBJECT]


def _headers(msg: Msg) -> dict[str, str]:
    return msg.headers or {}


class DirectGet:
    """Batched direct gets on one stream, one at a time, on one inbox subscription.

    Each request has its own reply subject under the inbox, so what a server
    sends late for a request given up on is dropped, never taken for the
    answer to the next one.
    """

    def __init__(self, nc: Client, stream: str) -> None:
        self.nc = nc
        self.stream = stream
        self._inbox = ""
        self._subscription: Subscription | None = None
        self._asked = 0
        self._reply = ""  # the request being answered ("" between requests)
        self._limit = 0  # its batch
        self._messages: list[Msg] = []
        self._end: asyncio.Future[Msg] | None = None

    @property
    def buffered(self) -> int:
        """Messages of the current answer received and not handed out: at most one batch."""
        queued = self._subscription.pending_msgs if self._subscription is not None else 0
        got = len(self._messages)
        return got + min(queued, max(self._limit - got, 0))  # the status that ends it is no message

    async def __aenter__(self) -> DirectGet:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def ask(self, request: dict[str, Any], timeout: float) -> Answer:
        """One batch. TimeoutError when its end did not come within ``timeout`` seconds."""
        if self._subscription is None:
            self._inbox = self.nc.new_inbox()
            self._subscription = await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        self._asked += 1
        self._reply = f"{self._inbox}.{self._asked}"
        self._limit = int(request.get("batch", 1))
        self._end = end = asyncio.get_running_loop().create_future()
        try:
            await self.nc.publish(
                f"$JS.API.DIRECT.GET.{self.stream}", json.dumps(request).encode(), reply=self._reply
            )
            async with asyncio.timeout(timeout):
                status = await end
        except TimeoutError:
            # A refused request gets no answer; the connection heard why (engine.connection).
            refused = getattr(self.nc, "refused", None)
            subject = f"$JS.API.DIRECT.GET.{self.stream}"
            if callable(refused) and refused(subject):
                raise PermissionDeniedError(f"publish to {subject}") from None
            raise
        finally:
            messages, self._messages = self._messages, []
            self._reply, self._end, self._limit = "", None, 0
        return self._answer(messages, _headers(status))

    def _answer(self, messages: list[Msg], status: dict[str, str]) -> Answer:
        code = status.get("Status", "")
        if code == END_OF_BATCH:
            upto = status.get(UP_TO_SEQUENCE)
            return Answer(messages, int(status.get(PENDING, 0)), int(upto) if upto else None)
        if code == NOT_FOUND:
            return Answer(messages, 0)
        description = status.get(Header.DESCRIPTION, "").strip()
        if code == NO_RESPONDERS:
            raise DirectGetUnavailable(self.stream, code, "no responders")
        raise DirectGetError(self.stream, code, description)

    async def _on_msg(self, msg: Msg) -> None:
        if msg.subject != self._reply:
            return  # a straggler of a request given up on
        if msg.headers is not None and "Status" in msg.headers:
            if self._end is not None and not self._end.done():
                self._end.set_result(msg)
        else:
            self._messages.append(msg)


async def direct_all(
    nc: Client, stream: str, request: dict[str, Any], timeout: float, batch: int = 1000
) -> list[Msg]:
    """Every message a one-shot ``request`` matches, a page at a time, on one subscription.

    A multi_last request's pages keep to the snapshot of its first page.
    """
    messages: list[Msg] = []
    ask = {**request, "batch": batch}
    async with DirectGet(nc, stream) as get:
        while True:
            answer = await get.ask(ask, timeout)
            messages += answer.messages
            if answer.pending <= 0 or not answer.messages:
                return messages
            ask = {**ask, "seq": answer.last_seq + 1}
            if answer.up_to_seq is not None:
                ask["up_to_seq"] = answer.up_to_seq
