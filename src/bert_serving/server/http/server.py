"""`HttpServer`: uvicorn serving the ASGI app on a listening socket, in its own thread; and
`listen`, which binds that socket.

The coordinator binds ``-http_port`` up front (so a busy port fails at start) and every HTTP
process serves the same listening socket, inherited: the kernel hands each new connection to
one of them.

Connections are guarded (`guard`): idle and slow ones are closed, and past ``-http_max_connect``
requests in progress a request is refused at once in JSON (429) instead of queueing without end.
Should uvicorn stop on its own (it never should), the process is told (``on_failure``): it exits
non-zero and the server starts another.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Callable

import uvicorn
from uvicorn._compat import asyncio_run

from ...errors import ConfigurationError
from ..processes.child import set_thread_title
from .guard import guarded_protocol

__all__ = ["HttpServer", "listen"]

logger = logging.getLogger(__name__)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port``; a busy port is a `ConfigurationError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # answers are small and go out in two writes (head, body): without this, Nagle's
    # algorithm meets the client's delayed ACK and every response waits ~40 ms
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot serve HTTP on {host}:{port} ({exc.strerror}); "
                                 "choose another -http_port") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn on a listening socket (`listen`), in its own thread."""

    def __init__(self, app, sock: socket.socket, *, max_connections: int | None = None,
                 on_failure: Callable[[str, BaseException], None] | None = None,
                 on_loop: Callable[[asyncio.AbstractEventLoop], None] | None = None) -> None:
        """``on_loop`` is called with the server's event loop before it serves (in its thread)."""
        self.protocol = guarded_protocol(max_connections)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                     timeout_graceful_shutdown=10, http=self.protocol))
        self._socket = sock
        self._on_failure = on_failure
        self._on_loop = on_loop
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        set_thread_title("http")
        error: BaseException | None = None
        try:
            asyncio_run(self._serve(), loop_factory=self._server.config.get_loop_factory())
        except BaseException as exc:  # reported below, whatever it was
            error = exc
        if not self._closing and self._on_failure is not None:
            self._on_failure("the HTTP server", error or RuntimeError("uvicorn stopped on its own"))

    async def _serve(self) -> None:
        if self._on_loop is not None:
            self._on_loop(asyncio.get_running_loop())
        await self._server.serve(sockets=[self._socket])

    def close(self) -> None:
        """Stop taking connections, let open ones finish, stop."""
        self._closing = True
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(15)
        self._socket.close()
