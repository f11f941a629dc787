"""An HTTP process's ``main`` (``bert-serving: http <k>``): uvicorn serving the app on the
listening socket the coordinator bound (``-http_port``, shared by every HTTP process), with the
pipeline behind `link.uplink.Uplink`: requests are admitted and tokenized here and sent on to the
coordinator's batcher.

Orders: ``{"index", "models" (the default first), "limits" (each model's share), "http": {HttpSettings' fields}, "max_connections",
"listen_fd", "log_level", "fd"}`` (`link.orders`). It goes when the coordinator says STOP (after
the drain; open connections get their answers first) or goes away, and exits non-zero when
uvicorn stops on its own, so that the coordinator starts another.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from ..link.orders import EdgeLimits, ModelOrders
from ..link.uplink import Uplink
from ..processes.child import begin
from .app import HttpSettings, create_app
from .server import HttpServer

__all__ = ["main"]


def main() -> None:
    orders, channel = begin(lambda orders: f"http {orders['index']}")
    _open_files_to_the_hard_limit()
    uplink = Uplink(channel, ModelOrders.many_from_json(orders["models"]),
                    [EdgeLimits(**share) for share in orders["limits"]], name=f"http-{orders['index']}")
    app = create_app(uplink, HttpSettings(**orders["http"]))
    listener = socket.socket(fileno=orders["listen_fd"])
    server = HttpServer(app, listener, max_connections=orders["max_connections"], on_failure=uplink.stage_failed,
                        on_loop=lambda loop: _pump_in(loop, uplink))
    server.start()
    uplink.start()
    uplink.stopped.wait()
    server.close()
    sys.exit(1 if uplink.failure else 0)


def _pump_in(loop: asyncio.AbstractEventLoop, uplink: Uplink) -> None:
    """The uplink's answers are read on the event loop itself: no thread in between."""

    def readable() -> None:
        if not uplink.pump():
            loop.remove_reader(uplink.fileno())

    def tick() -> None:
        if not uplink.stopped.is_set():
            loop.call_later(uplink.tick(), tick)

    loop.add_reader(uplink.fileno(), readable)
    tick()


def _open_files_to_the_hard_limit() -> None:
    """Each connection is an open file: take every one the system allows this process (the soft
    limit is often 1,024, below -http_max_connect plus what the process needs itself)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


if __name__ == "__main__":
    main()
