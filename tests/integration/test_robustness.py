"""No message, thread death or departed client leaves a half-server: every message is answered
or refused, a dead serving loop stops the server non-zero, and an HTTP client that disconnects
has its queued rows dropped before they run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import zmq

from bert_serving.client import BertClient
from bert_serving.errors import ServerError
from bert_serving.server.pipeline.request import Ticket
from bert_serving.server.pipeline.stats import Stats
from bert_serving.server.zmq.access import TerminationPolicy
from bert_serving.server.zmq.frontend import Frontend

from ..conftest import TINY_BERT
from .conftest import free_ports, running_server
from .processes import alive, children, stop, wait_for_line


@pytest.mark.parametrize("token", [b"", b" ", b"\xff\xfe\x00", "jeton-\u00e9\u2603".encode(), b"x" * 1_000_000,
                                   "let-me\u0301".encode(), b"let-me\n", "\udcff".encode("utf-8", "surrogatepass")])
def test_any_termination_token_from_another_host_is_refused_without_raising(token: bytes) -> None:
    policy = TerminationPolicy("let-me")
    assert policy.allows("192.0.2.2", token) is False
    assert policy.allows("192.0.2.2", token.decode("utf-8", "replace")) is False
    assert policy.allows("192.0.2.2", b"let-me") and policy.allows("127.0.0.1", token)


class BrokenGateway:
    """The server as the frontend sees it, with a `submit` that has a bug."""

    def __init__(self) -> None:
        self.stats = Stats()
        self.failures: list[str] = []

    def submit(self, texts, is_tokenized, reply, client) -> Ticket:
        raise RuntimeError("a bug in the pipeline")

    def together(self):
        return contextlib.nullcontext()

    def status(self, with_statistic: bool = False, client: str = "") -> dict:
        return {"server_version": "1.10.0", "max_seq_len": 16}

    def stage_failed(self, stage: str, error: BaseException) -> None:
        self.failures.append(stage)

    def request_stop(self) -> None:
        pass


def test_a_message_that_raises_is_answered_and_the_io_loop_goes_on() -> None:
    ctx, gateway = zmq.Context(), BrokenGateway()
    port, port_out = free_ports(2)
    frontend = Frontend(ctx, bind="127.0.0.1", port=port, port_out=port_out, gateway=gateway)
    frontend.bind()
    frontend.start()
    try:
        with BertClient(port=port, port_out=port_out, timeout=10_000) as bc:
            for _ in range(3):
                with pytest.raises(ServerError, match="the server failed on this message"):
                    bc.encode(["anything"])
            assert bc.server_config["server_version"] == "1.10.0"  # still serving
        assert frontend.alive and gateway.failures == [] and gateway.stats.errors["server_error"] == 3
    finally:
        frontend.close()
        ctx.destroy(linger=0)


def test_a_dead_io_thread_makes_the_server_fail_loudly() -> None:
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(http_port)) as server:
        with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
            assert bc.encode(["fine"]).shape == (1, 32)

        def broken(force: bool = False) -> None:
            raise RuntimeError("injected fault in the I/O loop")

        server.frontend._expire_held = broken  # runs on every turn of the loop, outside any one message
        assert server.join(60), "the server kept running without its ZeroMQ edge"
        state = server.readiness()
        assert state["status"] == "failed" and not state["ready"]
        assert "ZeroMQ frontend" in server.failure and "injected fault" in server.failure


def test_the_command_exits_non_zero_when_a_serving_loop_dies() -> None:
    port, port_out = free_ports(2)
    script = (
        "import sys\n"
        "from bert_serving.server.zmq.frontend import Frontend\n"
        "original = Frontend._expire_held\n"
        "def broken(self, force=False):\n"
        "    if self._gateway.serving():\n"
        "        raise RuntimeError('injected fault in the I/O loop')\n"
        "    return original(self, force)\n"
        "Frontend._expire_held = broken\n"
        "from bert_serving.server.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, f"-model_dir={TINY_BERT / 'google'}", f"-port={port}",
                             f"-port_out={port_out}", "-bind=127.0.0.1", "-max_seq_len=16"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_line(proc, "ready to serve")
        workers = children(proc.pid)
        assert proc.wait(60) == 1
        output = proc.stdout.read()
        assert "the ZeroMQ frontend stopped: RuntimeError: injected fault" in output and "server stopped" in output
        assert not any(alive(pid) for pid in workers)
    finally:
        stop(proc)


def test_a_client_that_disconnects_has_its_queued_rows_dropped() -> None:
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(http_port), "-max_batch_size", "8",
                        "-priority_batch_size", "0") as server:
        worker = server.workers.feeders[0].replica.process.pid
        rows_before = server.stats.num_batched_rows
        os.kill(worker, signal.SIGSTOP)  # nothing runs meanwhile: the request below waits in the queue
        try:
            texts = [f"sentence number {i} for a client that leaves" for i in range(400)]
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"http://127.0.0.1:{http_port}/v1/embeddings", json={"input": texts}, timeout=1.5)
            deadline = time.monotonic() + 30
            while server.stats.errors.get("abandoned", 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.stats.errors.get("abandoned") == 1
        finally:
            os.kill(worker, signal.SIGCONT)
        with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=30_000) as bc:
            assert bc.encode(["after the one who left"]).shape == (1, 32)
        ran = server.stats.num_batched_rows - rows_before
        handed_over = server.config.prefetch_size * 8  # batches the worker had been sent before it stopped
        assert ran <= handed_over + 1, f"{ran} of 400 rows ran for a client that had gone"
        assert server.batcher.queued_rows == 0 and server.sink.outstanding == 0
        statistic = server.stats.statistic()
    assert statistic["num_completed_request"] >= 1 and statistic["errors"] == {"abandoned": 1}


def test_http_connections_beyond_the_cap_get_503_at_once() -> None:
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(http_port), "-http_max_connect", "3"):
        held = [socket.create_connection(("127.0.0.1", http_port)) for _ in range(2)]  # idle keep-alive clients
        try:
            time.sleep(0.3)  # accepted by the server
            third = httpx.post(f"http://127.0.0.1:{http_port}/encode", json={"texts": ["the third"]}, timeout=10)
            assert third.status_code == 200  # the cap is 3 connections: this request's own is one of them
            held.append(socket.create_connection(("127.0.0.1", http_port)))
            time.sleep(0.3)
            extra = httpx.post(f"http://127.0.0.1:{http_port}/encode", json={"texts": ["one more"]}, timeout=10)
            assert extra.status_code == 503 and extra.headers["connection"] == "close"
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the server notices the closed connections
            answer = httpx.post(f"http://127.0.0.1:{http_port}/encode", json={"texts": ["room again"]}, timeout=10)
            if answer.status_code == 200:
                break
            time.sleep(0.05)
        assert answer.status_code == 200


def test_http_bodies_being_read_are_bounded_together() -> None:
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(http_port), "-max_queued_bytes", "65536"):
        body = b'{"texts": ["' + b"word " * 8000 + b'"]}'  # 40 KB
        slow = socket.create_connection(("127.0.0.1", http_port))
        try:
            slow.sendall(b"POST /encode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n" % len(body) + body[:1000])  # the rest comes later
            time.sleep(0.3)
            refused = httpx.post(f"http://127.0.0.1:{http_port}/encode", content=body,
                                 headers={"content-type": "application/json"}, timeout=10)
            assert refused.status_code == 429 and refused.json()["code"] == "overloaded"
            slow.sendall(body[1000:])
            answer = slow.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            slow.close()
        fine = httpx.post(f"http://127.0.0.1:{http_port}/encode", content=body,
                          headers={"content-type": "application/json"}, timeout=10)
        assert fine.status_code == 200  # the budget was given back
