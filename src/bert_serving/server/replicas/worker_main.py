"""The worker process's ``main``: one model replica answering batches. `local.LocalReplica`
starts each in a fresh interpreter running ``serve(ENDPOINT, WORKER_ID)``; the frames it
speaks are in `channel`.

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

import numpy as np
import zmq

from .channel import BATCH, ERR, OK, READY, SPEC, unpack
from .runtime import load_encoder

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_PARENT_CHECK_MS = 1000


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
