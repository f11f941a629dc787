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
import threading
import time
from concurrent.futures import Future

import httpx
import pytest
import zmq

from bert_serving.client import BertClient
from bert_serving.errors import ServerError
from bert_serving.server.pipeline.gateway import Observation
from bert_serving.server.pipeline.request import Ticket
from bert_serving.server.pipeline.stats import Stats
from bert_serving.server.zmq.access import TerminationPolicy
from bert_serving.server.zmq.frontend import Frontend
from bert_serving.server.zmq.router import Router

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

    def submit(self, texts, is_tokenized, reply, client, **task) -> Ticket:
        raise RuntimeError("a bug in the pipeline")

    def together(self):
        return contextlib.nullcontext()

    def observe(self, **what) -> Future:
        done: Future = Future()
        done.set_result(Observation(status={"server_version": "1.10.0", "max_seq_len": 16}))
        return done

    def stage_failed(self, stage: str, error: BaseException) -> None:
        self.failures.append(stage)

    def request_stop(self) -> None:
        pass


@contextlib.contextmanager
def router_in_this_process(tmp_path):
    """The router of a server, on a thread of this process, on fresh ports."""
    ctx, stopping = zmq.Context(), threading.Event()
    port, port_out = free_ports(2)
    router = Router(ctx, bind="127.0.0.1", port=port, port_out=port_out, intakes_socket=f"{tmp_path}/intakes")
    router.bind()

    def loop() -> None:
        while not stopping.is_set():
            router.turn(20)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield f"{tmp_path}/intakes", port, port_out
    finally:
        stopping.set()
        thread.join()
        router.close()
        ctx.destroy(linger=0)


def test_a_message_that_raises_is_answered_and_the_intake_goes_on(tmp_path) -> None:
    gateway = BrokenGateway()
    with router_in_this_process(tmp_path) as (path, port, port_out):
        frontend, stopping = Frontend("intake-0", path, gateway=gateway), threading.Event()

        def loop() -> None:  # the intake's loop, on a thread of this process
            frontend.connect()
            while not stopping.is_set():
                if frontend.router.poll(0.02):
                    frontend.pump()
                frontend.flush()

        intake = threading.Thread(target=loop)
        intake.start()
        try:
            with BertClient(port=port, port_out=port_out, timeout=10_000) as bc:
                for _ in range(3):
                    with pytest.raises(ServerError, match="the server failed on this message"):
                        bc.encode(["anything"])
                assert bc.server_config["server_version"] == "1.10.0"  # still serving
            assert gateway.failures == [] and gateway.stats.errors["server_error"] == 3
        finally:
            stopping.set()
            intake.join()
            frontend.close()


def test_a_serving_process_that_cannot_be_restarted_fails_the_server_loudly() -> None:
    """The router dies and its port is taken meanwhile: it cannot come back, and the server says
    so (``/ready`` 503 ``failed``) and stops, rather than serving HTTP alone."""
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(http_port)) as server:
        with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
            assert bc.encode(["fine"]).shape == (1, 32)
        thief = socket.socket()
        thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            os.kill(server.supervisor.pids()["router"], signal.SIGKILL)
            deadline = time.monotonic() + 10
            while True:  # the router's port, as soon as its process is gone
                try:
                    thief.bind(("127.0.0.1", server.config.port))
                    thief.listen()
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.005)
            assert server.join(60), "the server kept running without its ZeroMQ ports"
        finally:
            thief.close()
        state = server.readiness()
        assert state["status"] == "failed" and not state["ready"] and state["processes"]["router"] == "failed"
        assert "the router process stopped" in server.failure and "already in use" in server.failure


