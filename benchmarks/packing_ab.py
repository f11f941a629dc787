"""Packed against padded execution of the same batches, in process, to place
`bert_serving.model.architectures.bert.PADDED_UP_TO` (the padding ratio below which a batch runs padded).

    python benchmarks/packing_ab.py

Batches of the default model's typical size (~1,000 tokens) are drawn from the corpus with
growing length spread; each is run both ways, interleaved, three rounds.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bert_serving.model import Encoder
from bert_serving.model.architectures import bert
from bert_serving.model.packing import Packing


def main() -> None:
    torch.set_num_threads(2)
    texts = (Path(__file__).with_name("corpus.txt")).read_text(encoding="utf-8").splitlines()
    encoder = Encoder.load(device="cpu")
    features = encoder.tokenizer.encode(texts)
    order = np.argsort(features.lengths, kind="stable")
    rng = np.random.default_rng(0)
    print("spread  padding-ratio  packed(sent/s)  padded(sent/s)")
    for spread in (1, 2, 4, 8, 16, 32, 64):  # rows drawn from a window of spread x batch size
        batches = []
        for _ in range(24):
            start = rng.integers(0, len(order) - 48 * spread)
            rows = rng.choice(order[start : start + 48 * spread], size=48, replace=False)
            batches.append(features.take(rows))
        ratio = statistics.mean(Packing.from_lengths(torch.from_numpy(b.lengths)).padding_ratio for b in batches)
        speed = {"packed": [], "padded": []}
        for _ in range(3):
            for mode, limit in (("packed", 0.0), ("padded", float("inf"))):
                bert.PADDED_UP_TO = limit
                started = time.perf_counter()
                for batch in batches:
                    encoder.embed(batch)
                speed[mode].append(sum(len(b) for b in batches) / (time.perf_counter() - started))
        print(f"{spread:6d}  {ratio:13.2f}  {statistics.median(speed['packed']):14.0f}  "
              f"{statistics.median(speed['padded']):14.0f}", flush=True)


if __name__ == "__main__":
    main()
