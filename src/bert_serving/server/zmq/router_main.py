"""The router process's ``main`` (``bert-serving: router``): the public ZeroMQ ports in front of
the intakes (`router.Router`), and its channel to the coordinator.

Orders: ``{"bind", "port", "port_out", "zmq_secret_key", "zmq_authorized_keys",
"max_request_bytes", "max_request_texts", "max_held_bytes", "intakes_socket", "log_level", "fd"}``. It says READY once its ports are
bound (or why it could not bind them), hands over what it counts (answers it could not deliver)
as the intakes do, and on STOP (after the drain) sends what is on its way and goes; it also goes
when the coordinator does.
"""

from __future__ import annotations

import logging
import os
import time

import zmq

from ...errors import ConfigurationError
from ..link.frames import READY, STATS, STOP, SYNC, SYNCED, dumps
from ..processes.channel import Channel
from ..processes.child import begin
from .access import CurveServer
from .router import Router

__all__ = ["main"]

logger = logging.getLogger(__name__)

_FLUSH_S = 0.2
_STOP_S = 5.0  # after STOP, at most this long to send what is on its way


def main() -> None:
    orders, channel = begin("router")
    ctx = zmq.Context()
    curve = None
    try:
        if orders["zmq_secret_key"]:
            curve = CurveServer(ctx, orders["zmq_secret_key"], orders["zmq_authorized_keys"])
            curve.start()
        router = Router(ctx, bind=orders["bind"], port=orders["port"], port_out=orders["port_out"],
                        intakes_socket=orders["intakes_socket"], curve=curve,
                        max_request_bytes=orders["max_request_bytes"], max_request_texts=orders["max_request_texts"],
                        max_held_bytes=orders["max_held_bytes"])
        router.bind()
    except ConfigurationError as exc:
        channel.send([READY, dumps({"error": str(exc)})])
        return
    channel.send([READY, dumps({"pid": os.getpid()})])
    router.poller.register(channel.fileno(), zmq.POLLIN)
    try:
        _serve(router, channel)
    finally:
        router.close()
        if curve is not None:
            curve.stop()
        ctx.destroy(linger=1000)


def _serve(router: Router, channel: Channel) -> None:
    stop_by, next_flush = None, time.monotonic() + _FLUSH_S
    while stop_by is None or (router.busy and time.monotonic() < stop_by):
        if channel.poll(0):
            try:
                frames = channel.receive()
            except EOFError:  # the coordinator is gone
                return
            kind = bytes(frames[0])
            if kind == SYNC:
                _flush(router, channel)
                channel.send([SYNCED, frames[1]])
            elif kind == STOP:
                stop_by = time.monotonic() + _STOP_S
        router.turn(5 if stop_by is not None else 100, stopping=stop_by is not None)
        if time.monotonic() >= next_flush:
            _flush(router, channel)
            next_flush = time.monotonic() + _FLUSH_S
    _flush(router, channel)


def _flush(router: Router, channel: Channel) -> None:
    delta = router.stats.take()
    if delta is not None:
        channel.send([STATS, dumps(delta)])


if __name__ == "__main__":
    main()
