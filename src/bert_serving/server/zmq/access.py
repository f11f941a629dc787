"""Who may talk to the ZeroMQ ports, and keeping their connections alive.

- **CurveZMQ** (optional): with ``-zmq_secret_key FILE`` (a certificate made by
  ``zmq.auth.create_certificates``) both ports encrypt and authenticate; with
  ``-zmq_authorized_keys DIR`` only clients whose public certificates are in DIR get in, else
  any client that knows the server's public key. Built on pyzmq's own ZAP authenticator.
- **TERMINATION** is honoured from the server's own host; from elsewhere only with the
  ``-terminate_token`` it was started with.

Heartbeats (`protocol.keep_alive`) keep idle connections alive on both sides.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ...errors import ConfigurationError

__all__ = ["CurveServer", "TerminationPolicy"]

logger = logging.getLogger(__name__)

class CurveServer:
    """Server-side CurveZMQ: applies the key pair to sockets, runs the authenticator."""

    def __init__(self, ctx: zmq.Context, secret_key_file: str, authorized_keys_dir: str | None) -> None:
        if not zmq.has("curve"):
            raise ConfigurationError("this libzmq has no CURVE support; -zmq_secret_key cannot be used")
        path = Path(secret_key_file)
        try:
            self.public_key, self.secret_key = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"-zmq_secret_key {path}: cannot read a certificate ({exc})") from None
        if self.secret_key is None:
            raise ConfigurationError(f"-zmq_secret_key {path} holds a public key only; pass the .key_secret file")
        if authorized_keys_dir is not None and not Path(authorized_keys_dir).is_dir():
            raise ConfigurationError(f"-zmq_authorized_keys {authorized_keys_dir} is not a directory")
        self._authorized = authorized_keys_dir
        self._authenticator = ThreadAuthenticator(ctx)

    def start(self) -> None:
        self._authenticator.start()
        self._authenticator.configure_curve(
            domain="*", location=self._authorized if self._authorized else zmq.auth.CURVE_ALLOW_ANY
        )
        logger.info("CurveZMQ on: %s", f"clients authorized in {self._authorized}" if self._authorized
                    else "any client with the server's public key")

    def secure(self, sock: zmq.Socket) -> None:
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True

    def stop(self) -> None:
        self._authenticator.stop()


class TerminationPolicy:
    """Whether a TERMINATION from ``peer`` (its IP address, if known) may stop the server."""

    def __init__(self, token: str | None = None) -> None:
        self._token = None if token is None else token.encode("utf-8")

    def allows(self, peer: str | None, token: bytes | str | None) -> bool:
        """Never raises, whatever ``token`` holds (compared as bytes, in constant time)."""
        if _is_loopback(peer):
            return True
        if self._token is None or token is None:
            return False
        if isinstance(token, str):
            token = token.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(token, self._token)


def _is_loopback(peer: str | None) -> bool:
    if not peer:  # ZeroMQ reports no address for in-process peers
        return True
    try:
        return ipaddress.ip_address(peer.split("%")[0]).is_loopback
    except ValueError:
        return False
