"""A worker process: one model replica answering batches. `WorkerPool` starts each in a fresh
interpreter running ``serve(ENDPOINT, WORKER_ID)``.

Frames on the private PAIR socket::

    server -> worker  [SPEC, pickle{spec, device, threads, log_level, gpu_memory_fraction}]  first
                      [BATCH, json{seq}, input_ids i32, type_ids i8, pool_mask u8, offsets i64]
                      [STOP]
    worker -> server  [READY, json{pid, device}]  after loading and one warm-up pass
                      [OK, json{seq, dtype, shape}, vectors]
                      [ERR, json{seq, message}]   a failed batch, or a failed start (seq -1)

The worker exits on STOP, and on its own when the server process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from typing import TYPE_CHECKING

import numpy as np
import zmq

from ..model.features import Features

if TYPE_CHECKING:
    from ..model.encoder import Encoder, ModelSpec

__all__ = ["BATCH", "ERR", "OK", "READY", "SPEC", "STOP", "load_encoder", "pack", "unpack"]

logger = logging.getLogger(__name__)

SPEC, BATCH, STOP, READY, OK, ERR = b"SPEC", b"BATCH", b"STOP", b"READY", b"OK", b"ERR"
_PARENT_CHECK_MS = 1000


def pack(features: Features) -> list:
    return [features.input_ids, features.type_ids, features.pool_mask.view(np.uint8), features.offsets]


def unpack(frames: list) -> Features:
    ids, types, mask, offsets = (f.buffer for f in frames)
    return Features(
        input_ids=np.frombuffer(ids, dtype=np.int32),
        type_ids=np.frombuffer(types, dtype=np.int8),
        pool_mask=np.frombuffer(mask, dtype=np.uint8).view(np.bool_),
        offsets=np.frombuffer(offsets, dtype=np.int64),
    )


def _error(seq: int, exc: BaseException) -> list[bytes]:
    return [ERR, json.dumps({"seq": seq, "message": f"{type(exc).__name__}: {exc}"}).encode()]


def _receive(sock: zmq.Socket, parent: int) -> list | None:
    """The next message; None once the server process has gone away."""
    while not sock.poll(_PARENT_CHECK_MS):
        if os.getppid() != parent:
            return None
    return sock.recv_multipart(copy=False)


def serve(endpoint: str, worker_id: int) -> None:
    parent = os.getppid()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 1000
    sock.connect(endpoint)
    try:
        frames = _receive(sock, parent)
        if frames is None or frames[0].bytes != SPEC:
            return
        options = pickle.loads(frames[1].bytes)
        if options["log_level"]:
            logging.basicConfig(level=options["log_level"],
                                format=f"%(asctime)s %(levelname).1s worker-{worker_id} %(name)s: %(message)s",
                                datefmt="%H:%M:%S")
        try:
            encoder = load_encoder(options["spec"], options["device"], threads=options["threads"],
                                   gpu_memory_fraction=options["gpu_memory_fraction"])
        except Exception as exc:
            logger.exception("worker %d failed to start", worker_id)
            sock.send_multipart(_error(-1, exc))
            return
        sock.send_multipart([READY, json.dumps({"pid": os.getpid(), "device": options["device"]}).encode()])
        while (frames := _receive(sock, parent)) is not None and frames[0].bytes == BATCH:
            seq = json.loads(frames[1].bytes)["seq"]
            try:
                vectors = np.ascontiguousarray(encoder.embed(unpack(frames[2:])))
            except Exception as exc:
                logger.exception("batch %d failed", seq)
                sock.send_multipart(_error(seq, exc))
                continue
            meta = {"seq": seq, "dtype": str(vectors.dtype), "shape": list(vectors.shape)}
            sock.send_multipart([OK, json.dumps(meta).encode(), vectors], copy=False)
    finally:
        sock.close()
        ctx.term()


def load_encoder(spec: ModelSpec, device: str, *, threads: int, gpu_memory_fraction: float) -> Encoder:
    """A replica's model: torch limited to ``threads`` (and its share of GPU memory), loaded on
    ``device`` and warmed up by one pass. What every kind of replica runs at its start."""
    import torch

    from ..model.encoder import Encoder

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction, torch.device(device))
    encoder = Encoder(spec, device=device)
    encoder.embed(encoder.tokenizer.encode(["warm up the model"] * 2))
    return encoder
