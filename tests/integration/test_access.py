"""Access: TERMINATION only from the server's host (or with its token), CurveZMQ keys."""

from __future__ import annotations

import subprocess

import pytest
import zmq
import zmq.auth

from bert_serving import protocol
from bert_serving.client import BertClient, terminate_server
from bert_serving.errors import ForbiddenError, ServerTimeoutError

from .conftest import running_server


def non_loopback_ipv4() -> str:
    """An address of this host that is not 127.x, for connecting 'from another host'."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("127."):
            return address
    pytest.fail("this machine has no non-loopback IPv4 address to test remote access with")


def send_termination(ip: str, port: int, port_out: int, token: str | None = None) -> protocol.Reply | None:
    """TERMINATION as a client at ``ip`` sends it; the server's answer, if it gave one."""
    with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as push, ctx.socket(zmq.SUB) as sub:
        identity = b"remote-admin"
        sub.setsockopt(zmq.SUBSCRIBE, identity)
        sub.setsockopt(zmq.RCVTIMEO, 3000)
        sub.connect(f"tcp://{ip}:{port_out}")
        push.connect(f"tcp://{ip}:{port}")
        payload = protocol.TERMINATION if token is None else protocol.TERMINATION + b" " + token.encode()
        push.send_multipart(protocol.request_frames(identity, payload, 1))
        try:
            return protocol.parse_reply(sub.recv_multipart())
        except zmq.Again:
            return None


def test_termination_from_another_host_is_refused_and_with_the_token_accepted() -> None:
    remote = non_loopback_ipv4()
    with running_server("-max_seq_len", "16", "-bind", "0.0.0.0", "-terminate_token", "let-me") as server:
        port, port_out = server.config.port, server.config.port_out
        reply = send_termination(remote, port, port_out)
        assert reply is not None and isinstance(reply.error, ForbiddenError)
        assert "-terminate_token" in reply.error.message
        reply = send_termination(remote, port, port_out, token="wrong")
        assert isinstance(reply.error, ForbiddenError)
        with BertClient(ip=remote, port=port, port_out=port_out) as bc:  # still serving
            assert bc.encode(["still here"]).shape == (1, 32)
        terminate_server(remote, port, timeout=30_000, token="let-me")  # returns once the port is closed
        assert server.join(30)


def test_termination_from_this_host_needs_no_token() -> None:
    with running_server("-max_seq_len", "16") as server:
        terminate_server("127.0.0.1", server.config.port, timeout=30_000)
        assert server.join(30)


@pytest.fixture
def keys(tmp_path):
    server_dir, clients_dir, stranger_dir = (tmp_path / d for d in ("server", "clients", "stranger"))
    for d in (server_dir, clients_dir, stranger_dir):
        d.mkdir()
    _, server_secret = zmq.auth.create_certificates(server_dir, "server")
    client_public, client_secret = zmq.auth.create_certificates(tmp_path, "client")
    (clients_dir / "client.key").write_bytes(open(client_public, "rb").read())
    _, stranger_secret = zmq.auth.create_certificates(stranger_dir, "stranger")
    return {"server_secret": server_secret, "server_public": str(server_dir / "server.key"),
            "clients": str(clients_dir), "client_secret": client_secret, "stranger_secret": stranger_secret}


def test_curve_serves_authorized_clients_only(keys) -> None:
    with running_server("-max_seq_len", "16", "-zmq_secret_key", keys["server_secret"],
                        "-zmq_authorized_keys", keys["clients"]) as server:
        ports = {"port": server.config.port, "port_out": server.config.port_out}
        with BertClient(**ports, curve_server_key=keys["server_public"],
                        curve_client_cert=keys["client_secret"]) as bc:
            assert bc.encode(["secret words"]).shape == (1, 32)
            assert bc.server_config["server_version"] == "1.10.0"
        with pytest.raises(ServerTimeoutError):  # no key at all: the handshake never completes
            BertClient(**ports, connect_timeout=1500)
        with pytest.raises(ServerTimeoutError):  # a key the server has not authorized
            BertClient(**ports, connect_timeout=1500, curve_server_key=keys["server_public"],
                       curve_client_cert=keys["stranger_secret"])


def test_curve_without_an_allow_list_takes_any_client_that_knows_the_server_key(keys) -> None:
    with running_server("-max_seq_len", "16", "-zmq_secret_key", keys["server_secret"]) as server:
        ports = {"port": server.config.port, "port_out": server.config.port_out}
        with BertClient(**ports, curve_server_key=keys["server_public"]) as bc:  # a throw-away key pair
            assert bc.encode(["encrypted"]).shape == (1, 32)
        with pytest.raises(ServerTimeoutError):
            BertClient(**ports, connect_timeout=1500)
