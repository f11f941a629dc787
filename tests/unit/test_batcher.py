"""The batching policy, on requests of known lengths (no model, no sockets)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bert_serving.errors import NotReadyError, OverloadedError
from bert_serving.model.features import Features
from bert_serving.server.pipeline.batcher import Batcher
from bert_serving.server.pipeline.request import Request


def request(*lengths: int) -> Request:
    ids = [[1] * n for n in lengths]
    return Request(Features.from_lists(ids, [[0] * n for n in lengths], [[True] * n for n in lengths]),
                   reply=lambda outcome: None, client="test")


def rows_of(batch) -> dict[int, list[int]]:
    return {r.id: rows.tolist() for r, rows in batch.segments}


def submit(batcher: Batcher, req: Request) -> None:
    batcher.admit(len(req))
    batcher.submit(req)


def drain(batcher: Batcher) -> list:
    batches = []
    while (batch := batcher.next_batch(timeout=0)) is not None:
        batches.append(batch)
    return batches


def test_batches_respect_the_token_budget_and_the_size_cap() -> None:
    batcher = Batcher(max_batch_size=8, max_batch_tokens=100, priority_batch_size=0)
    submit(batcher, request(*([10] * 30), 50, 50))
    batches = drain(batcher)
    for batch in batches:
        longest = batch.features.lengths.max()
        assert len(batch) <= 8 and len(batch) * longest <= 100
    assert sum(len(b) for b in batches) == 32
    assert [len(b) for b in batches][:1] == [2]  # the two 50-token rows together, alone


def test_rows_are_length_sorted_across_requests_to_cut_padding() -> None:
    batcher = Batcher(max_batch_size=4, max_batch_tokens=10_000, priority_batch_size=0)
    a, b = request(5, 40, 5, 40), request(40, 5, 40, 5)
    submit(batcher, a)
    submit(batcher, b)
    first, second = drain(batcher)
    assert sorted(first.features.lengths.tolist()) == [40, 40, 40, 40]
    assert sorted(second.features.lengths.tolist()) == [5, 5, 5, 5]
    assert rows_of(first) == {a.id: [1, 3], b.id: [0, 2]}  # rows kept in request order


def test_small_requests_skip_ahead_of_bulk_work() -> None:
    batcher = Batcher(max_batch_size=4, max_batch_tokens=10_000, priority_batch_size=2)
    bulk = request(*([8] * 40))
    submit(batcher, bulk)
    first = batcher.next_batch(timeout=0)
    assert rows_of(first).keys() == {bulk.id}
    small = request(8)
    submit(batcher, small)
    assert rows_of(batcher.next_batch(timeout=0)) == {small.id: [0]}


def test_a_huge_request_does_not_hold_up_a_medium_one() -> None:
    batcher = Batcher(max_batch_size=4, max_batch_tokens=10_000, priority_batch_size=0, window_batches=2)
    huge, medium = request(*([8] * 1000)), request(*([8] * 6))
    submit(batcher, huge)
    submit(batcher, medium)
    served = set()
    for _ in range(4):  # within the first window, not after 250 batches of the huge one
        served |= rows_of(batcher.next_batch(timeout=0)).keys()
    assert medium.id in served


def test_retried_batch_comes_first_and_answered_requests_are_skipped() -> None:
    batcher = Batcher(max_batch_size=2, max_batch_tokens=10_000, priority_batch_size=0)
    a, b = request(3, 3), request(4, 4)
    submit(batcher, a)
    submit(batcher, b)
    first = batcher.next_batch(timeout=0)
    batcher.retry(first)
    again = batcher.next_batch(timeout=0)
    assert again is first and again.attempts == 1
    rest = batcher.next_batch(timeout=0)
    rest_owner = next(iter(rows_of(rest)))
    owner = next(r for r in (a, b) if r.id == rest_owner)
    owner.done = True  # answered (failed) elsewhere meanwhile
    batcher.retry(rest)
    assert batcher.next_batch(timeout=0) is None
    assert batcher.queued_rows == 0


def test_backlog_limit_refuses_fast() -> None:
    batcher = Batcher(max_queued_rows=10)
    batcher.admit(30)  # an empty backlog takes a request of any size
    batcher.release(30)
    submit(batcher, request(*([5] * 8)))
    with pytest.raises(OverloadedError, match="backlog is full"):
        batcher.admit(3)
    batcher.admit(2)  # still fits, counting admitted texts not yet submitted
    with pytest.raises(OverloadedError):
        batcher.admit(1)


def test_next_batch_waits_for_work_and_close_wakes_it() -> None:
    batcher = Batcher()
    got = []
    waiter = threading.Thread(target=lambda: got.append(batcher.next_batch(timeout=10)))
    waiter.start()
    submit(batcher, request(3))
    waiter.join(5)
    assert got and len(got[0]) == 1
    waiter = threading.Thread(target=lambda: got.append(batcher.next_batch(timeout=10)))
    waiter.start()
    batcher.close()
    waiter.join(5)
    assert got[1] is None and not waiter.is_alive()
    with pytest.raises(NotReadyError, match="shutting down"):
        batcher.admit(1)


def test_every_row_is_batched_exactly_once() -> None:
    rng = np.random.default_rng(0)
    batcher = Batcher(max_batch_size=16, max_batch_tokens=512, priority_batch_size=4)
    requests = [request(*rng.integers(1, 60, size=rng.integers(1, 50))) for _ in range(40)]
    for r in requests:
        submit(batcher, r)
    seen: dict[int, list[int]] = {r.id: [] for r in requests}
    for batch in drain(batcher):
        for r, rows in batch.segments:
            seen[r.id].extend(rows.tolist())
    assert all(sorted(seen[r.id]) == list(range(len(r))) for r in requests)


def test_abandon_returns_every_unanswered_request_once() -> None:
    batcher = Batcher(max_batch_size=2, max_batch_tokens=10_000, priority_batch_size=0)
    a, b, c = request(3, 3, 3), request(4), request(5, 5)
    for r in (a, b, c):
        submit(batcher, r)
    batcher.retry(batcher.next_batch(timeout=0))
    b.done = True
    assert {r.id for r in batcher.abandon()} == {a.id, c.id}
    assert batcher.queued_rows == 0 and batcher.next_batch(timeout=0) is None


def test_ready_only_gives_more_of_a_big_request_but_leaves_small_ones_to_gather() -> None:
    batcher = Batcher(max_batch_size=4, max_batch_tokens=1000, priority_batch_size=2)
    submit(batcher, request(5, 5, 5, 5, 5, 5, 5, 5))  # bulk: two batches of 4
    first = batcher.next_batch(timeout=0)
    assert len(first) == 4
    submit(batcher, request(3))  # a small request arrives while the first batch runs
    assert batcher.next_batch(timeout=0, ready_only=True) is None  # not cut yet: let it gather
    second = batcher.next_batch(timeout=0)
    assert len(second) == 1  # the priority lane first
    rest = batcher.next_batch(timeout=0, ready_only=True)
    assert rest is not None and len(rest) == 4  # the rest of the bulk request was cut already


def test_a_steady_stream_of_small_requests_cannot_starve_bulk_work() -> None:
    batcher = Batcher(max_batch_size=4, max_batch_tokens=10_000, priority_batch_size=2)
    bulk = request(*([8] * 40))  # 10 batches' worth
    submit(batcher, bulk)
    bulk_rows, small_served, taken = 0, 0, 0
    while bulk_rows < len(bulk):
        submit(batcher, request(8))  # a new small request before every batch, for ever
        batch = batcher.next_batch(timeout=0)
        taken += 1
        owners = rows_of(batch)
        bulk_rows += len(owners.get(bulk.id, []))
        small_served += len(owners) - (bulk.id in owners)
        assert taken <= 4 * 10, "bulk work starved"
    assert bulk_rows == 40 and small_served >= 3 * 10  # the small ones still get three batches in four


def test_small_requests_wait_behind_at_most_one_bulk_batch() -> None:
    batcher = Batcher(max_batch_size=4, max_batch_tokens=10_000, priority_batch_size=2, bulk_every=4)
    submit(batcher, request(*([8] * 40)))
    lanes = []
    for _ in range(12):
        small = request(8)
        submit(batcher, small)
        lanes.append("small" if small.id in rows_of(batcher.next_batch(timeout=0)) else "bulk")
        if lanes[-1] == "bulk":  # the small request is next
            assert small.id in rows_of(batcher.next_batch(timeout=0))
    assert "bulk" in lanes and "bulk bulk" not in " ".join(lanes)


def test_rows_of_abandoned_requests_are_dropped_before_they_run() -> None:
    batcher = Batcher(max_batch_size=4, max_batch_tokens=10_000, priority_batch_size=0, window_batches=1)
    gone, kept = request(*([8] * 40)), request(*([8] * 6))
    submit(batcher, gone)
    submit(batcher, kept)
    assert rows_of(batcher.next_batch(timeout=0)).keys() == {gone.id}  # one batch of it is running
    gone.done = True  # its client went away (the sink marks it done)
    rest = drain(batcher)
    assert all(rows_of(b).keys() == {kept.id} for b in rest) and sum(len(b) for b in rest) == 6
    assert batcher.queued_rows == 0 and batcher.next_batch(timeout=0) is None


def test_a_batch_carries_exactly_its_rows_tokens_whether_requests_are_taken_whole_or_in_part() -> None:
    rng = np.random.default_rng(0)

    def random_request(n_rows: int) -> Request:
        ids = [rng.integers(0, 1000, rng.integers(1, 9)).tolist() for _ in range(n_rows)]
        return Request(Features.from_lists(ids, [[i % 2 for i in range(len(r))] for r in ids],
                                           [[i > 0 for i in range(len(r))] for r in ids]),
                       reply=lambda outcome: None, client="test")

    whole = [random_request(1), random_request(3), random_request(2)]  # small requests: taken whole
    big = random_request(40)  # split over several batches
    batcher = Batcher(max_batch_size=16, max_batch_tokens=10_000, priority_batch_size=4)
    for req in (*whole, big):
        submit(batcher, req)
    seen = 0
    for batch in drain(batcher):
        features, start = batch.features, 0
        for req, rows in batch.segments:
            for row in rows:
                source = req.features
                a, b = source.offsets[row], source.offsets[row + 1]
                c, d = features.offsets[start], features.offsets[start + 1]
                for name in ("input_ids", "type_ids", "pool_mask"):
                    assert getattr(features, name)[c:d].tolist() == getattr(source, name)[a:b].tolist()
                start += 1
        assert start == len(features) == len(batch)
        seen += start
    assert seen == 46



def test_gather_waits_until_the_rows_are_queued_or_its_time_is_up() -> None:
    batcher = Batcher(max_batch_size=8, priority_batch_size=0)
    submit(batcher, request(3, 3, 3))
    assert batcher.gather(1, timeout=10) == 3  # there already: no wait
    threading.Timer(0.05, lambda: submit(batcher, request(4, 4))).start()
    started = time.monotonic()
    assert batcher.gather(5, timeout=10) == 5  # woken by the submission that completes it
    assert time.monotonic() - started < 5
    started = time.monotonic()
    assert batcher.gather(6, timeout=0.05) == 5  # nobody came: back after the timeout
    assert time.monotonic() - started >= 0.05
    threading.Timer(0.05, lambda: submit(batcher, request(2, 2, 2))).start()
    assert batcher.gather(100, timeout=10) == 8  # more than a batch holds: one full batch will do


def test_a_complete_batch_ends_a_gather() -> None:
    batcher = Batcher(max_batch_size=2, max_batch_tokens=10_000, priority_batch_size=0)
    submit(batcher, request(5, 5, 5))
    batcher.next_batch(timeout=0)  # two rows run; the third is cut and waits, ready
    started = time.monotonic()
    assert batcher.gather(2, timeout=10) == 1
    assert time.monotonic() - started < 5


def test_close_ends_a_gather() -> None:
    batcher = Batcher()
    threading.Timer(0.05, batcher.close).start()
    started = time.monotonic()
    assert batcher.gather(1, timeout=10) == 0
    assert time.monotonic() - started < 5
