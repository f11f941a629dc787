"""Faults: a worker killed mid-load, shutdown by signal during load, a server restarted under
an idle client. Every request is answered exactly once, with correct vectors or an error."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.errors import NotReadyError
from bert_serving.model import Encoder

from ..conftest import TINY_BERT
from .conftest import Concurrently, free_ports, running_server
from .processes import alive, children, replicas, start_cli, stop, wait_for_line

WORDS = "the quick brown fox jumps over a lazy dog while servers map sentences to vectors all day long".split()


def sentences(seed: int, n: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(5, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def minilm():
    return Encoder.load(device="cpu", max_seq_len=64)


def test_worker_killed_during_load_every_request_answered_correctly(minilm) -> None:
    jobs = [sentences(i, 120) for i in range(8)]  # 960 sentences from 8 clients
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "64", "-max_batch_size", "32", "-http_port", str(http_port),
                        model_dir=None) as server:
        def client(i: int) -> np.ndarray:
            with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=120_000,
                            chunk_size=50) as bc:
                return bc.encode(jobs[i])

        clients = Concurrently(client, 8).start()
        while server.stats.num_batches < 5:  # the load is running
            time.sleep(0.01)
        victim = server.workers.feeders[0].replica.process.pid
        os.kill(victim, signal.SIGKILL)
        degraded = None
        deadline = time.monotonic() + 30
        while degraded is None and time.monotonic() < deadline:  # /ready shows it while it lasts
            ready = httpx.get(f"http://127.0.0.1:{http_port}/ready", timeout=5)
            if ready.status_code == 503:
                degraded = ready.json()
            time.sleep(0.02)
        results = clients.join(180)
        assert httpx.get(f"http://127.0.0.1:{http_port}/ready", timeout=5).status_code == 200
        statistic = server.sync_stats().statistic()
    assert degraded is not None and degraded["status"] == "degraded" and "restarting" in degraded["workers"].values()
    assert statistic["worker_restarts"] == 1 and statistic["errors"] == {}
    assert statistic["num_completed_request"] == statistic["num_data_request"]  # each answered once
    assert not alive(victim)
    for i, job in enumerate(jobs):
        np.testing.assert_allclose(results[i], minilm.encode(job), atol=1e-5)


# (SIGINT to the server alone takes SIGTERM's path: the same handler)
@pytest.mark.parametrize("how", ["SIGTERM", "bert-serving-terminate", "SIGINT to the group", "SIGTERM to the group"])
def test_shutdown_during_load_drains_and_leaves_no_process(how, minilm) -> None:
    """Also Ctrl-C in a terminal and systemd stopping the unit, which signal the whole process
    group: the workers must not die with the server and be taken for crashed."""
    port, port_out = free_ports(2)
    proc = start_cli(f"-port={port}", f"-port_out={port_out}", "-max_seq_len=64", "-num_worker=2",
                     "-bind=127.0.0.1", "-drain_timeout=60", own_group=True)
    try:
        wait_for_line(proc, "ready to serve")
        workers = replicas(proc.pid)
        assert len(workers) == 2
        everyone = children(proc.pid)  # the replicas, the router, the intake
        outcomes: list[tuple[float, object]] = []
        lock = threading.Lock()
        stop_at = [0.0]

        def client(i: int) -> None:
            with BertClient(port=port, port_out=port_out, timeout=120_000) as bc:
                for j in range(40):
                    job = sentences(100 * i + j, 40)
                    try:
                        outcome = (bc.encode(job), job)
                    except NotReadyError as exc:
                        outcome = (exc, job)
                    with lock:
                        outcomes.append((time.monotonic(), outcome))
                    if isinstance(outcome[0], NotReadyError):
                        return

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        while len(outcomes) < 4:
            time.sleep(0.01)
        stop_at[0] = time.monotonic()
        if how == "bert-serving-terminate":
            from bert_serving.client import terminate_server

            threading.Thread(target=terminate_server, args=("127.0.0.1", port, 60_000), daemon=True).start()
        elif how.endswith("to the group"):
            os.killpg(proc.pid, getattr(signal, how.split()[0]))  # the server leads its own group
        else:
            proc.send_signal(getattr(signal, how))
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a client was never answered"
        assert proc.wait(70) == 0
        output = proc.stdout.read()
        assert "server stopped" in output and "Traceback" not in output
        assert "restarting it" not in output and "died with exit code" not in output  # no worker taken for crashed
        assert not any(alive(pid) for pid in everyone), "a process outlived the server"
        served_after = [o for when, o in outcomes if when > stop_at[0] and isinstance(o[0], np.ndarray)]
        assert served_after, "requests accepted before the signal were not served after it"
        for _, (result, job) in outcomes:
            if isinstance(result, np.ndarray):
                np.testing.assert_allclose(result, minilm.encode(job), atol=1e-5)
    finally:
        stop(proc)


def test_idle_client_survives_a_server_restart_on_the_same_ports() -> None:
    port, port_out = free_ports(2)
    flags = ["-model_dir", str(TINY_BERT / "google"), "-max_seq_len", "16"]
    first = start_cli(*flags, f"-port={port}", f"-port_out={port_out}", "-bind=127.0.0.1")
    second = None
    try:
        wait_for_line(first, "ready to serve")
        client = BertClient(port=port, port_out=port_out, timeout=30_000)
        assert client.encode(["the cat"]).shape == (1, 32)
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
        second = start_cli(*flags, f"-port={port}", f"-port_out={port_out}", "-bind=127.0.0.1")
        wait_for_line(second, "ready to serve")
        assert client.encode(["the dog"]).shape == (1, 32)  # ZeroMQ reconnected both sockets
        client.close()
    finally:
        stop(first)
        if second is not None:
            stop(second)


def test_heartbeats_are_on_for_both_sides(tiny_server, tmp_path) -> None:
    import zmq

    from bert_serving.server.zmq.router import Router

    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out) as bc:
        for sock in (bc.sender, bc.receiver):
            assert sock.getsockopt(zmq.HEARTBEAT_IVL) > 0 and sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
    ctx = zmq.Context()
    router = Router(ctx, bind="127.0.0.1", port=free_ports(1)[0], port_out=free_ports(1)[0],
                    intakes_socket=f"{tmp_path}/intakes")
    try:
        router.bind()  # the server's public sockets, as the router process binds them
        for sock in (router.pull, router.pub):
            assert sock.getsockopt(zmq.HEARTBEAT_IVL) > 0 and sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) > 0
    finally:
        router.close()
        ctx.destroy(linger=0)


def test_terminate_waits_for_a_long_drain_and_says_so_when_it_gives_up() -> None:
    from .processes import BIN

    port, port_out = free_ports(2)
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={port}", f"-port_out={port_out}",
                     "-max_seq_len=16", "-bind=127.0.0.1", "-drain_timeout=30", own_group=True)
    try:
        wait_for_line(proc, "ready to serve")
        worker, = replicas(proc.pid)
        client = BertClient(port=port, port_out=port_out, timeout=60_000)
        os.kill(worker, signal.SIGSTOP)  # the drain now lasts until it is continued
        answer: list = []
        waiting = threading.Thread(target=lambda: answer.append(client.encode(["accepted before the stop"])))
        waiting.start()
        terminate = [str(BIN / "bert-serving-terminate"), "-port", str(port)]
        impatient = subprocess.run([*terminate, "-timeout", "1500"], capture_output=True, text=True, timeout=60)
        assert impatient.returncode == 1 and "still draining" in impatient.stderr
        patient = subprocess.Popen(terminate, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(6)  # longer than the 5 s bert-serving-terminate used to wait
        assert patient.poll() is None and proc.poll() is None  # both still waiting: the drain goes on
        os.kill(worker, signal.SIGCONT)
        out, err = patient.communicate(timeout=60)
        assert patient.returncode == 0, err
        assert "shutdown signal sent" in out
        assert proc.wait(30) == 0
        waiting.join(30)
        assert answer and answer[0].shape == (1, 32)  # the request accepted before was answered
        client.close()
    finally:
        stop(proc)
