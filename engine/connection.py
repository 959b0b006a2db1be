"""THE connection: the one place in the engine that opens NATS.

It knows the servers (the configured URLs, or the embedded server, started if
need be), every credential kind of the settings, TLS, and the callbacks
without which nats-py prints tracebacks to stderr (and onto a TUI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from engine import credentials, embedded
from engine.errors import NotConnectedError, PermissionDeniedError
from engine.headers import parse_header_lines
from engine.redaction import redact, redact_netloc
from engine.roles import ROLES, Role, inbox_prefix
from engine.settings import Settings

logger = logging.getLogger(__name__)


class _Client(Client):
    """nats-py's client, with a PONG whose waiter gave up no longer ending its read loop.

    ``flush()`` and ``rtt()`` leave their future in the PING queue when they are
    cancelled or time out; nats-py 2.16 sets its result when the PONG arrives,
    and the InvalidStateError ends the read loop: the connection still looks
    connected but never reads again (no acks, no messages) until a stale-ping
    check reconnects it minutes later. The console's 1 s round-trip poll, stopped
    or slowed by load, hit this on the connection it shares. (nats.py#624 is the
    same fault in the flusher, fixed there by #636; the PONG path still has it.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.denied: dict[str, str] = {}  # lower-cased subject -> what the server refused

    _parse_header_lines = staticmethod(parse_header_lines)  # the same result, faster

    async def _process_err(self, err_msg: str) -> None:
        text = err_msg.strip("'")
        if text.lower().startswith("permissions violation"):
            # 'Permissions Violation for Publish to "X"' (or Subscription to): nats-py
            # passes it to the error callback only; remember it for the waiting request.
            what = text[len("permissions violation for ") :].replace('"', "")
            subject = what.rsplit(" ", 1)[-1].lower()
            self.denied[subject] = what.lower()
        await super()._process_err(err_msg)

    def refused(self, subject: str) -> str | None:
        """What the server refused on ``subject`` on this connection, if it did."""
        return self.denied.get(subject.lower())

    async def request(self, subject: str, *args: Any, **kwargs: Any) -> Any:
        """nats-py's request; a refused one raises PermissionDeniedError, not a timeout.

        Checked only when the request timed out, so an answered one costs nothing.
        """
        try:
            return await super().request(subject, *args, **kwargs)
        except nats.errors.TimeoutError:
            if self.refused(subject):
                raise PermissionDeniedError(f"publish to {subject}") from None
            raise

    async def _process_pong(self) -> None:
        if self._pongs and self._pongs[0].done():
            self._pongs.pop(0)  # that PING's waiter is gone: nothing to tell
            self._pongs_received += 1
            self._pings_outstanding = 0
            return
        await super()._process_pong()


def _explicit_credentials(settings: Settings) -> bool:
    s = settings
    in_url = any(urlsplit(url).username for url in s.nats_url)
    return bool(in_url or s.nats_user or s.nats_token or s.nats_creds or s.nats_nkey_seed)


def role_credentials(settings: Settings, role: Role) -> credentials.Credentials | None:
    """The generated credentials of ``role``: the embedded server's, or credentials_dir's.

    A configured server never gets the embedded server's passwords: only the
    credentials_dir named for it is read (ONEMANAGE_CREDENTIALS_DIR).
    """
    if _explicit_credentials(settings):
        return None
    if settings.embedded:
        directory: Path | None = embedded.credentials_dir(settings.data_dir)
    else:
        directory = settings.credentials_dir
    if directory is None:
        return None
    return credentials.load(directory, role)


def connect_options(settings: Settings, role: Role | None = None) -> dict[str, Any]:
    """nats-py ``connect`` keyword arguments for the credentials and TLS of ``settings``."""
    s = settings
    role = role or s.role
    options: dict[str, Any] = {
        "connect_timeout": s.connect_timeout,
        "reconnect_time_wait": s.reconnect_wait,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
    }
    generated = role_credentials(s, role)
    if generated is not None:
        options["user"] = generated.user
        options["password"] = generated.password.get_secret_value()
    user = generated.user if generated else s.nats_user
    if user in ROLES:
        # Replies come back under the role's own prefix, the only one it may subscribe to.
        options["inbox_prefix"] = inbox_prefix(user)
    if s.nats_user:
        options["user"] = s.nats_user
        options["password"] = s.nats_password.get_secret_value() if s.nats_password else ""
    if s.nats_token:
        options["token"] = s.nats_token.get_secret_value()
    if s.nats_creds:
        options["user_credentials"] = str(s.nats_creds)
    if s.nats_nkey_seed:
        options["nkeys_seed"] = str(s.nats_nkey_seed)
    if s.tls_ca or s.tls_cert:
        context = ssl.create_default_context(cafile=str(s.tls_ca) if s.tls_ca else None)
        if s.tls_cert:
            context.load_cert_chain(str(s.tls_cert), str(s.tls_key) if s.tls_key else None)
        options["tls"] = context
    return options


class Connection:
    """One NATS connection and its JetStream context, opened once, closed once."""

    def __init__(self) -> None:
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.embedded_server: embedded.EmbeddedServer | None = None
        self.closing = False
        self._refused: asyncio.Event | None = None  # set when the server refuses the credentials

    @property
    def nc(self) -> Client:
        if self._nc is None or self._nc.is_closed:
            raise NotConnectedError("the broker is not connected: await broker.startup() first")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise NotConnectedError("the broker is not connected: await broker.startup() first")
        return self._js

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def servers(self, settings: Settings) -> list[str]:
        """The configured URLs, or the embedded server's (started if needed)."""
        if settings.nats_url:
            return list(settings.nats_url)
        if self.embedded_server is None or not self.embedded_server.healthy():
            self.embedded_server = embedded.ensure(settings.data_dir)
        return [self.embedded_server.url]

    async def open(
        self, settings: Settings, name: str, *, patient: bool, role: Role | None = None
    ) -> Client:
        """Connect (idempotent).

        A ``patient`` caller (a worker) waits for its server as long as it takes;
        any other gives up after a few connect timeouts with an error naming the
        server, instead of hanging on a wrong URL or password.
        """
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        self.closing = False
        servers = self.servers(settings)
        client = _Client()
        attempt = client.connect(
            servers,
            name=name,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            **connect_options(settings, role),
        )
        if patient:
            await attempt
        else:
            await self._connect_or_explain(client, attempt, servers, settings.connect_timeout * 3)
        self._nc = client
        self._js = client.jetstream(timeout=settings.publish_timeout)
        return client

    async def _connect_or_explain(
        self,
        client: Client,
        attempt: Coroutine[Any, Any, None],
        servers: list[str],
        timeout: float,
    ) -> None:
        """Wait for ``attempt``; on failure raise an error that says why.

        A refusal of the credentials ends the wait at once: retrying a wrong
        password cannot succeed, and a loaded machine's retries could otherwise
        hide the server's answer behind a plain timeout.
        """
        self._refused = asyncio.Event()
        connecting = asyncio.ensure_future(attempt)
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait(
                {connecting, refused}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            refused.cancel()
        if connecting.done() and not connecting.cancelled() and connecting.exception() is None:
            return
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await client.close()
        why = (
            "the server refused the credentials (authorization violation): see docs/security.md"
            if self._refused.is_set()
            else "wrong URL or credentials, or the server is down: see the log"
        )
        cause = connecting.exception() if not connecting.cancelled() else None
        raise NotConnectedError(f"cannot reach {redact(', '.join(servers))}: {why}") from cause

    async def close(self) -> None:
        """Flush and close, then let go of an embedded server nobody else uses."""
        self.closing = True
        if self._nc is not None and not self._nc.is_closed:
            # flush + close, not drain: drain waits for pull subscriptions' buffers
            # that nobody reads any more, until the shutdown timeout.
            with contextlib.suppress(Exception):
                await self._nc.flush(timeout=2)
            await self._nc.close()
        self._nc = None
        self._js = None
        if self.embedded_server is not None:
            outcome = self.embedded_server.release()
            logger.info("embedded nats-server %s: %s", self.embedded_server.url, outcome)
            self.embedded_server = None

    async def _on_error(self, exc: Exception) -> None:
        # nats-py reports it as a plain Error: "nats: 'Authorization Violation'".
        if self._refused is not None and "authorization violation" in str(exc).lower():
            self._refused.set()
        logger.warning("nats: %s: %s", type(exc).__name__, redact(str(exc)))

    async def _on_disconnected(self) -> None:
        if not self.closing:
            logger.warning("nats: disconnected from the server; reconnecting")

    async def _on_reconnected(self) -> None:
        url = self._nc.connected_url if self._nc else None
        logger.warning("nats: reconnected to %s", redact_netloc(url.netloc) if url else "?")
