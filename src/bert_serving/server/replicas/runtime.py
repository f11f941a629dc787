"""What every kind of replica (a local worker process, a Ray actor) runs at its start."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ...model.encoder import Encoder, ModelSpec

__all__ = ["HeapTrimmer", "load_encoder"]

_TRIM_EVERY_S = 10.0


def load_encoder(spec: ModelSpec, device: str, *, threads: int, gpu_memory_fraction: float) -> Encoder:
    """A replica's model: torch limited to ``threads`` (and its share of GPU memory), loaded on
    ``device`` and warmed up by one pass. What every kind of replica runs at its start."""
    import torch

    from ...model.encoder import Encoder

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(gpu_memory_fraction, torch.device(device))
    encoder = Encoder(spec, device=device)
    encoder.embed(encoder.tokenizer.encode(["warm up the model"] * 2))
    return encoder


class HeapTrimmer:
    """Gives the C heap's free pages back to the system every ``every_s`` seconds at most.

    Batches of ever new shapes (packed sequences) leave glibc's heap fragmented: the 10-minute
    soak's two workers grew from 0.69 to 1.11 GB; `benchmarks/worker_memory.py` shows one process
    at 350 MB between batches when trimmed and 570-790 MB when not (docs/operations.md). A trim
    takes milliseconds, so it runs at most every ten seconds, after an answer has gone out. A
    no-op where the C library has no ``malloc_trim`` (musl, macOS)."""

    def __init__(self, every_s: float = _TRIM_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._trim = _malloc_trim()
        self._every_s, self._clock = every_s, clock
        self._last = clock()

    def maybe_trim(self) -> bool:
        """Trim if the last trim is ``every_s`` ago; True if it did."""
        if self._trim is None or self._clock() - self._last < self._every_s:
            return False
        self._trim(0)
        self._last = self._clock()
        return True


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None
