"""The worker process's ``main``: one model replica answering batches.

`local.LocalReplica` starts it (`processes.child.spawn`) with its orders: ``{"settings",
"device", "threads", "gpu_memory_fraction", "fd", "log_level", "worker_id", "idle_spin_s"}``;
``ps`` shows it as ``bert-serving: replica <id> <device>``. The messages it then exchanges are
in `frames`.

After each batch it stays awake for ``idle_spin_s`` (``-idle_spin_ms``), polling for the next,
before it sleeps: waking a sleeping process and its cold core cost a sequential client about
half a millisecond a request on the 2-core VM we measure on (docs/benchmarks.md). Bounded, so
an idle server stays at no CPU.

It ignores the terminal's and the service manager's signals (SIGINT, SIGTERM, SIGHUP): Ctrl-C or
``systemctl stop`` reach the whole process group, and the server, which drains, decides when its
workers stop. It exits on STOP, and on its own as soon as the server process is gone (its end of
the socket pair closes with it).
"""

from __future__ import annotations

import json
import logging
import os
import time

from ..processes.channel import Channel
from ..processes.child import begin
from .frames import BATCH, READY, error_frames, ok_frames, settings_from_json, unpack
from .runtime import CpuThreads, HeapTrimmer, load_encoder

__all__ = ["serve"]

logger = logging.getLogger(__name__)

_PARENT_CHECK_S = 1.0


def _receive(channel: Channel, parent: int, spin_s: float = 0.0) -> list | None:
    """The next message, polled for without sleeping for ``spin_s`` first; None once the server
    process has gone away."""
    awake_until = time.perf_counter() + spin_s
    while not channel.poll(0) and time.perf_counter() < awake_until:
        pass
    while not channel.poll(_PARENT_CHECK_S):
        if os.getppid() != parent:
            return None
    try:
        return channel.receive()
    except EOFError:
        return None


def serve() -> None:
    parent = os.getppid()
    orders, channel = begin(lambda orders: f"replica {orders['worker_id']} {orders['device']}"
                            + (f" {orders['model']}" if orders.get("model") else ""))
    worker_id = orders["worker_id"]
    try:
        try:
            from ...model.encoder import resolve

            encoder = load_encoder(resolve(settings_from_json(orders["settings"])), orders["device"],
                                   threads=orders["threads"], gpu_memory_fraction=orders["gpu_memory_fraction"])
        except Exception as exc:
            logger.exception("worker %d failed to start", worker_id)
            channel.send(error_frames(-1, exc))
            return
        channel.send([READY, json.dumps({"pid": os.getpid(), "device": orders["device"]}).encode()])
        trimmer = HeapTrimmer()
        cpu_threads = CpuThreads.for_encoder(encoder, orders["device"], orders["threads"])
        spin_s = orders["idle_spin_s"]
        while (frames := _receive(channel, parent, spin_s)) is not None and frames[0] == BATCH:
            seq = json.loads(bytes(frames[1]))["seq"]
            try:
                features, kinds = unpack(frames[2:])
                if cpu_threads is not None:
                    cpu_threads.for_batch(features.num_tokens)
                vectors = encoder.embed(features) if kinds is None else encoder.embed_outputs(features, kinds)
            except Exception as exc:
                logger.exception("batch %d failed", seq)
                encoder.release_memory()
                channel.send(error_frames(seq, exc))
                continue
            channel.send(ok_frames(seq, vectors))
            del vectors, frames, features  # the batch's buffers, before a trim
            trimmer.maybe_trim()
    except (BrokenPipeError, ConnectionResetError):  # the server went away mid-answer
        pass
    finally:
        channel.close()


if __name__ == "__main__":
    serve()
