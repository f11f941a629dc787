"""A replica's memory under batches of mixed shapes: RSS of one process running `Encoder.encode`
on random mixes of corpus sentences (1-300 texts, some six sentences long), as a worker sees them.

    python benchmarks/worker_memory.py --minutes 4                 # as a worker runs: trimmed every 10 s
    python benchmarks/worker_memory.py --minutes 4 --trim-every 0  # never trimmed (glibc's own behaviour)
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/worker_memory.py --trim-every 0   # glibc tunables

Prints the RSS every 20 s and, at the end, the first and last sample and the trims' cost.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from bert_serving.model import Encoder
from bert_serving.model.loading import default_model_dir
from bert_serving.server.replicas.runtime import HeapTrimmer

CORPUS = Path(__file__).resolve().parent / "corpus.txt"


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--trim-every", type=float, default=10.0, help="seconds between trims; 0: never")
    parser.add_argument("--model-dir", default=None, help="default: the packaged all-MiniLM-L6-v2")
    args = parser.parse_args()
    corpus = CORPUS.read_text(encoding="utf-8").splitlines()
    encoder = Encoder.load(args.model_dir or str(default_model_dir()), device="cpu")
    trimmer = HeapTrimmer(every_s=args.trim_every) if args.trim_every > 0 else None
    rng, trims, samples = random.Random(0), [], []
    start = last = time.monotonic()
    calls = 0
    while time.monotonic() - start < args.minutes * 60:
        texts = rng.sample(corpus, rng.choice([1, 2, 3, 8, 30, 100, 300]))
        if rng.random() < 0.3:
            texts = [" ".join(rng.sample(corpus, 6)) for _ in texts]
        encoder.encode(texts)
        calls += 1
        if trimmer is not None:
            began = time.perf_counter()
            if trimmer.maybe_trim():
                trims.append((time.perf_counter() - began) * 1000)
        if time.monotonic() - last >= 20 or not samples:
            last = time.monotonic()
            samples.append(rss_mb())
            print(f"{last - start:5.0f} s  {calls} calls  RSS {samples[-1]:.0f} MB", flush=True)
    samples.append(rss_mb())
    cost = f"; {len(trims)} trims, median {sorted(trims)[len(trims) // 2]:.1f} ms" if trims else ""
    print(f"RSS {samples[0]:.0f} -> {samples[-1]:.0f} MB (max {max(samples):.0f}) over {calls} calls{cost}")


if __name__ == "__main__":
    main()
