"""The worker process's ``main``: one model replica answering batches.

`local.LocalReplica` starts it in a fresh interpreter (so the user's ``__main__`` is never
re-imported), in a session of its own, and writes its orders as JSON to its standard input:
``{"settings", "device", "threads", "gpu_memory_fraction", "endpoint", "log_level", "worker_id"}``.
The frames it then speaks are in `channel`.

It ignores the terminal's and the service manager's signals (SIGINT, SIGTERM, SIGHUP): Ctrl-C or
``systemctl stop`` reach the whole process group, and the server, which drains, decides when its
workers stop. It exits on STOP, and on its own as soon as the server process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

import numpy as np
import zmq

from .channel import BATCH, OK, READY, error_frames, settings_from_json, unpack
from .runtime import load_encoder

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_PARENT_CHECK_MS = 1000


def _receive(sock: zmq.Socket, parent: int) -> list | None:
    """The next message; None once the server process has gone away."""
    while not sock.poll(_PARENT_CHECK_MS):
        if os.getppid() != parent:
            return None
    return sock.recv_multipart(copy=False)


def serve() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    parent = os.getppid()
    orders = json.loads(sys.stdin.read())
    worker_id = orders["worker_id"]
    if orders["log_level"]:
        logging.basicConfig(level=orders["log_level"],
                            format=f"%(asctime)s %(levelname).1s worker-{worker_id} %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.linger = 1000
    sock.connect(orders["endpoint"])
    try:
        try:
            from ...model.encoder import resolve

            encoder = load_encoder(resolve(settings_from_json(orders["settings"])), orders["device"],
                                   threads=orders["threads"], gpu_memory_fraction=orders["gpu_memory_fraction"])
        except Exception as exc:
            logger.exception("worker %d failed to start", worker_id)
            sock.send_multipart(error_frames(-1, exc))
            return
        sock.send_multipart([READY, json.dumps({"pid": os.getpid(), "device": orders["device"]}).encode()])
        while (frames := _receive(sock, parent)) is not None and frames[0].bytes == BATCH:
            seq = json.loads(frames[1].bytes)["seq"]
            try:
                vectors = np.ascontiguousarray(encoder.embed(unpack(frames[2:])))
            except Exception as exc:
                logger.exception("batch %d failed", seq)
                encoder.release_memory()
                sock.send_multipart(error_frames(seq, exc))
                continue
            meta = {"seq": seq, "dtype": str(vectors.dtype), "shape": list(vectors.shape)}
            sock.send_multipart([OK, json.dumps(meta).encode(), vectors], copy=False)
    finally:
        sock.close()
        ctx.term()


if __name__ == "__main__":
    serve()
