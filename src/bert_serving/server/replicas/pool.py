"""`WorkerPool`: model replicas fed by the batcher, one feeding thread each, supervised.

A replica is one loaded model somewhere: a local process (`local.LocalReplica`, the default)
or, in a cluster, a Ray actor (`ray_replicas`). Each replica's thread pulls the next batch from the batcher only when
its replica is idle (no random dispatch), runs it, and hands the vectors to the sink.

Supervision: a replica that dies is noticed, restarted, and the batch it was running is
retried once (on whichever replica is idle first); a batch that kills replicas twice is
answered with an `InferenceError` while the others proceed. A batch the model raises on is
answered with that error at once: running it again would raise again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol

import numpy as np

from ...errors import InferenceError, NotReadyError
from ...model.features import Features
from ..pipeline.batcher import Batch, Batcher
from ..pipeline.sink import Sink
from ..pipeline.stats import Stats

__all__ = ["BatchFailed", "Replica", "ReplicaCrashed", "WorkerPool"]

logger = logging.getLogger(__name__)

_MAX_ATTEMPTS = 2


class ReplicaCrashed(Exception):
    """The replica died (or became unreachable); its batch may be retried elsewhere."""


class BatchFailed(Exception):
    """The model raised on this batch; the replica itself is fine."""


class Replica(Protocol):
    """One model replica. `start` blocks until it is loaded and warm (raising on failure);
    `embed` runs one batch; `stop` releases it; `describe` says where it runs (for
    SHOW_CONFIG). Not called concurrently, except `describe`."""

    name: str

    def start(self) -> None: ...

    def embed(self, features: Features) -> np.ndarray: ...

    def stop(self) -> None: ...

    def describe(self) -> dict[str, object]: ...


class _Feeder:
    """The thread that feeds one replica and restarts it when it dies."""

    def __init__(self, pool: WorkerPool, index: int, replica: Replica) -> None:
        self.pool, self.index, self.replica = pool, index, replica
        self.ready = threading.Event()
        self.startup_error: str | None = None
        self.restarts = 0
        self.thread = threading.Thread(target=self._run, name=f"feed-{index}", daemon=True)

    def _state(self, state: str) -> None:
        self.pool.stats.worker_states[self.index] = state

    def _run(self) -> None:
        pool = self.pool
        self._state("starting")
        try:
            self.replica.start()
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {exc}"
            self._state("failed")
            self.replica.stop()
            self.ready.set()
            return
        self._state("idle")
        self.ready.set()
        while not pool.stopping.is_set():
            batch = pool.batcher.next_batch(timeout=0.1)
            if batch is not None:
                self._run_batch(batch)
            elif pool.draining and pool.batcher.queued_rows == 0:
                break
        self._state("stopped")
        self.replica.stop()

    def _run_batch(self, batch: Batch) -> None:
        pool = self.pool
        started = time.perf_counter()
        self._state("busy")
        try:
            vectors = self.replica.embed(batch.features)
        except BatchFailed as exc:
            self._state("idle")
            pool.sink.fail(batch, InferenceError(f"the model failed on this batch: {exc}"))
            return
        except ReplicaCrashed as exc:
            self._recover(batch, str(exc))
            return
        self._state("idle")
        waits = []
        for request, _ in batch.segments:
            if not request.first_batch_at:
                request.first_batch_at = started
                waits.append(started - request.tokenized_at)
        pool.stats.batch_done(len(batch), batch.num_tokens, time.perf_counter() - started, waits)
        pool.sink.deliver(batch, vectors)

    def _recover(self, batch: Batch, reason: str) -> None:
        """The replica died running ``batch``: retry the batch once, restart the replica."""
        pool = self.pool
        logger.error("%s while running a batch of %d texts; restarting it", reason, len(batch))
        self._state("restarting")
        self.restarts += 1
        pool.stats.worker_restarts += 1
        if batch.attempts + 1 < _MAX_ATTEMPTS:
            pool.batcher.retry(batch)
        else:
            pool.sink.fail(batch, InferenceError(f"this batch crashed a worker {_MAX_ATTEMPTS} times: {reason}"))
        self.replica.stop()
        while not pool.stopping.is_set():
            try:
                self.replica.start()
            except Exception as exc:
                logger.error("%s could not be restarted (%s); trying again", self.replica.name, exc)
                self._state("failed")
                pool.stopping.wait(1.0)
                continue
            self._state("idle")
            return


class WorkerPool:
    def __init__(self, replicas: list[Replica], *, batcher: Batcher, sink: Sink, stats: Stats,
                 on_close: Callable[[], None] | None = None) -> None:
        """``on_close`` runs once every replica is stopped (e.g. leaving the Ray cluster)."""
        self.batcher = batcher
        self.sink = sink
        self.stats = stats
        self.stopping = threading.Event()
        self.draining = False
        self.feeders = [_Feeder(self, i, replica) for i, replica in enumerate(replicas)]
        self._on_close = on_close

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
