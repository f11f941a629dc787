"""Round trip of one batch: in process, through a local worker process, through a Ray actor on
the driver's node and on another node of a simulated 2-node cluster (docs/ray.md's numbers).

    .venv/bin/python benchmarks/ray_roundtrip.py --model tiny-bert
    .venv/bin/python benchmarks/ray_roundtrip.py --model minilm --calls 30
    .venv/bin/python benchmarks/ray_roundtrip.py --model tiny-bert --pooling NONE   # [B, T, D] results
    .venv/bin/python benchmarks/ray_roundtrip.py --model tiny-bert --pooling NONE --object-store  # not inlined

Each replica uses one torch thread. Times are medians (and p90) of sequential ``embed`` calls.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

TINY_BERT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "tiny-bert" / "google"
WORDS = "the quick brown fox jumps over a lazy dog while first do it then do it right and better".split()


def sentences(n: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=rng.integers(8, 20))) for _ in range(n)]


def timed(call, calls: int) -> tuple[float, float]:
    call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3, float(np.percentile(times, 90)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny-bert", "minilm"], default="tiny-bert")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--pooling", default=None, help="-pooling_strategy, e.g. NONE for large results")
    parser.add_argument("--object-store", action="store_true",
                        help="Ray's default 100 KB inline limit: larger results go through the object stores")
    options = parser.parse_args()

    if options.object_store:
        os.environ["RAY_max_direct_call_object_size"] = str(100 * 1024)
    import ray
    import torch
    import zmq
    from ray.cluster_utils import Cluster
    from ray.util.placement_group import placement_group

    from bert_serving.model.encoder import EncoderSettings, resolve
    from bert_serving.model.pooling import PoolingStrategy
    from bert_serving.server.replicas import ray_replicas
    from bert_serving.server.replicas.local import LocalReplica
    from bert_serving.server.replicas.pool import embed_once
    from bert_serving.server.replicas.runtime import load_encoder

    if options.object_store:
        ray_replicas._INLINE_BYTES = 100 * 1024
    torch.set_num_threads(1)
    settings = EncoderSettings(model_dir=str(TINY_BERT) if options.model == "tiny-bert" else None,
                               pooling_strategy=options.pooling and PoolingStrategy.from_string(options.pooling))
    spec = resolve(settings)
    encoder = load_encoder(spec, "cpu", threads=1, gpu_memory_fraction=0.5)
    ctx = zmq.Context()
    local = LocalReplica(settings, "cpu", index=0, threads=1)
    node = {"num_cpus": 1, "object_store_memory": 256 << 20}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        leave = ray_replicas._connect(cluster.address)
        group = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
        remote = [ray_replicas.RayReplica(spec, group, index=i) for i in range(2)]
        local.start()
        for replica in remote:
            replica.start()
        driver_node = ray.get_runtime_context().get_node_id()
        rows = {"in process": encoder.embed, "local worker process": lambda f: embed_once(local, f)}
        for replica in sorted(remote, key=lambda r: r.placement["node_id"] != driver_node):
            where = "driver's node" if replica.placement["node_id"] == driver_node else "other node"
            rows[f"Ray actor, {where}"] = lambda f, r=replica: embed_once(r, f)
        rng = np.random.default_rng(0)
        batches = {n: spec.tokenizer().encode(sentences(n, rng)) for n in options.sizes}
        out_kb = {n: encoder.embed(f).nbytes // 1024 for n, f in batches.items()}
        print(f"model {spec.source.name}, pooling {spec.pooling_strategy.name}, max_seq_len {spec.max_seq_len}, "
              f"results {'through the object store' if options.object_store else 'inline'}")
        print("| path | " + " | ".join(f"{n} texts ({out_kb[n]} KB out)" for n in options.sizes) + " |")
        print("|---|" + "---|" * len(options.sizes))
        for name, embed in rows.items():
            cells = [timed(lambda f=batches[n]: embed(f), options.calls) for n in options.sizes]
            print(f"| {name} | " + " | ".join(f"{m:.2f} / {p:.2f} ms" for m, p in cells) + " |", flush=True)
        for replica in remote:
            replica.stop()
        leave()
    finally:
        local.stop()
        ctx.destroy(linger=0)
        cluster.shutdown()


if __name__ == "__main__":
    main()
