"""Access: TERMINATION only from the server's host (or with its token, from another host: a
network namespace of the test's own), CurveZMQ keys."""

from __future__ import annotations

import json

import pytest
import zmq
import zmq.auth

from bert_serving.client import BertClient, terminate_server
from bert_serving.errors import ServerTimeoutError

from ..conftest import TINY_BERT
from .conftest import running_server
from .netns import SERVER_IP, two_hosts
from .processes import BIN, wait_for_line

# A peer in another network namespace (netns.py): its messages arrive from 192.0.2.2.
PEER_SCRIPT = r"""
import json, random, sys
import zmq
from bert_serving import protocol
from bert_serving.client import BertClient
from bert_serving.errors import ForbiddenError

ip, port, port_out, secret = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
rng = random.Random(15)
tokens = [None, b"", b" ", b"  ", b"\x00", b"\xff\xfe", b"\xc3", "jeton-\u00e9".encode(), "\u2603\U0001f600".encode(),
          "\udcff".encode("utf-8", "surrogatepass"), b"x" * 1_000_000, secret + b" ", b" " + secret, secret + b"\n",
          secret[:-1], secret + b"\x00", secret.upper(), "let-m\u00e9".encode()]
tokens += [bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(150)]
tokens += ["".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(rng.randrange(1, 20))).encode("utf-8", "surrogatepass")
           for _ in range(150)]
assert secret not in tokens
out = {"refused": 0, "other": []}
with BertClient(ip=ip, port=port, port_out=port_out, timeout=20_000) as bc:
    out["before"] = list(bc.encode(["from the other host"]).shape)
with zmq.Context() as ctx, ctx.socket(zmq.PUSH) as push, ctx.socket(zmq.SUB) as sub:
    sub.setsockopt(zmq.SUBSCRIBE, b"remote-admin")
    sub.setsockopt(zmq.RCVTIMEO, 10_000)
    sub.connect(f"tcp://{ip}:{port_out}")
    push.connect(f"tcp://{ip}:{port}")
    for req_id, token in enumerate(tokens, start=1):
        payload = protocol.TERMINATION if token is None else protocol.TERMINATION + b" " + token
        push.send_multipart(protocol.request_frames(b"remote-admin", payload, req_id))
        reply = protocol.parse_reply(sub.recv_multipart())  # zmq.Again here: the server fell silent
        if reply.req_id == req_id and isinstance(reply.error, ForbiddenError) and "-terminate_token" in str(reply.error):
            out["refused"] += 1
        else:
            out["other"].append(repr(reply))
    out["tokens"] = len(tokens)
with BertClient(ip=ip, port=port, port_out=port_out, timeout=20_000) as bc:
    out["after"] = list(bc.encode(["still serving"]).shape)
    out["ready"] = bc.server_status["ready"]
print(json.dumps(out))
"""


def test_termination_from_another_host_needs_the_token_whatever_it_sends() -> None:
    """Tokens of every kind (none, empty, binary, not UTF-8, unicode, huge, near misses) from a
    peer on another host: each one refused with an answer, and the server goes on serving; the
    right token stops it."""
    with two_hosts() as hosts:
        server = hosts.start_in_server(str(BIN / "bert-serving-start"), f"-model_dir={TINY_BERT / 'google'}",
                                       "-max_seq_len=16", "-bind=0.0.0.0", "-port=5555", "-port_out=5556",
                                       "-terminate_token=let-me")
        wait_for_line(server, "ready to serve")
        done = hosts.python_in_peer(PEER_SCRIPT, SERVER_IP, "5555", "5556", "let-me")
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        assert out["before"] == out["after"] == [1, 32] and out["ready"]
        assert out["refused"] == out["tokens"] > 300 and out["other"] == []
        assert server.poll() is None
        stopped = hosts.run_in_peer(str(BIN / "bert-serving-terminate"), f"-ip={SERVER_IP}", "-port=5555",
                                    "-port_out=5556", "-token=let-me")
        assert stopped.returncode == 0, stopped.stderr
        assert server.wait(60) == 0
        assert "refused TERMINATION from 192.0.2.2" in server.stdout.read()


def test_a_refused_termination_is_reported_at_once_by_the_command() -> None:
    with two_hosts() as hosts:
        server = hosts.start_in_server(str(BIN / "bert-serving-start"), f"-model_dir={TINY_BERT / 'google'}",
                                       "-max_seq_len=16", "-bind=0.0.0.0", "-port=5555", "-port_out=5556")
        wait_for_line(server, "ready to serve")
        refused = hosts.run_in_peer(str(BIN / "bert-serving-terminate"), f"-ip={SERVER_IP}", "-port=5555",
                                    "-port_out=5556", "-token=guess")
        assert refused.returncode == 1 and "-terminate_token" in refused.stderr
        assert server.poll() is None


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
