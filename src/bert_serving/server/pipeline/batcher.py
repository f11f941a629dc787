"""`Batcher`: builds the model's batches from the rows of many requests and clients.

Policy, in the order `next_batch` applies it:
1. a batch that failed on a crashed worker is retried first;
2. the priority lane: requests of at most ``priority_batch_size`` texts skip ahead of bulk
   work, but not forever: while both lanes wait, every ``bulk_every``-th batch is bulk work, so
   a steady stream of small requests cannot starve it (a small request waits behind at most one
   bulk batch more);
3. the bulk lane: oldest requests first, but no request takes more than ``max_batch_size`` rows
   of a window before the others get theirs, so a huge request is split and cannot hold up a
   medium one for long.

Rows of requests already answered (failed elsewhere) or abandoned (their client went away)
are dropped before they run.

A window of rows (up to ``window_batches`` batches' worth) is taken from a lane, sorted by
length, and cut into batches that fit ``max_batch_tokens`` padded tokens (rows x longest row)
and ``max_batch_size`` rows, and, for a model with sparse or ColBERT outputs, ``max_batch_bytes``
of what its rows' outputs take at the replica (``row_bytes``: a SPLADE row's weight per
vocabulary id, a ColBERT row's vector per token). Every row of a window is batched before the next window is taken,
so no row waits forever behind shorter newcomers. No deliberate delay: a worker that asks for
work gets what is waiting; under load batches grow on their own. The one wait there is, its
feeder's to choose (`gather`): after a long batch, for the clients it has just answered.

The batcher knows rows, lengths and requests; it never sees a tensor.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from ...errors import NotReadyError, OverloadedError
from ...model.features import Features
from .request import Request

__all__ = ["Batch", "Batcher"]


@dataclass(eq=False)
class Batch:
    """Rows of several requests that go through the model together."""

    segments: list[tuple[Request, np.ndarray]]  # (request, its row indices in this batch, in order)
    attempts: int = 0
    created_at: float = field(default_factory=time.perf_counter)
    _features: Features | None = None

    @property
    def features(self) -> Features:
        if self._features is None:
            requests, rows = zip(*self.segments)
            self._features = Features.concat([r.features for r in requests], rows)
        return self._features

    def __len__(self) -> int:
        return sum(len(rows) for _, rows in self.segments)

    @property
    def num_tokens(self) -> int:
        return self.features.num_tokens

    @property
    def kinds(self) -> np.ndarray | None:
        """Per row (in `features` order), the outputs its request asks for (uint8,
        `bert_serving.outputs.kind_bits`); None when every row wants its dense vector alone."""
        if all(request.outputs == 1 for request, _ in self.segments):
            return None
        return np.concatenate([np.full(len(rows), request.outputs, dtype=np.uint8) for request, rows in self.segments])

    def split(self) -> tuple[Batch, Batch]:
        """This batch's rows in two halves (each request's rows keep their order)."""
        rows = [(request, row) for request, picked in self.segments for row in picked]
        half = len(rows) // 2

        def batch(part: list[tuple[Request, int]]) -> Batch:
            by_request: dict[int, tuple[Request, list[int]]] = {}
            for request, row in part:
                by_request.setdefault(id(request), (request, []))[1].append(int(row))
            return Batch([(r, np.array(picked, dtype=np.int64)) for r, picked in by_request.values()], self.attempts,
                         self.created_at)

        return batch(rows[:half]), batch(rows[half:])

    def live(self) -> Batch | None:
        """This batch without the requests already answered (failed elsewhere)."""
        kept = [(r, rows) for r, rows in self.segments if not r.done]
        if len(kept) == len(self.segments):
            return self
        return Batch(kept, self.attempts, self.created_at) if kept else None


@dataclass(eq=False)
class _Pending:
    request: Request
    order: np.ndarray  # the request's rows, longest first
    cursor: int = 0

    @property
    def remaining(self) -> int:
        return len(self.order) - self.cursor


class Batcher:
    def __init__(
        self,
        *,
        max_batch_size: int = 256,
        max_batch_tokens: int = 4096,
        priority_batch_size: int = 16,
        window_batches: int = 4,
        max_queued_rows: int = 1_000_000,
        bulk_every: int = 4,
        row_bytes: Callable[[int, int], int] | None = None,
        max_batch_bytes: int = 64 * 1024**2,
    ) -> None:
        """``row_bytes(length, outputs)``: what a row's outputs take at the replica, for a model with
        sparse or ColBERT outputs (None: dense vectors, which the token budget bounds)."""
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.priority_batch_size = priority_batch_size
        self.window_rows = max_batch_size * window_batches
        self.max_queued_rows = max_queued_rows
        self.bulk_every = max(1, bulk_every)
        self._row_bytes = row_bytes
        self.max_batch_bytes = max_batch_bytes
        self._priority_streak = 0  # priority batches taken in a row while bulk work waited
        self._cond = threading.Condition()
        self._retry: deque[Batch] = deque()
        self._lanes = (deque(), deque())  # pending requests: priority, bulk
        self._ready = (deque(), deque())  # batches cut from a window, per lane
        self._queued_rows = 0
        self._admitted_rows = 0  # let in by `admit`, not yet submitted (being tokenized)
        self._closed = False
        self.on_work: Callable[[], None] | None = None  # called after work is queued (`submitting` defers it)
        self._local = threading.local()  # .deferred: inside `submitting`; .pending: work queued meanwhile

    # producers ---------------------------------------------------------------------------------

    def admit(self, rows: int) -> None:
        """Reserve room for a request of ``rows`` texts before it is tokenized; raises
        `OverloadedError` at once when the backlog is full (an empty backlog takes any size)."""
        with self._cond:
            if self._closed:
                raise NotReadyError("the server is shutting down and accepts no new requests")
            backlog = self._queued_rows + self._admitted_rows
            if backlog and backlog + rows > self.max_queued_rows:
                raise OverloadedError(f"the server's backlog is full ({backlog} texts waiting); retry later")
            self._admitted_rows += rows

    def release(self, rows: int) -> None:
        """Give back an admission whose request will not be submitted (it failed to tokenize)."""
        with self._cond:
            self._admitted_rows -= rows

    def submit(self, request: Request, *, admitted: bool = True) -> None:
        """Queue every row of a request: one `admit` let in (``admitted``), or one admitted
        elsewhere (an edge process admits its own)."""
        rows = len(request)
        order = np.argsort(-request.features.lengths, kind="stable")
        with self._cond:
            if admitted:
                self._admitted_rows -= rows
            lane = 0 if rows <= self.priority_batch_size else 1
            self._lanes[lane].append(_Pending(request, order))
            self._queued_rows += rows
            self._cond.notify_all()  # a feeder in `next_batch`, and one in `gather`
        self._queued()

    def retry(self, batch: Batch, count_attempt: bool = True) -> None:
        """Put a batch back at the front (its worker died, or it is retried in parts); with
        ``count_attempt`` it counts one more attempt."""
        with self._cond:
            batch.attempts += count_attempt
            self._retry.appendleft(batch)
            self._queued_rows += len(batch)
            self._cond.notify_all()
        self._queued()

    @contextmanager
    def submitting(self) -> Iterator[None]:
        """Requests this thread submits inside are offered to the replicas together when it ends
        (one batch of all of them, not the first alone)."""
        self._local.deferred = True
        try:
            yield
        finally:
            self._local.deferred = False
            if getattr(self._local, "pending", False):
                self._local.pending = False
                if self.on_work is not None:
                    self.on_work()

    def _queued(self) -> None:
        if getattr(self._local, "deferred", False):
            self._local.pending = True
        elif self.on_work is not None:
            self.on_work()

    def close(self) -> None:
        """Refuse new admissions; queued and admitted work can still be submitted and taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abandon(self) -> list[Request]:
        """Empty the queue (shutdown past its drain timeout); the requests it held, to be failed."""
        with self._cond:
            requests = {id(p.request): p.request for lane in self._lanes for p in lane}
            for ready in (*self._ready, self._retry):
                for batch in ready:
                    requests.update((id(r), r) for r, _ in batch.segments)
            for queue in (*self._lanes, *self._ready, self._retry):
                queue.clear()
            self._queued_rows = 0
            return [r for r in requests.values() if not r.done]

    # consumers ---------------------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def gather(self, rows: int, timeout: float) -> int:
        """Wait up to ``timeout`` seconds until ``rows`` rows are queued (at most one batch's
        ``max_batch_size``), a complete batch is (more of a big request, a retry), or the batcher
        closes; the rows queued then."""
        rows = min(rows, self.max_batch_size)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queued_rows < rows and not (self._closed or self._retry or any(self._ready)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._queued_rows

    def next_batch(self, timeout: float | None = None, *, ready_only: bool = False) -> Batch | None:
        """The next batch to run, waiting up to ``timeout`` seconds; None if there is none.

        ``ready_only``: only a batch that is already complete (the rest of a window cut earlier,
        i.e. more of a big request, or a retry), never a new window of waiting requests: those
        are better left to gather into a bigger batch while the replica is busy anyway."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                batch = self._take(ready_only)
                if batch is not None:
                    self._queued_rows -= len(batch)
                    live = batch.live()
                    if live is None:
                        continue
                    return live
                remaining = None if deadline is None else deadline - time.monotonic()
                if self._closed or (remaining is not None and remaining <= 0):
                    return None
                self._cond.wait(remaining)

    def _take(self, ready_only: bool = False) -> Batch | None:
        if self._retry:
            return self._retry.popleft()
        bulk_waits = bool(self._lanes[1] or self._ready[1])
        bulk_due = bulk_waits and self._priority_streak >= self.bulk_every - 1
        for index in ((1, 0) if bulk_due else (0, 1)):
            lane, ready = self._lanes[index], self._ready[index]
            if not ready and lane:
                if ready_only:
                    return None
                ready.extend(self._cut(self._window(lane)))
            if ready:
                self._priority_streak = self._priority_streak + 1 if index == 0 and bulk_waits else 0
                return ready.popleft()
        return None

    def _window(self, lane: deque[_Pending]) -> list[tuple[int, _Pending, int]]:
        """(length, pending, row) for up to window_rows rows, round-robin over the oldest requests."""
        window: list[tuple[int, _Pending, int]] = []
        while lane and len(window) < self.window_rows:
            for pending in list(lane):
                if pending.request.done:  # answered elsewhere, or abandoned: its rows never run
                    lane.remove(pending)
                    self._queued_rows -= pending.remaining
                    continue
                take = min(pending.remaining, self.max_batch_size, self.window_rows - len(window))
                lengths = pending.request.features.lengths
                for row in pending.order[pending.cursor : pending.cursor + take]:
                    window.append((int(lengths[row]), pending, int(row)))
                pending.cursor += take
                if not pending.remaining:
                    lane.remove(pending)
                if len(window) >= self.window_rows:
                    break
        return window

    def _cut(self, window: list[tuple[int, _Pending, int]]) -> list[Batch]:
        window.sort(key=lambda item: -item[0])
        batches, start = [], 0
        while start < len(window):
            longest = max(window[start][0], 1)
            size = max(1, min(self.max_batch_size, self.max_batch_tokens // longest))
            if self._row_bytes is not None:
                size = self._fit_bytes(window, start, size)
            chosen = window[start : start + size]
            start += size
            by_request: dict[int, tuple[Request, list[int]]] = {}
            for _, pending, row in chosen:
                by_request.setdefault(id(pending), (pending.request, []))[1].append(row)
            batches.append(Batch([(r, np.array(sorted(rows), dtype=np.int64)) for r, rows in by_request.values()]))
        return batches

    def _fit_bytes(self, window: list[tuple[int, _Pending, int]], start: int, size: int) -> int:
        """How many of the ``size`` rows from ``start`` fit ``max_batch_bytes`` of outputs (one at least)."""
        total = 0
        for i in range(start, min(start + size, len(window))):
            length, pending, _ = window[i]
            total += self._row_bytes(length, pending.request.outputs)
            if total > self.max_batch_bytes and i > start:
                return i - start
        return size
