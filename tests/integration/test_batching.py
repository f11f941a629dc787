"""Batching across requests and clients: exact vectors for everyone, far fewer forward passes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.model import Encoder

from ..conftest import TINY_BERT
from .conftest import Concurrently, running_server

VOCAB = ("the quick brown fox jumps over lazy dog cat sat on mat first do it then right better hello world "
         "unbelievable playing players and more words here by model encode sentence vector run long text").split()


def random_sentences(rng: np.random.Generator, n: int) -> list[str]:
    return [" ".join(rng.choice(VOCAB, size=rng.integers(1, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def reference():
    return Encoder.load(str(TINY_BERT / "google"), device="cpu", max_seq_len=32)


def test_sixteen_clients_get_exactly_what_each_sentence_gets_alone(reference) -> None:
    rng = np.random.default_rng(3)
    sizes = [1, 600, 3, 250, 17, 1, 90, 600, 5, 333, 2, 64, 1, 420, 16, 128]
    jobs = [random_sentences(rng, n) for n in sizes]
    alone = {s: reference.encode([s])[0] for job in jobs for s in job}  # every sentence on its own
    with running_server("-max_seq_len", "32", "-num_worker", "2", "-max_batch_size", "64") as server:

        def client(i: int) -> np.ndarray:
            with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60000) as bc:
                return bc.encode(jobs[i])

        results = Concurrently(client, 16).start().join()
        statistic = server.sync_stats().statistic()
    for i, job in enumerate(jobs):
        want = np.stack([alone[s] for s in job])
        np.testing.assert_allclose(results[i], want, atol=1e-5, rtol=0)
    assert statistic["num_data_request"] == 16
    assert statistic["num_total_seq"] == sum(sizes)


def test_many_one_sentence_clients_share_forward_passes() -> None:
    num_clients, per_client = 32, 8
    with running_server("-max_seq_len", "32", model_dir=None) as server:  # MiniLM: passes take a while
        barrier = threading.Barrier(num_clients)

        def client(i: int) -> None:
            with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60000) as bc:
                barrier.wait()
                for j in range(per_client):
                    assert bc.encode([f"client {i} asks question number {j}"]).shape == (1, 384)

        Concurrently(client, num_clients).start().join()
        statistic = server.status(with_statistic=True)["statistic"]
    requests = num_clients * per_client
    assert statistic["num_data_request"] == requests
    assert statistic["num_batched_seq"] == requests
    # visible in SHOW_STATUS: far fewer forward passes than requests
    assert statistic["num_forward_passes"] <= requests / 4, statistic
    assert statistic["avg_batch_size"] >= 4
