"""`LocalReplica`: a model replica in a worker process on this machine, seen from the server
(the process's own side is `worker_main`, the frames between them `channel`), and
`local_worker_pool`, one such replica per device."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import zmq

from ...model.encoder import EncoderSettings
from ...model.features import Features
from .channel import ERR, OK, READY, STOP, pack, settings_to_json
from .pool import Finished, ReplicaCrashed, WorkerPool

__all__ = ["LocalReplica", "local_worker_pool"]

logger = logging.getLogger(__name__)

_WORKER_COMMAND = "from bert_serving.server.replicas.worker_main import serve; serve()"
# OpenMP threads that spin while they wait steal the cores the server's own threads need (sockets,
# tokenization): measured on 2 cores, spinning workers cost 10-40x the CPU per small request
# (benchmarks/overhead.py). A worker's threads sleep instead, unless the user chose otherwise.
_WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
_GRACEFUL_STOP_S = 5.0


class LocalReplica:
    """A worker process (`worker_main.serve` in a fresh interpreter and a session of its own),
    talking over a PAIR socket at an ``ipc://`` path inside ``channel_dir`` (mode 0700)."""

    def __init__(self, settings: EncoderSettings, device: str, *, ctx: zmq.Context, index: int, channel_dir: Path,
                 threads: int = 1, gpu_memory_fraction: float = 0.5, log_level: int = 0) -> None:
        self.name = f"worker {index} ({device})"
        self._ctx, self._index, self._channel_dir = ctx, index, channel_dir
        self._orders = {"settings": settings_to_json(settings), "device": device, "threads": threads,
                        "gpu_memory_fraction": gpu_memory_fraction, "log_level": log_level, "worker_id": index}
        self._device = device
        self._incarnation = 0
        self.process: subprocess.Popen | None = None
        self._socket: zmq.Socket | None = None

    def start(self) -> None:
        self._incarnation += 1  # a fresh endpoint: nothing of a previous process can reach the new one
        endpoint = f"ipc://{self._channel_dir}/worker-{self._index}-{self._incarnation}"
        self._socket = self._ctx.socket(zmq.PAIR)
        self._socket.linger = 0
        self._socket.bind(endpoint)
        self.process = subprocess.Popen([sys.executable, "-c", _WORKER_COMMAND], stdin=subprocess.PIPE,
                                        env={**_WORKER_ENV, **os.environ},
                                        start_new_session=True)  # the terminal's Ctrl-C is the server's to handle
        self.process.stdin.write(json.dumps({**self._orders, "endpoint": endpoint}).encode())
        self.process.stdin.close()
        while not self._socket.poll(100):
            self._check_alive()
        frames = self._socket.recv_multipart()
        if frames[0] == ERR:
            raise RuntimeError(json.loads(frames[1])["message"])
        if frames[0] != READY:
            raise RuntimeError(f"{self.name} sent {frames[0]!r} instead of READY")
        logger.info("%s ready (pid %d)", self.name, json.loads(frames[1])["pid"])

    def send(self, seq: int, features: Features) -> None:
        self._socket.send_multipart(pack(seq, features), copy=False)

    def receive(self, timeout_s: float) -> Finished | None:
        if not self._socket.poll(int(timeout_s * 1000)):
            self._check_alive()
            return None
        frames = self._socket.recv_multipart(copy=False)
        kind, meta = frames[0].bytes, json.loads(frames[1].bytes)
        if kind == OK:
            vectors = np.frombuffer(frames[2].buffer, dtype=meta["dtype"]).reshape(meta["shape"])
            return Finished(meta["seq"], vectors)
        if kind == ERR:
            return Finished(meta["seq"], error=meta["message"], out_of_memory=meta.get("out_of_memory", False))
        raise ReplicaCrashed(f"{self.name} sent an unknown frame {kind!r}")

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ReplicaCrashed(f"{self.name}, pid {self.process.pid}, died with exit code {self.process.returncode}")

    def describe(self) -> dict[str, object]:
        return {"device": self._device, "pid": None if self.process is None else self.process.pid}

    def stop(self, graceful: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            if graceful:
                try:
                    self._socket.send_multipart([STOP], flags=zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                try:
                    self.process.wait(_GRACEFUL_STOP_S)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop within %.0f s; killing it", self.name, _GRACEFUL_STOP_S)
            if self.process.poll() is None:
                self.process.kill()  # SIGKILL: also ends a stopped (SIGSTOP) or hung process
                self.process.wait(10)
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def local_worker_pool(settings: EncoderSettings, devices: list[str], *, ctx: zmq.Context, threads: int = 1,
                      gpu_memory_fraction: float = 0.5, **pool_options) -> WorkerPool:
    """One worker process per device, on this machine; their channels live in a private
    directory that the pool removes when it closes."""
    log_level = logging.getLogger("bert_serving").getEffectiveLevel() if logging.getLogger().handlers else 0
    channel_dir = Path(tempfile.mkdtemp(prefix="bert-serving-"))  # mode 0700: this user's alone
    replicas = [
        LocalReplica(settings, device, ctx=ctx, index=i, channel_dir=channel_dir, threads=threads,
                     gpu_memory_fraction=gpu_memory_fraction, log_level=log_level)
        for i, device in enumerate(devices)
    ]
    return WorkerPool(replicas, on_close=lambda: shutil.rmtree(channel_dir, ignore_errors=True), **pool_options)
