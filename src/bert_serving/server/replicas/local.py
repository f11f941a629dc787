"""`LocalReplica`: a model replica in a worker process on this machine, seen from the server
(the process's own side is `worker_main`), and `local_worker_pool`, one per device."""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys

import numpy as np
import zmq

from ...model.encoder import ModelSpec
from ...model.features import Features
from .channel import BATCH, ERR, SPEC, STOP, pack
from .pool import BatchFailed, ReplicaCrashed, WorkerPool

__all__ = ["LocalReplica", "local_worker_pool"]

logger = logging.getLogger(__name__)

_WORKER_COMMAND = ("import sys; from bert_serving.server.replicas.worker_main import serve; "
                   "serve(sys.argv[1], int(sys.argv[2]))")


class LocalReplica:
    """A worker process on this machine (`worker_main.serve` in a fresh interpreter, so the
    user's ``__main__`` is never re-imported), talking over a private ZeroMQ PAIR socket."""

    def __init__(self, spec: ModelSpec, device: str, *, ctx: zmq.Context, index: int, threads: int = 1,
                 gpu_memory_fraction: float = 0.5, log_level: int = 0, poll_ms: int = 100) -> None:
        self.name = f"worker {index} ({device})"
        self._spec, self._device, self._ctx, self._index = spec, device, ctx, index
        self._options = {"spec": spec, "device": device, "threads": threads, "log_level": log_level,
                         "gpu_memory_fraction": gpu_memory_fraction}
        self._poll_ms = poll_ms
        self.process: subprocess.Popen | None = None
        self._socket: zmq.Socket | None = None
        self._seq = 0

    def start(self) -> None:
        self._socket = self._ctx.socket(zmq.PAIR)
        self._socket.linger = 0
        port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_COMMAND, f"tcp://127.0.0.1:{port}", str(self._index)]
        )
        self._socket.send_multipart([SPEC, pickle.dumps(self._options)])
        frames = self._receive()
        if frames[0] == ERR:
            raise RuntimeError(json.loads(frames[1])["message"])
        info = json.loads(frames[1])
        logger.info("%s ready (pid %d)", self.name, info["pid"])

    def embed(self, features: Features) -> np.ndarray:
        self._seq += 1
        self._socket.send_multipart([BATCH, json.dumps({"seq": self._seq}).encode(), *pack(features)], copy=False)
        frames = self._receive()
        if frames[0] == ERR:
            raise BatchFailed(json.loads(frames[1])["message"])
        meta = json.loads(frames[1])
        return np.frombuffer(frames[2], dtype=meta["dtype"]).reshape(meta["shape"])

    def _receive(self) -> list[bytes]:
        """The process's next message; `ReplicaCrashed` as soon as it is seen dead."""
        while not self._socket.poll(self._poll_ms):
            if self.process.poll() is not None:
                raise ReplicaCrashed(
                    f"{self.name}, pid {self.process.pid}, died with exit code {self.process.returncode}")
        return self._socket.recv_multipart()

    def describe(self) -> dict[str, object]:
        return {"device": self._device, "pid": None if self.process is None else self.process.pid}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self._socket.send_multipart([STOP], flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def local_worker_pool(spec: ModelSpec, devices: list[str], *, ctx: zmq.Context, threads: int = 1,
          gpu_memory_fraction: float = 0.5, **stages) -> WorkerPool:
    """One worker process per device, on this machine."""
    log_level = logging.getLogger("bert_serving").getEffectiveLevel() if logging.getLogger().handlers else 0
    replicas = [
        LocalReplica(spec, device, ctx=ctx, index=i, threads=threads, gpu_memory_fraction=gpu_memory_fraction,
                     log_level=log_level)
        for i, device in enumerate(devices)
    ]
    return WorkerPool(replicas, **stages)
