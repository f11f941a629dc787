"""`LocalReplica`: a model replica in a worker process on this machine, seen from the server
(the process's own side is `worker_main`, the messages between them `frames`), and
`local_worker_pool`, one such replica per device."""

from __future__ import annotations

import json
import logging
import os
import subprocess

import numpy as np

from ...model.features import Features
from ...model.settings import EncoderSettings
from ..processes.channel import Channel
from ..processes.child import log_level, spawn
from .frames import ERR, OK, READY, STOP, pack, read_ok, settings_to_json
from .pool import Finished, ReplicaCrashed, ReplicaStartError, WorkerPool
from .runtime import OPENMP_ENV

__all__ = ["LocalReplica", "local_worker_pool"]

logger = logging.getLogger(__name__)

_ENTRY = "bert_serving.server.replicas.worker_main:serve"
_GRACEFUL_STOP_S = 5.0


class LocalReplica:
    """A worker process (`worker_main.serve`, started by `processes.child.spawn`), talking over a
    socket pair whose other end only the worker holds."""

    def __init__(self, settings: EncoderSettings, device: str, *, index: int, threads: int = 1,
                 gpu_memory_fraction: float = 0.5, log_level: int = 0, idle_spin_ms: float = 0.0,
                 model: str | None = None) -> None:
        """``model``: the served model's name, in a server with several (in its name and title)."""
        self.name = f"worker {index} ({device})" if model is None else f"worker {index} of {model} ({device})"
        self._orders = {"settings": settings_to_json(settings), "device": device, "threads": threads,
                        "gpu_memory_fraction": gpu_memory_fraction, "log_level": log_level, "worker_id": index,
                        "idle_spin_s": idle_spin_ms / 1000, "model": model}
        self._device = device
        self.process: subprocess.Popen | None = None
        self._channel: Channel | None = None

    def start(self) -> None:
        env = {k: v for k, v in OPENMP_ENV.items() if k not in os.environ}  # the user's settings win
        child = spawn(_ENTRY, self._orders, env=env)
        self.process, self._channel = child.process, child.channel
        while not self._channel.poll(0.1):
            self._check_alive()
        frames = self._receive_message()
        if frames[0] == ERR:
            raise ReplicaStartError(json.loads(bytes(frames[1]))["message"])
        if frames[0] != READY:
            raise ReplicaStartError(f"{self.name} sent {bytes(frames[0])!r} instead of READY")
        logger.info("%s ready (pid %d)", self.name, json.loads(bytes(frames[1]))["pid"])

    def send(self, seq: int, features: Features, kinds: np.ndarray | None = None) -> None:
        try:
            self._channel.send(pack(seq, features, kinds))
        except OSError as exc:  # the worker is gone (a broken pipe)
            raise ReplicaCrashed(f"{self.name}, pid {self.process.pid}: {exc.strerror or exc}") from None

    def receive(self, timeout_s: float) -> Finished | None:
        if not self._channel.poll(timeout_s):
            self._check_alive()
            return None
        frames = self._receive_message()
        kind, meta = bytes(frames[0]), json.loads(bytes(frames[1]))
        if kind == OK:
            vectors, ragged = read_ok(meta, frames[2:])
            return Finished(meta["seq"], vectors, ragged=ragged)
        if kind == ERR:
            return Finished(meta["seq"], error=meta["message"], out_of_memory=meta.get("out_of_memory", False))
        raise ReplicaCrashed(f"{self.name} sent an unknown frame {kind!r}")

    def _receive_message(self) -> list[memoryview]:
        try:
            return self._channel.receive()
        except (EOFError, OSError):
            self.process.wait(5)
            raise ReplicaCrashed(f"{self.name}, pid {self.process.pid}, died with exit code "
                                 f"{self.process.returncode}") from None

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise ReplicaCrashed(f"{self.name}, pid {self.process.pid}, died with exit code {self.process.returncode}")

    def describe(self) -> dict[str, object]:
        return {"device": self._device, "pid": None if self.process is None else self.process.pid}

    def stop(self, graceful: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            if graceful:
                try:
                    self._channel.send([STOP])
                except OSError:
                    pass
                try:
                    self.process.wait(_GRACEFUL_STOP_S)
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop within %.0f s; killing it", self.name, _GRACEFUL_STOP_S)
            if self.process.poll() is None:
                self.process.kill()  # SIGKILL: also ends a stopped (SIGSTOP) or hung process
                self.process.wait(10)
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def local_worker_pool(settings: EncoderSettings, devices: list[str], *, threads: int = 1,
                      gpu_memory_fraction: float = 0.5, idle_spin_ms: float = 0.0, model: str | None = None,
                      **pool_options) -> WorkerPool:
    """One worker process per device, on this machine (``model``: see `LocalReplica`)."""
    replicas = [
        LocalReplica(settings, device, index=i, threads=threads, gpu_memory_fraction=gpu_memory_fraction,
                     log_level=log_level(), idle_spin_ms=idle_spin_ms, model=model)
        for i, device in enumerate(devices)
    ]
    return WorkerPool(replicas, **pool_options)
