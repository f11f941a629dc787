"""Supervision of replicas: crashes are retried once, poison batches fail alone, nothing is
answered twice. Fake replicas stand in for worker processes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bert_serving.errors import InferenceError, NotReadyError
from bert_serving.model import EncoderSettings, resolve
from bert_serving.model.features import Features
from bert_serving.server.pipeline.batcher import Batcher
from bert_serving.server.pipeline.request import Request
from bert_serving.server.pipeline.sink import Sink
from bert_serving.server.pipeline.stats import Stats
from bert_serving.server.replicas.pool import BatchFailed, ReplicaCrashed, WorkerPool

from ..conftest import TINY_BERT

POISON = 77  # a token id that "crashes the process" whenever it is in a batch
BROKEN = 66  # a token id the "model raises" on


class FakeReplica:
    """Vectors whose first value is the row's first token id; crashes/raises on marked ids."""

    def __init__(self, name: str, crash_once: bool = False, fail_start: bool = False) -> None:
        self.name, self.crash_once, self.fail_start = name, crash_once, fail_start
        self.starts = self.calls = 0

    def start(self) -> None:
        self.starts += 1
        if self.fail_start:
            raise RuntimeError("no GPU here")

    def embed(self, features: Features) -> np.ndarray:
        self.calls += 1
        first = features.input_ids[features.offsets[:-1]]
        if self.crash_once and self.calls == 1 or POISON in first:
            raise ReplicaCrashed(f"{self.name} died")
        if BROKEN in first:
            raise BatchFailed("ValueError: broken input")
        out = np.zeros((len(features), 32), dtype=np.float32)
        out[:, 0] = first
        return out

    def stop(self) -> None:
        pass


def make_request(first_ids: list[int], answers: list) -> Request:
    ids = [[i, 5, 5] for i in first_ids]
    features = Features.from_lists(ids, [[0] * 3] * len(ids), [[True] * 3] * len(ids))
    request = Request(features, reply=lambda outcome: answers.append(outcome), client="t")
    return request


def run(replicas, requests_ids: list[list[int]], max_batch_size: int = 2):
    stats = Stats()
    sink = Sink(resolve(EncoderSettings(model_dir=str(TINY_BERT / "google"))).outputs, stats)
    batcher = Batcher(max_batch_size=max_batch_size, priority_batch_size=0)
    pool = WorkerPool(replicas, batcher=batcher, sink=sink, stats=stats)
    pool.start()
    pool.wait_ready(10)
    answers: dict[int, list] = {}
    done = threading.Semaphore(0)
    for i, ids in enumerate(requests_ids):
        answers[i] = []
        request = make_request(ids, answers[i])
        request.reply = lambda outcome, box=answers[i]: (box.append(outcome), done.release())
        sink.track(request)
        batcher.admit(len(request))
        batcher.submit(request)
    for _ in requests_ids:
        assert done.acquire(timeout=10), "a request was never answered"
    batcher.close()
    pool.close()
    return answers, stats


def test_a_crash_mid_batch_is_retried_once_and_answered_once() -> None:
    answers, stats = run([FakeReplica("w0", crash_once=True)], [[1, 2], [3, 4, 5]])
    for ids, box in zip([[1, 2], [3, 4, 5]], answers.values()):
        assert len(box) == 1 and box[0].error is None
        assert box[0].result[:, 0].tolist() == ids
    assert stats.worker_restarts == 1


def test_a_batch_that_crashes_twice_fails_alone() -> None:
    replicas = [FakeReplica("w0"), FakeReplica("w1")]
    answers, stats = run(replicas, [[POISON], [1], [2, 3]], max_batch_size=1)
    poisoned, fine, fine2 = answers.values()
    assert len(poisoned) == 1 and isinstance(poisoned[0].error, InferenceError)
    assert "crashed a worker 2 times" in poisoned[0].error.message
    assert fine[0].result[:, 0].tolist() == [1] and fine2[0].result[:, 0].tolist() == [2, 3]
    assert stats.worker_restarts == 2


def test_a_model_error_fails_its_batch_at_once_without_restart() -> None:
    answers, stats = run([FakeReplica("w0")], [[BROKEN], [4]], max_batch_size=1)
    broken, fine = answers.values()
    assert isinstance(broken[0].error, InferenceError) and "broken input" in broken[0].error.message
    assert fine[0].result[:, 0].tolist() == [4]
    assert stats.worker_restarts == 0 and stats.errors == {"inference_failed": 1}


def test_a_replica_that_cannot_start_is_reported() -> None:
    stats = Stats()
    sink = Sink(resolve(EncoderSettings(model_dir=str(TINY_BERT / "google"))).outputs, stats)
    pool = WorkerPool([FakeReplica("w0", fail_start=True)], batcher=Batcher(), sink=sink, stats=stats)
    pool.start()
    with pytest.raises(NotReadyError, match="w0 failed to start: RuntimeError: no GPU here"):
        pool.wait_ready(10)
    assert stats.worker_states == {0: "failed"}
    pool.close()
