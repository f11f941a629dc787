"""What every kind of replica (a local worker process, a Ray actor) runs at its start; and
`freeze_heap`, which ``bert-serving-start``'s process runs too (not a server embedded in a
program of its own: that program's heap is not ours to freeze)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ...model.encoder import Encoder, ModelSpec

__all__ = ["OPENMP_ENV", "CpuThreads", "HeapTrimmer", "freeze_heap", "load_encoder"]

# OpenMP threads that spin while they wait steal the cores the server's own threads need (sockets,
# tokenization): measured on 2 cores, workers spinning as long as OpenMP's default cost 10-40x the
# CPU per small request (benchmarks/overhead.py); sleeping at once (OMP_WAIT_POLICY=PASSIVE) makes
# every operation of a two-thread batch wake the other thread. A replica's threads spin briefly
# between operations (10,000 spins, tens of microseconds), then sleep: against PASSIVE, 2 cores,
# 3 alternating rounds, negligible model bulk 18,348-20,846 -> 19,213-23,214 sentences/s, MiniLM
# 32 one-sentence clients 218-231 -> 239-243 requests/s, CPU per request unchanged (100,000 spins:
# worse than either). Intel's OpenMP (KMP_BLOCKTIME) sleeps at once. Set when a replica's process
# starts (local workers: unless the user set them; Ray actors: their runtime_env).
OPENMP_ENV = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "0"}

_TRIM_EVERY_S = 10.0
# Below this much work per layer a batch runs on one thread: each operation hands work to the
# other OpenMP threads, which pays only when the operation is big enough, so what counts is the
# work of one layer, not of the model. Measured on 2 cores with the workers' brief spin
# (`OPENMP_ENV`), one thread against two: the 1-layer, 32-wide negligible model 25 tokens
# 1.00 against 1.28 ms, 309 tokens (7.6 MFLOP a layer) 1.89 against 1.84, 1,284 tokens 2.56
# against 2.04; MiniLM (hidden 384) 23 tokens (81 MFLOP a layer) 12.9 against 9.0 ms. (With
# threads that sleep at once, PASSIVE, two threads paid only from about 130 MFLOP a layer.) In a
# server the second thread also competes with the server's own threads for the cores: at 8 MFLOP
# the negligible model's 32 one-sentence clients lost a quarter of their rate (batches of ~10 texts
# went to two threads), so the line is at 32: those stay on one thread, bulk batches and a
# MiniLM sentence get two.
_ONE_THREAD_FLOPS_PER_LAYER = 32e6


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
    freeze_heap()
    return encoder


def freeze_heap() -> int:
    """Put every object alive now (modules, model, tokenizer, web app: ~210,000 in the server
    process) out of the cyclic garbage collector's sight, once loaded; how many that was.

    Each of Python's full collections walked them all with the GIL held: 110 ms, every second or
    two under 32 HTTP clients (9 in 12 seconds, 1.0 s in all; after the freeze: 14 in 9 ms), a
    stall of every thread of the process and a tenth of its time. Objects made later are
    collected as before; the frozen ones live as long as the process anyway."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


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


class CpuThreads:
    """How many threads torch uses for each batch on a CPU: all of the replica's ``threads``,
    except for batches too small to pay for waking them (the workers' OpenMP threads sleep
    between parallel regions, so that they leave the cores to the server while idle)."""

    def __init__(self, threads: int, hidden_size: int) -> None:
        self.threads = max(1, threads)
        self._layer_flops_per_token = 24 * hidden_size**2  # QKV, output and a 4x FFN, 2 FLOP a MAC
        self._current = self.threads

    def for_batch(self, num_tokens: int) -> int:
        """Set torch's thread count for a batch of ``num_tokens`` tokens; the count set."""
        wanted = 1 if num_tokens * self._layer_flops_per_token < _ONE_THREAD_FLOPS_PER_LAYER else self.threads
        if wanted != self._current:
            import torch

            torch.set_num_threads(wanted)
            self._current = wanted
        return wanted

    @classmethod
    def for_encoder(cls, encoder: Encoder, device: str, threads: int) -> CpuThreads | None:
        """The policy for ``encoder`` on ``device``; None off the CPU."""
        if not device.startswith("cpu"):
            return None
        config = encoder.spec.config
        return cls(threads, getattr(config, "hidden_size", 768))
