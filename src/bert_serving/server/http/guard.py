"""`guarded_protocol`: uvicorn's HTTP protocol with the guards of an edge that faces slow or
hostile peers, after nginx's ``client_header_timeout`` and ``limit_conn`` and hyper's
``header_read_timeout``:

- **idle connections close**: a connection that sends nothing for ``idle_s`` (a new one before
  its first request, a kept-alive one between requests: uvicorn's ``timeout_keep_alive``) is
  closed;
- **a header read timeout**: a request's headers must be complete within ``header_s`` of its
  first byte, however slowly they trickle in (slowloris sends a header line a second, for ever);
- **a body read timeout**: a body must arrive at ``min_body_rate`` bytes a second on average
  after a grace of ``body_s``;
- **the connection limit cannot be filled by idle or slow peers**: past ``max_connections`` open
  connections, a new one closes the oldest connection that is not in a request (idle, or still
  sending its headers); only connections busy with requests (headers read) count against the
  limit, and past it a request is refused at once, in JSON (`OverloadedError`, 429, ``Retry-After``),
  its connection closed.

So one peer with more connections than ``-http_max_connect``, each trickling a header line a
second, keeps none of them for long, and never keeps a well-behaved request out.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ...errors import OverloadedError
from .responses import error_response

__all__ = ["ConnectionGuard", "guarded_protocol"]

logger = logging.getLogger(__name__)

HEADER_S = 10.0
BODY_S = 20.0
MIN_BODY_RATE = 500  # bytes a second, after BODY_S


class ConnectionGuard:
    """The connections of one server process: the ones not in a request, oldest first (to close
    when room is needed), and the count of those in one (what the limit holds to)."""

    def __init__(self, max_connections: int | None) -> None:
        self.max_connections = max_connections
        self.waiting: OrderedDict[GuardedProtocol, None] = OrderedDict()  # idle, or sending headers
        self.busy: set[GuardedProtocol] = set()
        self.evicted = 0

    def opened(self, connection: GuardedProtocol) -> None:
        self.waiting[connection] = None
        if self.max_connections is None:
            return
        while len(self.waiting) + len(self.busy) > self.max_connections and len(self.waiting) > 1:
            oldest = next(iter(self.waiting))
            self.waiting.pop(oldest)
            self.evicted += 1
            oldest.transport.close()  # its connection_lost comes later; it no longer counts

    def admits(self, connection: GuardedProtocol) -> bool:
        """Its headers are in: may its request be served (the busy ones under the limit)?"""
        self.waiting.pop(connection, None)
        if self.max_connections is not None and len(self.busy) >= self.max_connections:
            return False
        self.busy.add(connection)
        return True

    def done(self, connection: GuardedProtocol) -> None:
        """Its request is answered; it may send another (kept alive)."""
        self.busy.discard(connection)
        self.waiting[connection] = None

    def closed(self, connection: GuardedProtocol) -> None:
        self.busy.discard(connection)
        self.waiting.pop(connection, None)


class GuardedProtocol(HttpToolsProtocol):
    guard: ConnectionGuard  # set by `guarded_protocol`
    header_s: float = HEADER_S
    body_s: float = BODY_S
    min_body_rate: float = MIN_BODY_RATE

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer = None
        self._body_deadline = 0.0
        self._arm(self.timeout_keep_alive, "sent nothing")  # until its first request begins
        self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.closed(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_s, f"did not complete its request's headers within {self.header_s:g} s")

    def on_headers_complete(self) -> None:
        self._body_deadline = self.loop.time() + self.body_s
        self._arm(self.body_s, "sent its body too slowly")
        if self.guard.admits(self):
            return super().on_headers_complete()
        app, self.app = self.app, _too_many_connections(self.guard.max_connections)
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_deadline += len(body) / self.min_body_rate
        self._arm(self._body_deadline - self.loop.time(), "sent its body too slowly")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.guard.done(self)
        super().on_response_complete()  # arms uvicorn's keep-alive timeout: idle connections close

    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(max(0.0, seconds), self._too_slow, why)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self, why: str) -> None:
        self._timer = None
        if not self.transport.is_closing():
            logger.debug("closing a connection from %s: it %s", self.client, why)
            self.transport.close()


def guarded_protocol(max_connections: int | None, **timeouts: float) -> type[GuardedProtocol]:
    """The protocol class of one server, with its own guard (``header_s``, ``body_s``,
    ``min_body_rate`` may be set for tests)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"guard": ConnectionGuard(max_connections), **timeouts})


def _too_many_connections(limit: int | None):
    async def refuse(scope, receive, send) -> None:
        error = OverloadedError(f"this server is answering {limit} requests on as many connections, its limit "
                                "(-http_max_connect); retry later")
        response = error_response(scope["path"], error)
        response.headers["Retry-After"] = "1"
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    return refuse
