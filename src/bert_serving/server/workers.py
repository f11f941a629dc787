"""`WorkerPool`: model replicas in their own processes, fed by the batcher, supervised.

Each worker process (`worker_main.serve`, in a fresh interpreter)
loads one `Encoder` (one model replica on one device) and answers batches over a private
ZeroMQ PAIR socket. In the server, one thread per worker pulls the next batch from the batcher
only when its worker is idle (no random dispatch), sends it, waits for the vectors and hands
them to the sink.

Supervision: a worker that dies is noticed within ``poll_ms``, restarted, and the batch it was
running is retried once on the fresh worker; a batch that kills a worker twice is answered
with an `InferenceError` while the others proceed. A batch the model raises on is answered
with that error at once (retrying would raise again).

The wire between the two sides is described in `worker_main`.
"""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
import threading
import time

import numpy as np
import zmq

from ..errors import InferenceError, NotReadyError
from ..model.encoder import ModelSpec
from .batcher import Batch, Batcher
from .sink import Sink
from .stats import Stats
from .worker_main import BATCH, ERR, READY, SPEC, STOP, pack

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)

_MAX_ATTEMPTS = 2
_WORKER_COMMAND = "import sys; from bert_serving.server.worker_main import serve; serve(sys.argv[1], int(sys.argv[2]))"


# --- the server side --------------------------------------------------------------------------------


class _WorkerCrashed(Exception):
    pass


