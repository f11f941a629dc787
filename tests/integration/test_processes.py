"""The serving path on many processes (`processes.supervisor`): each named by its role, answers
reaching the right client from every edge process, and a killed intake or HTTP process costing
no answer: its requests are served elsewhere or fail loudly, and a new process takes its place."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.errors import BertServingError
from bert_serving.model import Encoder

from ..conftest import TINY_BERT
from .conftest import Concurrently, free_ports, running_server
from .processes import children, title

WORDS = "the quick brown fox jumps over a lazy dog while servers map sentences to vectors all day long".split()


def sentences(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def reference():
    return Encoder.load(str(TINY_BERT / "google"), max_seq_len=16, device="cpu")


@pytest.fixture(scope="module")
def spread_server():
    """Two intakes and two HTTP processes, as a bigger machine runs more."""
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-num_intake", "2", "-num_http", "2", "-http_port", str(http_port),
                        "-num_worker", "2") as server:
        yield server, f"http://127.0.0.1:{http_port}"


def test_every_process_is_named_by_its_role(spread_server) -> None:
    server, _ = spread_server
    titles = sorted(title(pid) for pid in children(os.getpid()) if title(pid).startswith("bert-serving:"))
    assert titles == ["bert-serving: http 0", "bert-serving: http 1", "bert-serving: intake 0",
                      "bert-serving: intake 1", "bert-serving: replica 0 cpu", "bert-serving: replica 1 cpu",
                      "bert-serving: router"]
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        config = bc.server_config
    assert config["num_intake"] == 2 and config["num_http"] == 2 and config["num_process"] == 8
    assert {title(pid) for pid in config["processes"].values()} == \
        {"bert-serving: router", "bert-serving: intake 0", "bert-serving: intake 1", "bert-serving: http 0",
         "bert-serving: http 1"}


def test_answers_reach_their_client_from_every_edge_process(spread_server, reference) -> None:
    """32 clients at once, 16 on ZeroMQ and 16 on HTTP, each sending texts of its own: every
    answer is the right one for its request (no answer crosses to another client)."""
    server, base = spread_server
    jobs = [[sentences(1000 * i + j, 1 + (i + j) % 3) for j in range(15)] for i in range(32)]

    def client(i: int) -> list[np.ndarray]:
        if i % 2:
            with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60_000) as bc:
                return [bc.encode(texts) for texts in jobs[i]]
        with httpx.Client(base_url=base, timeout=60) as http:
            return [np.array([d["embedding"] for d in http.post("/v1/embeddings", json={"input": texts}).json()["data"]])
                    for texts in jobs[i]]

    results = Concurrently(client, 32).start().join(240)
    for i, answers in results.items():
        for texts, vectors in zip(jobs[i], answers):
            np.testing.assert_allclose(vectors, reference.encode(texts), atol=1e-5)
    statistic = server.sync_stats().statistic()
    assert statistic["num_completed_request"] >= 32 * 15 and statistic["errors"] == {}


def _wait_until_up(server, name: str, old_pid: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = server.supervisor.pids()[name]
        if pid != old_pid and server.readiness()["status"] == "ready":
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{name} was not replaced: {server.readiness()}")


def _kill_under_load(server, client, name: str, outcomes: list, stop: threading.Event, count: int) -> None:
    """8 ``client`` threads send until ``stop``; after ``count`` outcomes the process ``name`` is
    killed, and the load goes on until it is back and ``count`` more have come."""
    clients = Concurrently(client, 8).start()
    while len(outcomes) < count:
        time.sleep(0.01)
    victim = server.supervisor.pids()[name]
    os.kill(victim, signal.SIGKILL)
    _wait_until_up(server, name, victim)
    served = len(outcomes)
    while len(outcomes) < served + count:  # and on the new process too
        time.sleep(0.01)
    stop.set()
    clients.join(60)  # a request waited for forever would raise the client's timeout here


def test_a_killed_intake_loses_no_request(reference) -> None:
    """8 clients send small requests without pause; intake 0 is killed among them. Every request is
    answered with its vectors (the router sends the dead intake's requests to the other one), none
    waits for ever, and a new intake 0 serves again."""
    with running_server("-max_seq_len", "16", "-num_intake", "2") as server:
        stop, outcomes, lock = threading.Event(), [], threading.Lock()

        def client(i: int) -> None:
            with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=30_000) as bc:
                j = 0
                while not stop.is_set():
                    texts = sentences(10_000 * i + j, 1 + j % 3)
                    try:
                        outcome = bc.encode(texts)
                    except BertServingError as exc:  # fails loudly: said, not lost
                        outcome = exc
                    with lock:
                        outcomes.append((texts, outcome))
                    j += 1

        _kill_under_load(server, client, "intake-0", outcomes, stop, 200)  # a lost request: a 30 s timeout
    errors = [outcome for _, outcome in outcomes if isinstance(outcome, BaseException)]
    assert errors == []
    for texts, vectors in outcomes:
        np.testing.assert_allclose(vectors, reference.encode(texts), atol=1e-5)


def test_a_killed_http_process_fails_its_connections_loudly_and_is_replaced(reference) -> None:
    """HTTP clients send without pause; HTTP process 0 is killed among them. Each request gets its
    vectors or a closed connection at once (never a wait for ever), and a new process serves."""
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-num_http", "2", "-http_port", str(http_port)) as server:
        stop, outcomes, lock = threading.Event(), [], threading.Lock()

        def client(i: int) -> None:
            j = 0
            while not stop.is_set():
                texts = sentences(20_000 * i + j, 1 + j % 3)
                try:  # a new connection each time: the kernel spreads them over both processes
                    answer = httpx.post(f"http://127.0.0.1:{http_port}/v1/embeddings", json={"input": texts},
                                        timeout=30)
                    outcome = np.array([d["embedding"] for d in answer.json()["data"]])
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError, httpx.WriteError) as exc:
                    outcome = exc
                with lock:
                    outcomes.append((texts, outcome))
                j += 1

        _kill_under_load(server, client, "http-0", outcomes, stop, 100)  # one lost: httpx.ReadTimeout
    for texts, outcome in outcomes:
        if isinstance(outcome, np.ndarray):
            np.testing.assert_allclose(outcome, reference.encode(texts), atol=1e-5)
    assert sum(isinstance(o, np.ndarray) for _, o in outcomes) >= 200
