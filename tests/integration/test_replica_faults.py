"""Worker processes that stop answering, texts that make the model fail, signals meant for the
server, and a channel no one else may use: the server answers every request regardless."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.errors import InferenceError
from bert_serving.model import Encoder

from ..conftest import TINY_BERT
from .conftest import Concurrently, running_server

POISON = "zzpoison"  # in the vocabulary, but past the model's embedding table


@pytest.fixture(scope="module")
def poisoned_model(tmp_path_factory) -> Path:
    """tiny-bert with one word more in its vocabulary than its embedding table has rows: the
    model raises (index out of range) on any text holding that word, and only there."""
    folder = tmp_path_factory.mktemp("poisoned")
    for item in (TINY_BERT / "google").iterdir():
        shutil.copy(item, folder / item.name)
    with open(folder / "vocab.txt", "a", encoding="utf-8") as vocab:
        vocab.write(POISON + "\n")
    return folder


def client(server, timeout_ms: int = 60_000) -> BertClient:
    return BertClient(port=server.config.port, port_out=server.config.port_out, timeout=timeout_ms)


def wait_for(condition, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_stopped_worker_is_replaced_and_its_batch_answered_within_the_deadline() -> None:
    expected = Encoder.load(str(TINY_BERT / "google"), device="cpu").encode(["still answered"])
    with running_server("-batch_timeout_s", "2") as server:
        victim = server.workers.feeders[0].replica.process.pid
        os.kill(victim, signal.SIGSTOP)  # a worker that hangs: alive, silent
        try:
            with client(server) as bc:
                started = time.monotonic()
                vectors = bc.encode(["still answered"])
                took = time.monotonic() - started
        finally:
            if Path(f"/proc/{victim}").exists():
                os.kill(victim, signal.SIGCONT)
        np.testing.assert_allclose(vectors, expected, atol=1e-5)
        assert took >= 2  # answered after the deadline, by the replacement
        assert server.workers.describe()[0]["restarts"] == 1
        assert server.workers.describe()[0]["pid"] != victim
        wait_for(lambda: not Path(f"/proc/{victim}").exists() or "Z" in Path(f"/proc/{victim}/stat").read_text(),
                 what="the hung worker to be killed")
        assert server.sync_stats().statistic()["errors"] == {}


def test_a_failing_text_shared_with_fifteen_other_clients_fails_only_its_own_request(poisoned_model) -> None:
    texts = [f"the cat sat on mat {'the ' * i}" for i in range(16)]
    texts[7] = f"the {POISON} sat"
    expected = Encoder.load(str(TINY_BERT / "google"), device="cpu").encode(texts)
    with running_server("-prefetch_size", "1", model_dir=poisoned_model) as server:
        worker = server.workers.feeders[0].replica.process.pid
        os.kill(worker, signal.SIGSTOP)  # hold the model, so that the 16 requests queue up together
        try:
            with client(server) as blocker:
                blocker.encode(["the first batch"], blocking=False)
                wait_for(lambda: server.stats.worker_states[0] == "busy", what="the first batch in flight")

                def one(i: int):
                    with client(server) as bc:
                        try:
                            return bc.encode([texts[i]])
                        except InferenceError as exc:
                            return exc

                clients = Concurrently(one, 16).start()
                wait_for(lambda: server.batcher.queued_rows == 16, what="16 queued texts")
        finally:
            os.kill(worker, signal.SIGCONT)
        results = clients.join(60)
        statistic = server.sync_stats().statistic()
    for i, result in results.items():
        if i == 7:
            assert isinstance(result, InferenceError) and "index out of range" in str(result)
        else:
            np.testing.assert_allclose(result, expected[i : i + 1], atol=1e-5)
    assert statistic["worker_restarts"] == 0 and statistic["errors"] == {"inference_failed": 1}
    # the 16 went in as one batch, then halves were retried: 1 + 2 + 2 + 2 + 2 more passes at most
    assert statistic["num_forward_passes"] <= 1 + 1 + 8


def test_workers_ignore_the_terminals_signals_and_keep_serving() -> None:
    with running_server() as server, client(server) as bc:
        worker = server.workers.feeders[0].replica.process.pid
        assert os.getsid(worker) != os.getsid(0)  # a session of its own: Ctrl-C at a terminal is not for it
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(worker, signum)
        assert bc.encode(["still here"]).shape == (1, 32)
        assert server.workers.describe()[0] == {**server.workers.describe()[0], "pid": worker, "restarts": 0}


def _unix_sockets() -> dict[str, tuple[int, str]]:
    """Every Unix socket of this machine: inode -> (flags, path), from /proc/net/unix."""
    found = {}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        found[fields[6]] = (int(fields[3], 16), fields[7] if len(fields) > 7 else "")
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


@pytest.mark.skipif(not Path("/proc/net/unix").exists(), reason="reads Linux's /proc")
def test_the_worker_channel_has_no_address_anyone_could_connect_to() -> None:
    """The worker's channel is an inherited socket pair: no path, no listening socket."""
    listening = 1 << 16  # __SO_ACCEPTCON
    with running_server() as server:
        worker = server.workers.feeders[0].replica.process.pid
        sockets = _unix_sockets()
        mine = [sockets[i] for i in _socket_inodes(worker) if i in sockets]
        assert mine, "the worker holds its end of the pair"
        assert all(not path and not flags & listening for flags, path in mine)
        server_side = [sockets[i] for i in _socket_inodes(os.getpid()) if i in sockets]  # the server runs here
        assert not [path for flags, path in server_side if flags & listening], "nothing to connect to"
        with client(server) as bc:
            assert bc.encode(["still served"]).shape == (1, 32)


def test_a_worker_stays_awake_after_a_batch_only_as_long_as_asked() -> None:
    def cpu_seconds(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    for spin_ms, at_least, at_most in (("0", 0.0, 0.1), ("400", 0.15, 0.6)):
        with running_server("-idle_spin_ms", spin_ms) as server, client(server) as bc:
            worker = server.workers.feeders[0].replica.process.pid
            assert b"GOMP_SPINCOUNT=10000" in Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
            bc.encode(["wake it up"])
            before = cpu_seconds(worker)
            time.sleep(1.5)  # idle: at most one spin, then asleep
            spent = cpu_seconds(worker) - before
            assert at_least <= spent <= at_most, (spin_ms, spent)
            assert server.config.idle_spin_ms == float(spin_ms)
