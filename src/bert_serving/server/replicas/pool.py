"""`WorkerPool`: model replicas fed by the batcher, one feeding thread each, supervised.

A replica is one loaded model somewhere: a worker process on this machine (`local.LocalReplica`,
the default) or, in a cluster, a Ray actor (`ray_replicas`). A replica is sent batches from the
batcher only when it has room (no random dispatch), up to ``prefetch`` of them in flight there
(``-prefetch_size``): while the model runs one batch, the next already waits at the replica, and
a finished batch is delivered to the sink only after the next one has gone out. Work that arrives
for an idle replica is sent by the thread that brought it (`offer`, which the batcher calls after
each submission): the replica's feeder thread, which waits for the replica's answers, is not woken
for it (on the coordinator's CPU, a thread hand-off per request was a third of the work). So the
model never waits for the server between two batches, but once:
after a long batch with nothing behind it, the one replica of a pool of one waits briefly for the
clients it has just answered (`_gather_s`), so that clients which send again as soon as they
have their answer ride in one batch instead of two half-size ones.

Supervision, so that every batch is answered:
- a replica that dies, or that has not finished the batch it runs within ``batch_timeout_s``
  (hung: a stuck CUDA call, SIGSTOP, a deadlock), is killed and restarted. The batch it was
  running is retried once, on whichever replica is free first (a batch that loses two replicas
  is answered with `InferenceError`); the batches queued behind it are retried as they were;
- a batch the model raises on is split in halves and each half retried, down to single texts,
  so one text that makes the model fail fails only its own request, and an out-of-memory batch
  is run in parts that fit;
- anything unexpected in the feeder itself is logged and handled as a lost replica: a feeder
  never dies silently, and one that cannot go on reports itself "dead" (``/ready`` answers 503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from ...errors import InferenceError, NotReadyError
from ...model.features import Features
from ...outputs import Ragged
from ..pipeline.batcher import Batch, Batcher
from ..pipeline.sink import Sink
from ..pipeline.stats import Stats
from ..processes.child import set_thread_title

__all__ = ["Finished", "Replica", "ReplicaCrashed", "ReplicaStartError", "WorkerPool", "embed_once"]

logger = logging.getLogger(__name__)

_MAX_ATTEMPTS = 2
_POLL_S = 0.1  # how often an idle or waiting feeder looks at its replica's health and deadline
# Closed-loop clients (each sends its next request when it has the last answer) settle, without
# a wait, into two cohorts of half the clients that alternate: one queues while the other runs,
# and each batch is half as big as it could be (MiniLM on 2 cores, in process: 16 mixed sentences
# a batch run at 264 sentences/s, 32 at 304). So after a batch that took at least _GATHER_FROM_S,
# a replica with nothing else in flight waits up to _GATHER_SHARE of that batch's time (at most
# _GATHER_MAX_S) until as many rows are queued as it has just answered plus those that were
# waiting, or a complete batch is ready (`Batcher.gather`). 32 one-sentence clients: 242-258 ->
# 261-278 requests/s; the clients are back in 3-8 ms. A faster model needs no wait: the server,
# not the batch size, sets its pace, and its batches grow under load on their own. A lone client
# pays nothing: the wait ends as soon as its one row is back. Only a pool of one replica waits:
# with several, the clients' groups are what keeps each replica busy (two one-thread workers on
# 2 cores, 32 stock clients: 287-300 requests/s without the wait, 253-267 with it, which gathered
# everyone into one replica's batch while the other idled).
_GATHER_SHARE = 0.1
_GATHER_FROM_S = 0.01
_GATHER_MAX_S = 0.01


class ReplicaCrashed(Exception):
    """The replica died (or became unreachable); its batches may be retried elsewhere."""


class ReplicaStartError(RuntimeError):
    """A replica could not load its model; the message says why in full (any other exception from
    ``start`` is reported with its type's name)."""


@dataclass(frozen=True)
class Finished:
    """A replica's answer for batch ``seq``: its vectors, or what the model raised."""

    seq: int
    vectors: np.ndarray | None = None
    error: str | None = None
    out_of_memory: bool = False
    ragged: dict[str, Ragged] | None = None  # sparse / ColBERT rows, for a batch that asked for them


class Replica(Protocol):
    """One model replica, driven by one feeder thread (only `describe` is called from others).

    `start` blocks until the model is loaded and warm (raising on failure); `send` hands a batch
    over without waiting for it (from the feeder's thread, or another one's `offer`: never both at
    once); `receive` returns the next finished batch, in the order they were sent, or None after
    ``timeout_s`` (with nothing in flight, it waits that long for a batch sent meanwhile), and
    raises `ReplicaCrashed` once the replica is lost; `stop` releases it (``graceful=False``: at
    once, it may be hung); `describe` says where it runs. A batch with outputs besides dense
    vectors is sent with its ``kinds`` (`Batch.kinds`), and its answer has them in ``ragged``."""

    name: str

    def start(self) -> None: ...

    def send(self, seq: int, features: Features, kinds: np.ndarray | None = None) -> None: ...

    def receive(self, timeout_s: float) -> Finished | None: ...

    def stop(self, graceful: bool = True) -> None: ...

    def describe(self) -> dict[str, object]: ...


def embed_once(replica: Replica, features: Features, timeout_s: float = 60.0) -> np.ndarray:
    """One batch through a started replica, waiting for it (tools and tests; the pool pipelines).
    `InferenceError` if the model raised, `ReplicaCrashed` if the replica was lost or silent."""
    replica.send(0, features)
    finished = replica.receive(timeout_s)
    if finished is None:
        raise ReplicaCrashed(f"{replica.name} did not answer within {timeout_s:g} s")
    if finished.error is not None:
        raise InferenceError(finished.error)
    return finished.vectors


@dataclass(eq=False)
class _InFlight:
    seq: int
    batch: Batch
    sent_at: float


class _Feeder:
    """The thread that feeds one replica and restarts it when it is lost."""

    def __init__(self, pool: WorkerPool, index: int, replica: Replica) -> None:
        self.pool, self.index, self.replica = pool, index, replica
        self.ready = threading.Event()
        self.lock = threading.Lock()  # in_flight and sending: the feeder's and `offer`'s
        self.serving = False  # started and not recovering: `offer` may send to it
        self.gathering = False  # waiting for its clients (`_gather_s`): `offer` leaves it alone
        self.startup_error: str | None = None
        self.restarts = 0
        self.in_flight: deque[_InFlight] = deque()
        self._seq = 0
        self._head_since = 0.0  # when the oldest batch in flight began to run at the replica
        self.thread = threading.Thread(target=self._run, name=f"feed-{index}", daemon=True)

    def _state(self, state: str) -> None:
        self.pool.stats.worker_states[self.index] = state

    def _run(self) -> None:
        set_thread_title(f"feed-{self.index}")
        try:
            self._serve()
        except BaseException:
            logger.exception("the feeder of %s stopped", self.replica.name)
            self._state("dead")
            self.ready.set()

    def _serve(self) -> None:
        self._state("starting")
        try:
            self.replica.start()
        except Exception as exc:
            self.startup_error = str(exc) if isinstance(exc, ReplicaStartError) else f"{type(exc).__name__}: {exc}"
            self._state("failed")
            self.replica.stop(graceful=False)
            self.ready.set()
            return
        self._state("idle")
        with self.lock:
            self.serving = True
        self.ready.set()
        while not self.pool.stopping.is_set():
            try:
                if not self._step():
                    break
            except ReplicaCrashed as exc:
                self._recover(str(exc))
            except Exception as exc:  # a bug here must cost a restart, not the feeder
                logger.exception("%s: unexpected error while feeding it", self.replica.name)
                self._recover(f"{self.replica.name}: unexpected error in its feeder ({type(exc).__name__}: {exc})")
        with self.lock:
            self.serving = False
        self._state("stopped")
        self.replica.stop(graceful=not self.in_flight)

    def _step(self) -> bool:
        """Send what there is room for, then wait a while for an answer (work that arrives meanwhile
        is sent by `offer`, and its answer ends the wait). False when done."""
        pool = self.pool
        self._fill()
        if not self.in_flight and pool.draining and pool.batcher.queued_rows == 0:
            return False
        finished = self.replica.receive(_POLL_S)
        if finished is not None:
            self._finish(finished)
        elif self.in_flight and time.perf_counter() - self._head_since > pool.batch_timeout_s:
            head = self.in_flight[0]
            raise ReplicaCrashed(f"{self.replica.name} did not finish a batch of {len(head.batch)} texts within "
                                 f"{pool.batch_timeout_s:g} s (-batch_timeout_s); taken for hung")
        return True

    def offer(self) -> bool:
        """Send one batch if this replica is idle (from any thread); True if it did. Only to an idle
        replica: it reads its channel at once, so the caller never waits on the send (a busy one
        reads the next batch only when it has run the one before, seconds on a CPU)."""
        with self.lock:
            if not self.serving or self.gathering or self.in_flight:
                return False
            try:
                return self._send_one()
            except ReplicaCrashed:  # its feeder finds out too, at its next wait, and recovers
                return False

    def _fill(self) -> None:
        """Send batches while there is room. A busy replica is only sent batches that are complete
        already (more of a big request): small requests gather into one bigger batch meanwhile,
        which costs the model less."""
        with self.lock:
            while self._send_one():
                pass

    def _send_one(self) -> bool:
        pool = self.pool
        if len(self.in_flight) >= pool.prefetch:
            return False
        batch = pool.batcher.next_batch(timeout=0, ready_only=bool(self.in_flight))
        if batch is None:
            return False
        self._seq += 1
        now = time.perf_counter()
        if not self.in_flight:
            self._head_since = now
        self.in_flight.append(_InFlight(self._seq, batch, now))
        self._state("busy")
        kinds = batch.kinds
        if kinds is None:
            self.replica.send(self._seq, batch.features)
        else:
            self.replica.send(self._seq, batch.features, kinds)
        return True

    def _finish(self, finished: Finished) -> None:
        pool = self.pool
        with self.lock:
            head = self.in_flight[0] if self.in_flight else None
            if head is None or finished.seq != head.seq:
                logger.warning("%s answered batch %d while %s was expected; ignored", self.replica.name, finished.seq,
                               head.seq if head else "none")
                return
            self.in_flight.popleft()
            started, self._head_since = self._head_since, time.perf_counter()
        if finished.error is not None:
            self._isolate(head.batch, finished)
        else:
            alone = not self.in_flight and len(pool.feeders) == 1
            gather_s = _gather_s(self._head_since - started) if alone else 0.0
            if gather_s:  # the rows it answers, and those already waiting
                expected = pool.batcher.queued_rows + len(head.batch)
                self.gathering = True
            else:
                self._fill()  # the replica's next batch goes out before this one's delivery
            waits = []
            for request, _ in head.batch.segments:
                if not request.first_batch_at:
                    request.first_batch_at = head.sent_at
                    waits.append(head.sent_at - request.tokenized_at)
            pool.stats.batch_done(len(head.batch), head.batch.num_tokens, self._head_since - started, waits)
            pool.sink.deliver(head.batch, finished.vectors, finished.ragged)
            if gather_s:
                try:
                    pool.batcher.gather(expected, gather_s)
                finally:
                    self.gathering = False
        if not self.in_flight:
            self._state("idle")

    def _isolate(self, batch: Batch, finished: Finished) -> None:
        """The model raised on ``batch``: retry its halves, so that only the failing texts fail."""
        if len(batch) > 1:
            logger.warning("%s: the model failed on a batch of %d texts (%s); retrying it in halves", self.replica.name,
                           len(batch), finished.error)
            first, second = batch.split()
            self.pool.batcher.retry(second, count_attempt=False)
            self.pool.batcher.retry(first, count_attempt=False)
            return
        if finished.out_of_memory:
            error = InferenceError(f"out of device memory for this text alone ({finished.error}); lower "
                                   "-max_seq_len, or raise -gpu_memory_fraction")
        else:
            error = InferenceError(f"the model failed on this text: {finished.error}")
        self.pool.sink.fail(batch, error)

    def _recover(self, reason: str) -> None:
        """The replica is lost: retry its batches, restart it."""
        pool = self.pool
        with self.lock:
            self.serving = False
            lost, self.in_flight = list(self.in_flight), deque()
        logger.error("%s (%d batches in flight); restarting it", reason, len(lost))
        self._state("restarting")
        self.restarts += 1
        pool.stats.worker_restarts += 1
        for item in reversed(lost):  # each retry goes to the front: reversed keeps their order
            running = item is lost[0]  # only the first was running; the others never started
            if running and item.batch.attempts + 1 >= _MAX_ATTEMPTS:
                pool.sink.fail(item.batch, InferenceError(
                    f"this batch crashed a worker {_MAX_ATTEMPTS} times: {reason}"))
            else:
                pool.batcher.retry(item.batch, count_attempt=running)
        self.replica.stop(graceful=False)
        while not pool.stopping.is_set():
            try:
                self.replica.start()
            except Exception as exc:
                logger.error("%s could not be restarted (%s); trying again", self.replica.name, exc)
                self._state("failed")
                self.replica.stop(graceful=False)
                pool.stopping.wait(1.0)
                continue
            self._state("idle")
            with self.lock:
                self.serving = True
            return


def _gather_s(ran_s: float) -> float:
    """How long an idle replica waits for the clients of a batch that ran ``ran_s`` seconds."""
    return min(_GATHER_SHARE * ran_s, _GATHER_MAX_S) if ran_s >= _GATHER_FROM_S else 0.0


class WorkerPool:
    def __init__(self, replicas: list[Replica], *, batcher: Batcher, sink: Sink, stats: Stats, prefetch: int = 2,
                 batch_timeout_s: float = 60.0, on_close: Callable[[], None] | None = None) -> None:
        """``prefetch``: batches in flight per replica; ``batch_timeout_s``: how long a replica may
        take for one batch before it is taken for hung; ``on_close`` runs once every replica is
        stopped (e.g. leaving the Ray cluster)."""
        self.batcher = batcher
        self.sink = sink
        self.stats = stats
        self.prefetch = max(1, prefetch)
        self.batch_timeout_s = batch_timeout_s
        self.stopping = threading.Event()
        self.draining = False
        self.feeders = [_Feeder(self, i, replica) for i, replica in enumerate(replicas)]
        self._on_close = on_close
        self._next = 0  # the feeder `offer` asks first: each in turn
        batcher.on_work = self.offer

    def offer(self) -> None:
        """New work is queued: replicas with room take it now, on the caller's thread."""
        count = len(self.feeders)
        first, self._next = self._next, (self._next + 1) % count
        for i in range(count):
            feeder = self.feeders[(first + i) % count]
            while feeder.offer():
                pass

    def start(self) -> None:
        for feeder in self.feeders:
            feeder.thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every replica is loaded and warm; raise `NotReadyError` if one could not."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for feeder in self.feeders:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not feeder.ready.wait(left):
                raise NotReadyError(f"{feeder.replica.name} did not become ready within {timeout} s")
            if feeder.startup_error:
                raise NotReadyError(f"{feeder.replica.name} failed to start: {feeder.startup_error}")

    @property
    def ready(self) -> bool:
        return all(f.ready.is_set() and not f.startup_error for f in self.feeders)

    def states(self) -> dict[int, str]:
        return dict(self.stats.worker_states)

    def describe(self) -> list[dict[str, object]]:
        """Each replica: where it runs, its state, how often it was restarted."""
        return [
            {"name": f.replica.name, "state": self.stats.worker_states.get(f.index, "new"), "restarts": f.restarts,
             **f.replica.describe()}
            for f in self.feeders
        ]

    def close(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Finish the queued work (``drain``), then stop every replica. Also safe if never started."""
        self.draining = drain
        if not drain:
            self.stopping.set()
        started = [f for f in self.feeders if f.thread.ident is not None]
        deadline = time.monotonic() + timeout
        for feeder in started:
            feeder.thread.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()
        for feeder in started:
            feeder.thread.join(10)
        if self._on_close is not None:
            self._on_close()