def test_the_command_exits_non_zero_when_a_serving_loop_dies() -> None:
    port, port_out = free_ports(2)
    script = (
        "import sys\n"
        "from bert_serving.server.link.hub import Hub\n"
        "original = Hub._answer_views\n"
        "def broken(self, now):\n"
        "    if self._control.is_ready.is_set():\n"
        "        raise RuntimeError('injected fault in the hub')\n"
        "    return original(self, now)\n"
        "Hub._answer_views = broken\n"
        "from bert_serving.server.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, f"-model_dir={TINY_BERT / 'google'}", f"-port={port}",
                             f"-port_out={port_out}", "-bind=127.0.0.1", "-max_seq_len=16"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_line(proc, "ready to serve")
        everyone = children(proc.pid)
        assert proc.wait(60) == 1
        output = proc.stdout.read()
        assert "the link to the edge processes stopped: RuntimeError: injected fault" in output
        assert "server stopped" in output
        assert not any(alive(pid) for pid in everyone)
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
            while server.sync_stats().errors.get("abandoned", 0) < 1 and time.monotonic() < deadline:
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
        statistic = server.sync_stats().statistic()
    assert statistic["num_completed_request"] >= 1 and statistic["errors"] == {"abandoned": 1}


def test_http_requests_beyond_the_cap_are_refused_at_once_in_json() -> None:
    """-http_max_connect 3: idle connections make way for new ones; three requests in progress
    (their bodies still coming) fill it, and a fourth is refused at once, in JSON."""
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(http_port), "-http_max_connect", "3"):
        idle = [socket.create_connection(("127.0.0.1", http_port)) for _ in range(5)]  # more than the cap
        busy = []
        try:
            time.sleep(0.3)  # accepted by the server
            fine = httpx.post(f"http://127.0.0.1:{http_port}/encode", json={"texts": ["the sixth"]}, timeout=10)
            assert fine.status_code == 200  # idle connections do not keep a request out
            body = b'{"texts": ["in progress"]}'
            for _ in range(3):  # requests in progress: their headers in, their bodies not yet
                busy.append(socket.create_connection(("127.0.0.1", http_port)))
                busy[-1].sendall(b"POST /encode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n" % len(body) + body[:5])
            time.sleep(0.3)
            extra = httpx.post(f"http://127.0.0.1:{http_port}/encode", json={"texts": ["one more"]}, timeout=10)
            assert extra.status_code == 429 and extra.headers["connection"] == "close"
            assert extra.json()["code"] == "overloaded" and "-http_max_connect" in extra.json()["description"]
            assert extra.headers["retry-after"] == "1"
            for sock in busy:  # the requests in progress are served
                sock.sendall(body[5:])
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            for sock in idle + busy:
                sock.close()
        answer = httpx.post(f"http://127.0.0.1:{http_port}/encode", json={"texts": ["room again"]}, timeout=10)
        assert answer.status_code == 200


def test_a_slow_header_peer_with_more_connections_than_the_cap_keeps_no_one_out() -> None:
    """Slowloris, from one peer: 150 connections against -http_max_connect 100, a header line
    into each every second, reopened as soon as the server closes one, for 40 s. Every
    well-behaved request meanwhile is answered 200, and the server closes the slow connections
    (made way for, or past the header read timeout) instead of holding them for ever."""
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(http_port), "-http_max_connect", "100"):
        stop, closed, opened = threading.Event(), [0], [0]

        def slowloris() -> None:
            conns: list[socket.socket] = []

            def connect() -> None:
                sock = socket.create_connection(("127.0.0.1", http_port))
                sock.sendall(b"POST /encode HTTP/1.1\r\nhost: x\r\n")
                sock.setblocking(False)
                conns.append(sock)
                opened[0] += 1

            while len(conns) < 150:
                connect()
            while not stop.wait(1.0):
                for sock in list(conns):
                    try:
                        if sock.recv(1024) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        try:
                            sock.send(b"x-slow: still here\r\n")  # one more header line, never the end
                            continue
                        except OSError:
                            pass
                    except OSError:
                        pass
                    conns.remove(sock)  # the server closed it
                    sock.close()
                    closed[0] += 1
                    connect()
            for sock in conns:
                sock.close()

        attacker = threading.Thread(target=slowloris)
        attacker.start()
        codes = []
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                answer = httpx.post(f"http://127.0.0.1:{http_port}/v1/embeddings", json={"input": ["well behaved"]},
                                    timeout=10)
                codes.append(answer.status_code)
                time.sleep(0.5)
        finally:
            stop.set()
            attacker.join(30)
        assert codes and set(codes) == {200}, codes
        assert closed[0] >= 150, f"only {closed[0]} of {opened[0]} slow connections were closed in 40 s"


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
