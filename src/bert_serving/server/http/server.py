"""`HttpServer`: uvicorn serving the ASGI app, on a socket bound up front, in its own thread.

Connections are capped (``-http_max_connect``, uvicorn's ``limit_concurrency``): past the cap a
request is answered ``503 Service Unavailable`` at once and its connection closed, instead of
queueing without end. Should uvicorn stop on its own (it never should), the server is told
(``on_failure``): it stops and exits non-zero rather than serving ZeroMQ alone.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Callable

import uvicorn

from ...errors import ConfigurationError

__all__ = ["HttpServer"]

logger = logging.getLogger(__name__)


class HttpServer:
    """uvicorn on a socket bound up front (so a busy port fails at start), in its own thread."""

    def __init__(self, app, host: str, port: int, *, max_connections: int | None = None,
                 on_failure: Callable[[str, BaseException], None] | None = None) -> None:
        self.host, self.port = host, port
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                     timeout_graceful_shutdown=10,
                                                     limit_concurrency=_uvicorn_limit(max_connections)))
        self._socket: socket.socket | None = None
        self._on_failure = on_failure
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # answers are small and go out in two writes (head, body): without this, Nagle's
        # algorithm meets the client's delayed ACK and every response waits ~40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"cannot serve HTTP on {self.host}:{self.port} ({exc.strerror}); "
                                     "choose another -http_port") from None
        sock.listen(2048)
        sock.setblocking(False)
        self._socket = sock

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported below, whatever it was
            error = exc
        if not self._closing and self._on_failure is not None:
            self._on_failure("the HTTP server", error or RuntimeError("uvicorn stopped on its own"))

    def close(self) -> None:
        """Stop taking connections, let open ones finish, stop."""
        self._closing = True
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(15)
        if self._socket is not None:
            self._socket.close()


def _uvicorn_limit(max_connections: int | None) -> int | None:
    """uvicorn's ``limit_concurrency`` for at most ``max_connections`` open connections: it counts
    the connection a request arrives on among them, so N would leave room for N - 1 (and 1 for
    none at all)."""
    return None if max_connections is None else max_connections + 1
