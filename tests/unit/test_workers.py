"""Supervision of replicas: crashes are retried once, failing rows fail alone, hung replicas are
replaced, batches are pipelined, nothing is answered twice. Fake replicas stand in for worker
processes."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import pytest

from bert_serving.errors import InferenceError, NotReadyError
from bert_serving.model import EncoderSettings, resolve
from bert_serving.model.features import Features
from bert_serving.server.pipeline.batcher import Batcher
from bert_serving.server.pipeline.request import Request
from bert_serving.server.pipeline.sink import Sink
from bert_serving.server.pipeline.stats import Stats
from bert_serving.server.replicas.pool import Finished, ReplicaCrashed, ReplicaStartError, WorkerPool

from ..conftest import TINY_BERT

POISON = 77  # a token id that "crashes the process" whenever it is in a batch
BROKEN = 66  # a token id the "model raises" on


class FakeReplica:
    """Vectors whose first value is the row's first token id; crashes/raises on marked ids.
    ``hang_once``: the first batch is never answered (a stopped or deadlocked process)."""

    def __init__(self, name: str, crash_once: bool = False, fail_start: Exception | None = None,
                 hang_once: bool = False) -> None:
        self.name, self.crash_once, self.fail_start, self.hang_once = name, crash_once, fail_start, hang_once
        self.starts = self.calls = self.kills = 0
        self.sent: deque[tuple[int, Features]] = deque()
        self.most_in_flight = 0

    def start(self) -> None:
        self.starts += 1
        self.sent.clear()
        if self.fail_start is not None:
            raise self.fail_start

    def send(self, seq: int, features: Features) -> None:
        self.sent.append((seq, features))
        self.most_in_flight = max(self.most_in_flight, len(self.sent))

    def receive(self, timeout_s: float) -> Finished | None:
        if not self.sent:
            time.sleep(timeout_s)
            return None
        if self.hang_once and self.calls == 0:
            time.sleep(timeout_s)
            return None
        seq, features = self.sent.popleft()
        self.calls += 1
        first = features.input_ids[features.offsets[:-1]]
        if self.crash_once and self.calls == 1 or POISON in first:
            raise ReplicaCrashed(f"{self.name} died")
        if BROKEN in first:
            return Finished(seq, error="ValueError: broken input")
        out = np.zeros((len(features), 32), dtype=np.float32)
        out[:, 0] = first
        return Finished(seq, out)

    def stop(self, graceful: bool = True) -> None:
        self.kills += not graceful
        if not graceful:
            self.hang_once = False

    def describe(self) -> dict:
        return {}


def make_request(first_ids: list[int], answers: list) -> Request:
    ids = [[i, 5, 5] for i in first_ids]
    features = Features.from_lists(ids, [[0] * 3] * len(ids), [[True] * 3] * len(ids))
    request = Request(features, reply=lambda outcome: answers.append(outcome), client="t")
    return request


def run(replicas, requests_ids: list[list[int]], max_batch_size: int = 2, **pool_options):
    stats = Stats()
    sink = Sink(resolve(EncoderSettings(model_dir=str(TINY_BERT / "google"))).outputs, stats)
    batcher = Batcher(max_batch_size=max_batch_size, priority_batch_size=0)
    pool = WorkerPool(replicas, batcher=batcher, sink=sink, stats=stats, **pool_options)
    pool.start()
    pool.wait_ready(10)
    answers: dict[int, list] = {}
    done = threading.Semaphore(0)
    requests = []
    for i, ids in enumerate(requests_ids):
        answers[i] = []
        request = make_request(ids, answers[i])
        request.reply = lambda outcome, box=answers[i]: (box.append(outcome), done.release())
        requests.append(request)
    with batcher.submitting():  # all queued at once (as an edge's group, or a bulk request's batches)
        for request in requests:
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


def test_a_failing_row_fails_only_its_own_request_among_fifteen_others() -> None:
    """One batch of 16 requests, one of them holding a text the model raises on."""
    requests = [[i + 1] for i in range(16)]
    requests[9] = [BROKEN]
    replica = FakeReplica("w0")
    answers, stats = run([replica], requests, max_batch_size=16)
    for ids, box in zip(requests, answers.values()):
        assert len(box) == 1
        if ids == [BROKEN]:
            assert isinstance(box[0].error, InferenceError) and "broken input" in box[0].error.message
        else:
            assert box[0].error is None and box[0].result[:, 0].tolist() == ids
    assert stats.errors == {"inference_failed": 1} and stats.worker_restarts == 0
    assert replica.calls <= 1 + 2 * 4  # the batch, then two halves per level down to the one row


def test_a_request_with_a_failing_row_fails_once_and_its_other_rows_are_not_answered_twice() -> None:
    answers, _ = run([FakeReplica("w0")], [[1, BROKEN, 3, 4], [5, 6]], max_batch_size=8)
    broken, fine = answers.values()
    assert len(broken) == 1 and isinstance(broken[0].error, InferenceError)
    assert fine[0].result[:, 0].tolist() == [5, 6]


def test_a_hung_replica_is_killed_restarted_and_its_batch_answered() -> None:
    replica = FakeReplica("w0", hang_once=True)
    answers, stats = run([replica], [[1, 2], [3]], batch_timeout_s=0.3)
    assert [box[0].result[:, 0].tolist() for box in answers.values()] == [[1, 2], [3]]
    assert replica.kills == 1 and replica.starts == 2 and stats.worker_restarts == 1


def test_batches_are_pipelined_up_to_prefetch() -> None:
    pipelined, single = FakeReplica("w0"), FakeReplica("w1")
    for replica, prefetch in ((pipelined, 3), (single, 1)):
        answers, _ = run([replica], [[i] for i in range(1, 9)], max_batch_size=1, prefetch=prefetch)
        assert [box[0].result[0, 0] for box in answers.values()] == list(range(1, 9))
    assert pipelined.most_in_flight == 3 and single.most_in_flight == 1


def test_a_crash_with_batches_in_flight_retries_them_all_in_order() -> None:
    answers, stats = run([FakeReplica("w0", crash_once=True)], [[i] for i in range(1, 6)], max_batch_size=1,
                         prefetch=3)
    assert [box[0].result[0, 0] for box in answers.values()] == [1, 2, 3, 4, 5]
    assert all(len(box) == 1 for box in answers.values()) and stats.worker_restarts == 1


def test_an_unexpected_error_in_the_feeder_costs_a_restart_not_the_feeder() -> None:
    class Glitchy(FakeReplica):
        def receive(self, timeout_s: float):
            if self.calls == 0 and self.sent:
                self.calls += 1
                raise KeyError("a bug")
            return super().receive(timeout_s)

    replica = Glitchy("w0")
    answers, stats = run([replica], [[1], [2]])
    assert [box[0].result[:, 0].tolist() for box in answers.values()] == [[1], [2]]
    assert stats.worker_restarts == 1 and stats.worker_states[0] in ("idle", "stopped")


@pytest.mark.parametrize(("raised", "says"), [
    (RuntimeError("no GPU here"), "w0 failed to start: RuntimeError: no GPU here"),  # a bug: its type named
    (ReplicaStartError("ValueError: no weights"), "w0 failed to start: ValueError: no weights"),  # the replica's words
])
def test_a_replica_that_cannot_start_is_reported(raised, says) -> None:
    stats = Stats()
    sink = Sink(resolve(EncoderSettings(model_dir=str(TINY_BERT / "google"))).outputs, stats)
    pool = WorkerPool([FakeReplica("w0", fail_start=raised)], batcher=Batcher(), sink=sink, stats=stats)
    pool.start()
    with pytest.raises(NotReadyError) as refused:
        pool.wait_ready(10)
    assert str(refused.value) == says
    assert stats.worker_states == {0: "failed"}
    pool.close()


def test_clients_that_send_again_at_once_ride_in_one_batch_not_in_two_halves() -> None:
    """Eight clients each send their next one-text request a millisecond after their answer. A
    batch takes 100 ms, so the replica waits a little for them once it has answered: every batch
    holds all eight, where without the wait the first to come back would run alone (or with
    a few) while the rest queue behind it, and the two groups would alternate from then on."""

    class Slow(FakeReplica):
        def __init__(self) -> None:
            super().__init__("w0")
            self.sizes: list[int] = []

        def receive(self, timeout_s: float):
            if self.sent:
                time.sleep(0.1)
                self.sizes.append(len(self.sent[0][1]))
            return super().receive(timeout_s)

    stats, replica = Stats(), Slow()
    sink = Sink(resolve(EncoderSettings(model_dir=str(TINY_BERT / "google"))).outputs, stats)
    batcher = Batcher(max_batch_size=8)
    pool = WorkerPool([replica], batcher=batcher, sink=sink, stats=stats)
    pool.start()
    pool.wait_ready(10)
    rounds, answered = 5, []

    def client(first_id: int) -> None:
        for _ in range(rounds):
            done = threading.Event()
            request = make_request([first_id], answered)
            request.reply = lambda outcome, done=done: (answered.append(outcome), done.set())
            sink.track(request)
            batcher.admit(1)
            batcher.submit(request)
            assert done.wait(10), "a request was never answered"
            time.sleep(0.001)  # the way back to the client and the next request's way in

    clients = [threading.Thread(target=client, args=(i,)) for i in range(1, 9)]
    try:
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(30)
    finally:
        batcher.close()
        pool.close()
    assert len(answered) == 8 * rounds and all(outcome.error is None for outcome in answered)
    assert sum(replica.sizes) == 8 * rounds
    assert replica.sizes.count(8) >= rounds - 1, replica.sizes  # a scheduler's hiccup may split one
