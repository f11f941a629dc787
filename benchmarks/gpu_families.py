"""Every family on a CUDA GPU, in process: our vectors (float32, bfloat16, -fp16) against
sentence-transformers on the CPU, on the tiny test models of ``tests/families.py``.

    PYTHONPATH=src:. python benchmarks/gpu_families.py [DEVICE [FAMILY...]]     # DEVICE: cuda (default)

Needs torch with CUDA, transformers, tokenizers, sentence-transformers, safetensors (no pyzmq:
the server is not started). Prints one line per family and precision; exits non-zero when a
vector falls below its bound (float32: cosine 0.9999, bfloat16/float16: 0.99).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(device: str = "cuda", only: list[str] | None = None) -> int:
    from sentence_transformers import SentenceTransformer
    from tests.families import FAMILIES, build, sample_texts

    from bert_serving.model import Encoder

    if device == "cuda":
        assert torch.cuda.is_available(), "no CUDA device"
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    texts = sample_texts()
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, family in FAMILIES.items():
            if only and name not in only:
                continue
            folder = str(build(family, Path(tmp) / name))
            prompt = next(iter(family.prompts))
            want = SentenceTransformer(folder, device="cpu").encode(texts, prompt_name=prompt)
            for label, options, bound in (("float32", {}, 0.9999), ("bfloat16", {"dtype": "bfloat16"}, 0.99),
                                          ("fp16", {"fp16": True}, 0.99)):
                started = time.perf_counter()
                encoder = Encoder.load(folder, device=device, **options)
                got = encoder.encode(texts, prompt_name=prompt).astype(np.float32)
                cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
                ok = cosine.min() >= bound
                failed += not ok
                print(f"{name:12} {encoder.spec.config.path:8} {label:9} min cosine {cosine.min():.6f} "
                      f"{'ok' if ok else 'FAILED'} ({time.perf_counter() - started:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2], sys.argv[2:]))
