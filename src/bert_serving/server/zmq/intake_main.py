"""An intake process's ``main`` (``bert-serving: intake <k>``): ZeroMQ requests from the router,
admitted and tokenized here, sent on to the coordinator's batcher (`link.uplink.Uplink`), their
answers back through the router. One thread does it all, a turn at a time: the router's
requests, the coordinator's answers, this turn's answers to the router in one message (big
requests are tokenized on the intake's own threads).

Orders: ``{"index", "models" (the default first), "limits" (each model's share), "router_socket", "terminate_token", "log_level", "fd"}``
(`link.orders`). It goes when the coordinator says STOP (after the drain) or goes away, and
exits non-zero when its loop fails, so that the coordinator starts another.
"""

from __future__ import annotations

import logging
import select
import sys
import time

from ..link.orders import EdgeLimits, ModelOrders
from ..link.uplink import Uplink
from ..processes.child import begin
from .access import TerminationPolicy
from .frontend import Frontend

__all__ = ["main"]

logger = logging.getLogger(__name__)

_RECONNECT_S = 0.05


def main() -> None:
    orders, channel = begin(lambda orders: f"intake {orders['index']}")
    name = f"intake-{orders['index']}"
    limits = [EdgeLimits(**share) for share in orders["limits"]]
    uplink = Uplink(channel, ModelOrders.many_from_json(orders["models"]), limits, name=name)
    frontend = Frontend(name, orders["router_socket"], gateway=uplink,
                        termination=TerminationPolicy(orders.get("terminate_token")),
                        max_request_bytes=limits[0].max_request_bytes)
    frontend.connect()
    uplink.start()  # READY: the coordinator counts this intake in
    try:
        _serve(frontend, uplink)
    except BaseException as exc:
        uplink.stage_failed("the intake's loop", exc)
        logger.exception("%s: the loop failed", name)
    finally:
        frontend.close()
    sys.exit(1 if uplink.failure else 0)


def _serve(frontend: Frontend, uplink: Uplink) -> None:
    poller, watched = select.poll(), None
    poller.register(uplink.fileno(), select.POLLIN)
    while not uplink.stopped.is_set():
        if frontend.router is None and not frontend.connect():
            time.sleep(_RECONNECT_S)  # the router is being restarted
        router = frontend.router.fileno() if frontend.router is not None else None
        if router != watched:
            if watched is not None:
                poller.unregister(watched)
            if router is not None:
                poller.register(router, select.POLLIN)
            watched = router
        for fd, _ in poller.poll(uplink.tick() * 1000):
            if fd == router:
                frontend.pump()
            elif not uplink.pump():
                break
        frontend.flush()


if __name__ == "__main__":
    main()
