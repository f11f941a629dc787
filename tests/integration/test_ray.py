"""Replicas on a Ray cluster: a real 2-node cluster (`ray.cluster_utils.Cluster`, each node its
own raylet and object store), a real server with -ray_address, real clients; the vectors must
be the local encoder's, and losing a replica or a whole node mid-load must lose no request."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, remove_placement_group

from bert_serving.client import BertClient
from bert_serving.errors import ConfigurationError, InferenceError
from bert_serving.model import Encoder, Features
from bert_serving.server import BertServer, get_args_parser
from bert_serving.server.replicas.pool import embed_once
from bert_serving.server.replicas.ray_replicas import RayReplica

from ..conftest import TINY_BERT
from .conftest import free_ports, running_server
from .processes import start_cli, stop, terminate_and_wait, wait_for_line
from .test_batching import random_sentences

NODE = {"num_cpus": 2, "object_store_memory": 256 << 20}


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node, 2 CPUs each; shut down whatever happens."""
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    try:
        cluster.add_node(**NODE)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def server(cluster):
    with running_server("-max_seq_len", "16", "-ray_address", cluster.address, "-num_replicas", "2") as server:
        yield server


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return random_sentences(np.random.default_rng(7), 200)


@pytest.fixture(scope="module")
def reference(sentences) -> np.ndarray:
    """What the in-process encoder gives each sentence."""
    return Encoder.load(str(TINY_BERT / "google"), device="cpu", max_seq_len=16).encode(sentences)


def client(server) -> BertClient:
    return BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60000, check_length=False)


def wait_for(condition, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Load:
    """Clients sending requests of 1-40 known sentences until stopped, each answer checked."""

    def __init__(self, server, sentences: list[str], reference: np.ndarray, clients: int = 4) -> None:
        self.server, self.sentences, self.reference = server, sentences, reference
        self.sent = self.answered = 0
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(seed,)) for seed in range(clients)]

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            with client(self.server) as bc:
                while not self._stop.is_set():
                    rows = rng.integers(0, len(self.sentences), size=rng.integers(1, 41))
                    with self._lock:
                        self.sent += 1
                    vectors = bc.encode([self.sentences[r] for r in rows])
                    np.testing.assert_allclose(vectors, self.reference[rows], atol=1e-5, rtol=0)
                    with self._lock:
                        self.answered += 1
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.errors.append(exc)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def wait_answered(self, n: int) -> None:
        wait_for(lambda: self.answered >= n or self.errors, what=f"{n} answers")

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)


def replicas(server) -> list[dict]:
    """SHOW_CONFIG's view of the replicas, as a client sees it."""
    with client(server) as bc:
        return bc.server_config["replicas"]


# first, before the module's cluster starts --------------------------------------------------------


def test_an_address_nobody_answers_at_fails_at_once_with_a_clear_message() -> None:
    port, port_out, unused = free_ports(3)
    args = get_args_parser().parse_args(["-model_dir", str(TINY_BERT / "google"), "-port", str(port),
                                         "-port_out", str(port_out), "-ray_address", f"127.0.0.1:{unused}"])
    with pytest.raises(ConfigurationError, match=f"no Ray head node answers there .*ray start --head --port={unused}"):
        BertServer(args).start()


def test_cli_with_a_local_ray_serves_and_stops(sentences, reference) -> None:
    port, port_out = free_ports(2)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # leave no token in ~/.ray behind
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={port}", f"-port_out={port_out}", "-bind=127.0.0.1",
                     "-max_seq_len=16", "-ray_address=local", "-num_replicas=1", env=env)
    try:
        text = "".join(wait_for_line(proc, "ready to serve"))
        assert "started a local Ray instance" in text and "ray replica 0 ready on node" in text
        with BertClient(port=port, port_out=port_out, check_length=False) as bc:
            np.testing.assert_allclose(bc.encode(sentences[:50]), reference[:50], atol=1e-5, rtol=0)
        terminate_and_wait(proc, port)
    finally:
        stop(proc)


