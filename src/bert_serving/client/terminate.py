"""`terminate_server`: what ``bert-serving-terminate`` does."""

from __future__ import annotations

import socket
import time
import uuid

import zmq

from .. import protocol
from ..errors import NotReadyError, ServerTimeoutError

__all__ = ["terminate_server"]

DEFAULT_DRAIN_S = 30.0  # the server's default -drain_timeout
_MARGIN_S = 15.0  # beyond the drain: stopping the workers, closing the ports


def terminate_server(ip: str = "localhost", port: int = 5555, timeout: int | None = None, token: str | None = None,
                     *, port_out: int | None = None) -> None:
    """Send TERMINATION to the server at ``ip:port`` (what ``bert-serving-terminate`` does) and
    wait until it has finished its accepted requests and closed its port.

    ``timeout`` (ms) bounds the wait; by default it is as long as the server's drain can last:
    its ``-drain_timeout`` (asked for when ``port_out`` is given; else the default 30 s) plus
    15 s. From another host the server wants its ``-terminate_token`` as ``token``; with
    ``port_out`` a refusal is reported at once (`ForbiddenError`).
    Raises `NotReadyError` if nothing listens on the port, `ServerTimeoutError`, saying it is
    still draining, if the port is still open at the end."""
    if not _listening(ip, port):
        raise NotReadyError(f"nothing is listening at {ip}:{port}: no server there to terminate")
    payload = protocol.TERMINATION if token is None else protocol.TERMINATION + b" " + token.encode()
    identity = b"terminate-" + uuid.uuid4().hex.encode()
    drain_s = DEFAULT_DRAIN_S
    with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as push, ctx.socket(zmq.SUB) as sub:
        push.linger = 5000
        push.connect(f"tcp://{ip}:{port}")
        if port_out is not None:
            sub.setsockopt(zmq.SUBSCRIBE, identity)
            sub.connect(f"tcp://{ip}:{port_out}")
            config = _ask(push, sub, identity, protocol.SHOW_CONFIG, 1, min(10_000, timeout or 10_000))
            if config is None:
                raise ServerTimeoutError(f"no bert-serving server answered at {ip}:{port} (results on {port_out})")
            drain_s = float(config.config.get("drain_timeout") or drain_s)
        push.send_multipart(protocol.request_frames(identity, payload, 2))
        if port_out is not None:
            refusal = _receive(sub, 1000, 2)
            if refusal is not None and refusal.error is not None:
                raise refusal.error
    wait_s = timeout / 1000 if timeout is not None else drain_s + _MARGIN_S
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not _listening(ip, port):
            return
        time.sleep(0.1)
    raise ServerTimeoutError(
        f"the server at {ip}:{port} is still running {wait_s:.0f} s after TERMINATION: it is most likely still "
        "draining, finishing the requests it accepted (for up to its -drain_timeout), and will then stop; "
        "wait longer with -timeout. If it never stops, it refused: from another host TERMINATION needs the "
        "server's -terminate_token (pass -port_out to see the refusal); a server with CurveZMQ keys "
        "(-zmq_secret_key) takes no TERMINATION from this command: stop it with a signal (SIGTERM)"
    )


def _listening(ip: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``ip:port``."""
    try:
        socket.create_connection((ip, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _ask(push: zmq.Socket, sub: zmq.Socket, identity: bytes, command: bytes, req_id: int,
         timeout_ms: int) -> protocol.Reply | None:
    """(The server holds an answer until this client's subscription has reached it.)"""
    push.send_multipart(protocol.request_frames(identity, command, req_id))
    return _receive(sub, timeout_ms, req_id)


def _receive(sub: zmq.Socket, timeout_ms: int, req_id: int) -> protocol.Reply | None:
    deadline = time.monotonic() + timeout_ms / 1000
    while sub.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        reply = protocol.parse_reply(sub.recv_multipart())
        if reply.req_id == req_id:
            return reply
    return None
