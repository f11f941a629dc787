"""CurveZMQ for the client's sockets, for a server started with ``-zmq_secret_key``."""

from __future__ import annotations

import zmq

__all__ = ["secure"]


def secure(sock: zmq.Socket, server_key: bytes | str, client_cert: str | None) -> None:
    """Encrypt ``sock`` to the server whose public key is ``server_key`` (z85 bytes, or its ``.key``
    certificate file), as ``client_cert`` (a secret certificate file) or a throw-away key pair."""
    import zmq.auth

    if isinstance(server_key, str):
        server_key = zmq.auth.load_certificate(server_key)[0]
    if client_cert is not None:
        public, secret = zmq.auth.load_certificate(client_cert)
        if secret is None:
            raise ValueError(f"{client_cert} holds no secret key; pass the client's .key_secret file")
    else:
        public, secret = zmq.curve_keypair()
    sock.curve_serverkey = server_key
    sock.curve_publickey = public
    sock.curve_secretkey = secret