# on a 2-node cluster ------------------------------------------------------------------------------


def test_replicas_are_spread_over_both_nodes(cluster, server) -> None:
    placed = replicas(server)
    assert len(placed) == 2
    assert {r["node_id"] for r in placed} == {node.node_id for node in cluster.list_all_nodes()}
    assert all(r["restarts"] == 0 and r["pid"] for r in placed)
    for r in placed:  # the actors' OpenMP threads spin briefly, as local workers' do (runtime.OPENMP_ENV)
        with open(f"/proc/{r['pid']}/environ", "rb") as environ:
            assert b"GOMP_SPINCOUNT=10000" in environ.read().split(b"\0")


def test_vectors_through_ray_equal_the_local_encoders(server, sentences, reference) -> None:
    with client(server) as bc:
        np.testing.assert_allclose(bc.encode(sentences[:1]), reference[:1], atol=1e-5, rtol=0)
        np.testing.assert_allclose(bc.encode(sentences), reference, atol=1e-5, rtol=0)  # several batches
    assert server.sync_stats().statistic()["num_forward_passes"] >= 2


def test_model_errors_come_back_as_answers_and_calls_are_pipelined(server, sentences, reference) -> None:
    """A replica of our own next to the server's (this process is the server's Ray driver)."""
    group = placement_group([{"CPU": 1}])
    replica = RayReplica(server.spec, group, index=0)
    one = server.spec.tokenizer().encode(sentences[:1])
    try:
        replica.start()
        unknown_token = Features(np.array([10**6], np.int32), np.zeros(1, np.int8), np.ones(1, bool), np.array([0, 1]))
        with pytest.raises(InferenceError, match="IndexError"):
            embed_once(replica, unknown_token)
        np.testing.assert_allclose(embed_once(replica, one), reference[:1], atol=1e-5, rtol=0)  # still serving
        replica.send(1, one)
        assert replica.receive(0) is None  # no answer can be that fast: the pool's deadline decides
        assert replica.receive(60).seq == 1
    finally:
        replica.stop()
        remove_placement_group(group)


def test_a_replica_killed_during_a_load_loses_no_request(server, sentences, reference) -> None:
    victim = replicas(server)[0]
    with Load(server, sentences, reference) as load:
        load.wait_answered(20)
        wait_for(lambda: server.stats.worker_states[0] == "busy", what="replica 0 busy")  # kill it mid-batch if we can
        os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: server.workers.describe()[0]["restarts"] == 1, what="the restart")
        wait_for(lambda: server.stats.worker_states[0] in ("idle", "busy"), what="the restarted replica at work")
        load.wait_answered(load.answered + 20)
    assert not load.errors
    assert load.answered == load.sent > 40
    restarted = replicas(server)[0]
    assert restarted["restarts"] == 1 and restarted["pid"] != victim["pid"]
    assert restarted["node_id"] == victim["node_id"]  # back in its place: still one replica per node
    assert server.sync_stats().statistic()["num_failed_request"] == 0


def test_a_node_lost_during_a_load_loses_no_request(cluster, server, sentences, reference) -> None:
    """Last in this module: the cluster is left with its head node only."""
    worker_node = next(n for n in cluster.list_all_nodes() if n is not cluster.head_node)
    lost = [r["name"] for r in replicas(server) if r["node_id"] == worker_node.node_id]
    restarts_before = sum(r["restarts"] for r in replicas(server))
    with Load(server, sentences, reference) as load:
        load.wait_answered(20)
        cluster.remove_node(worker_node)
        wait_for(lambda: sum(r["restarts"] for r in server.workers.describe()) > restarts_before, what="the restart")
        wait_for(lambda: set(server.stats.worker_states.values()) <= {"idle", "busy"}, what="all replicas at work")
        load.wait_answered(load.answered + 20)
    assert not load.errors
    assert load.answered == load.sent
    assert lost and all(r["node_id"] == cluster.head_node.node_id for r in replicas(server))