class _Worker:
    """One worker process and the thread that feeds it."""

    def __init__(self, pool: WorkerPool, worker_id: int, device: str) -> None:
        self.pool = pool
        self.id = worker_id
        self.device = device
        self.process: subprocess.Popen | None = None
        self.socket: zmq.Socket | None = None
        self.ready = threading.Event()
        self.startup_error: str | None = None
        self.restarts = 0
        self._seq = 0
        self.thread = threading.Thread(target=self._run, name=f"worker-{worker_id}", daemon=True)

    def _set_state(self, state: str) -> None:
        self.pool.stats.worker_states[self.id] = state

    def _spawn(self) -> None:
        pool = self.pool
        self.socket = pool.ctx.socket(zmq.PAIR)
        self.socket.linger = 0
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        # a fresh interpreter, not multiprocessing: the user's __main__ is never re-imported
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_COMMAND, f"tcp://127.0.0.1:{port}", str(self.id)],
        )
        options = {"spec": pool.spec, "device": self.device, "threads": pool.threads, "log_level": pool.log_level,
                   "gpu_memory_fraction": pool.gpu_memory_fraction}
        self.socket.send_multipart([SPEC, pickle.dumps(options)])
        self._set_state("starting")
        while True:
            frames = self._receive(timeout_s=None)
            if frames[0] == READY:
                info = json.loads(frames[1])
                logger.info("worker %d ready on %s (pid %d)", self.id, info["device"], info["pid"])
                self._set_state("idle")
                return
            if frames[0] == ERR:
                raise RuntimeError(json.loads(frames[1])["message"])

    def _receive(self, timeout_s: float | None) -> list[bytes]:
        """Wait for the worker's next message, noticing if it dies meanwhile."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.socket.poll(self.pool.poll_ms):
            if self.process.poll() is not None:
                raise _WorkerCrashed(f"worker {self.id} (pid {self.process.pid}) died with exit code {self.process.returncode}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
        return self.socket.recv_multipart()

    def _stop_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.socket.send_multipart([STOP], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def _run(self) -> None:
        try:
            self._spawn()
        except Exception as exc:
            self.startup_error = str(exc)
            self._set_state("failed")
            self._stop_process()
            self.ready.set()
            return
        self.ready.set()
        pool = self.pool
        while not pool.stopping.is_set():
            batch = pool.batcher.next_batch(timeout=0.1)
            if batch is None:
                if pool.batcher_closed_and_empty():
                    break
                continue
            self._run_batch(batch)
        self._set_state("stopped")
        self._stop_process()

    def _run_batch(self, batch: Batch) -> None:
        pool = self.pool
        self._seq += 1
        started = time.perf_counter()
        self._set_state("busy")
        try:
            features = batch.features
            self.socket.send_multipart([BATCH, json.dumps({"seq": self._seq}).encode(), *pack(features)], copy=False)
            frames = self._receive(timeout_s=None)
        except _WorkerCrashed as exc:
            self._recover(batch, str(exc))
            return
        self._set_state("idle")
        seconds = time.perf_counter() - started
        if frames[0] == ERR:
            message = json.loads(frames[1])["message"]
            pool.sink.fail(batch, InferenceError(f"the model failed on this batch: {message}"))
            return
        meta = json.loads(frames[1])
        vectors = np.frombuffer(frames[2], dtype=meta["dtype"]).reshape(meta["shape"])
        waits = []
        for request, _ in batch.segments:
            if not request.first_batch_at:
                request.first_batch_at = started
                waits.append(started - request.tokenized_at)
        pool.stats.batch_done(len(batch), features.num_tokens, seconds, waits)
        pool.sink.deliver(batch, vectors)

    def _recover(self, batch: Batch, reason: str) -> None:
        """The worker died running ``batch``: restart it and retry the batch once."""
        pool = self.pool
        logger.error("%s while running a batch of %d texts; restarting it", reason, len(batch))
        self._set_state("restarting")
        self.restarts += 1
        if batch.attempts + 1 < _MAX_ATTEMPTS:
            pool.batcher.retry(batch)
        else:
            pool.sink.fail(batch, InferenceError(f"this batch crashed a worker {_MAX_ATTEMPTS} times; {reason}"))
        self._stop_process()
        try:
            self._spawn()
        except Exception as exc:
            logger.error("worker %d could not be restarted: %s", self.id, exc)
            self._set_state("failed")
            pool.stopping.wait(1.0)


class WorkerPool:
    def __init__(
        self,
        spec: ModelSpec,
        devices: list[str],
        *,
        batcher: Batcher,
        sink: Sink,
        stats: Stats,
        ctx: zmq.Context,
        threads: int = 1,
        gpu_memory_fraction: float = 0.5,
        poll_ms: int = 100,
    ) -> None:
        self.spec = spec
        self.batcher = batcher
        self.sink = sink
        self.stats = stats
        self.ctx = ctx
        self.threads = threads
        self.gpu_memory_fraction = gpu_memory_fraction
        self.poll_ms = poll_ms
        self.log_level = logging.getLogger("bert_serving").getEffectiveLevel() if logging.getLogger().handlers else 0
        self.stopping = threading.Event()
        self._drain = False
        self.workers = [_Worker(self, i, device) for i, device in enumerate(devices)]

    def start(self) -> None:
        for worker in self.workers:
            worker.thread.start()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every worker has loaded and warmed up; raise if one could not."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self.workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not worker.ready.wait(left):
                raise NotReadyError(f"worker {worker.id} did not become ready within {timeout} s")
            if worker.startup_error:
                raise NotReadyError(f"worker {worker.id} failed to start: {worker.startup_error}")

    @property
    def ready(self) -> bool:
        return all(w.ready.is_set() and not w.startup_error for w in self.workers)

    def batcher_closed_and_empty(self) -> bool:
        return self._drain and self.batcher.queued_rows == 0

    def states(self) -> dict[int, str]:
        return dict(self.stats.worker_states)

    def processes(self) -> list[subprocess.Popen]:
        return [w.process for w in self.workers if w.process is not None]

    def close(self, drain: bool = True, timeout: float = 30.0) -> None:
        """Finish queued work (``drain``), then stop every worker process."""
        self._drain = drain
        if not drain:
            self.stopping.set()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()
        for worker in self.workers:
            worker.thread.join(10)
