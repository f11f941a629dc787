"""`terminate_server`: what ``bert-serving-terminate`` does."""

from __future__ import annotations

import socket
import time
import uuid

import zmq

from .. import protocol
from ..errors import ServerTimeoutError

__all__ = ["terminate_server"]


def terminate_server(ip: str = "localhost", port: int = 5555, timeout: int = 5000, token: str | None = None) -> None:
    """Send TERMINATION to the server at ``ip:port`` (what ``bert-serving-terminate`` does)
    and wait up to ``timeout`` ms for its port to close. From another host the server wants
    its ``-terminate_token`` as ``token``."""
    payload = protocol.TERMINATION if token is None else protocol.TERMINATION + b" " + token.encode()
    with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as sock:
        sock.linger = timeout
        sock.connect(f"tcp://{ip}:{port}")
        sock.send_multipart(protocol.request_frames(b"terminate-" + uuid.uuid4().hex.encode(), payload, 0))
    deadline = time.monotonic() + timeout / 1000
    while time.monotonic() < deadline:
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.1)
    raise ServerTimeoutError(
        f"the server at {ip}:{port} is still running {timeout} ms after TERMINATION: it may still be "
        "finishing accepted requests, or it refused (from another host TERMINATION needs the server's "
        "-terminate_token)"
    )
