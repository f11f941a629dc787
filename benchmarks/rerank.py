"""Reranking throughput: bert-serving against sentence-transformers' ``CrossEncoder.predict`` in
process, on the same cross-encoder and the same (query, document) pairs, in one run, contenders
interleaved round by round so the machine's noise hits all alike.

    python benchmarks/rerank.py                 # 5 rounds, 16 queries x 100 documents
    python benchmarks/rerank.py --quick         # 2 rounds, fewer pairs
    python benchmarks/rerank.py --http          # also through HTTP /rerank

The model: a cross-encoder the size of ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (6 layers, 384
wide), made here from the packaged all-MiniLM-L6-v2 backbone with a one-output head
(``BertForSequenceClassification``, seeded) and saved as sentence-transformers saves a
CrossEncoder; nothing is downloaded. ``--shape DIR`` takes the architecture and tokenizer from a
folder without weights instead (random weights: the same cost). Its scores are meaningless, its
cost is a real reranker's. Queries and documents come from ``benchmarks/corpus.txt``.

Contenders, each timed over the same pairs:
- ``CrossEncoder.predict(pairs, batch_size=32)`` in this process, one call per query with its
  documents (the baseline: the same calls as the server gets), and once more with all of a
  round's pairs in one call (sorted by length across queries: less padding);
- the server (``bert-serving-start``, its own process) through ``BertClient.rerank``, one call
  per query with its documents, sequentially;
- with ``--http``: the same calls as ``POST /rerank``.
Writes ``rerank.md`` and ``rerank.json`` into ``--out``, and the server's output into its ``logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from procs import Child, free_ports, log_file

HERE = Path(__file__).resolve().parent
SERVER = [sys.executable, "-c", "from bert_serving.server.cli import main; main()"]  # bert-serving-start
CORPUS = HERE / "corpus.txt"


def make_cross_encoder(folder: Path, shape: Path | None = None, seed: int = 0) -> Path:
    """A MiniLM-L6-sized CrossEncoder from the packaged all-MiniLM-L6-v2 backbone (or, from
    ``shape``, a folder with its config and tokenizer, random weights)."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized: classifier.*" is the point here
    torch.manual_seed(seed)
    if shape is None:
        from bert_serving.model.loading import default_model_dir

        shape = default_model_dir()
    raw = folder.with_name(folder.name + "-hf")
    if (shape / "model.safetensors").is_file():
        model = BertForSequenceClassification.from_pretrained(str(shape), num_labels=1)
    else:
        model = BertForSequenceClassification(BertConfig.from_pretrained(str(shape), num_labels=1))
    model.save_pretrained(raw)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (shape / name).is_file():
            (raw / name).write_bytes((shape / name).read_bytes())
    CrossEncoder(str(raw), device="cpu").save(str(folder))
    return folder


class Server:
    def __init__(self, model: Path, http: bool, flags: list[str], logs: Path) -> None:
        self.port, self.port_out, self.http_port = free_ports(3)
        command = [*SERVER, f"-model_dir={model}", f"-port={self.port}",
                   f"-port_out={self.port_out}", "-bind=127.0.0.1", *flags]
        if http:
            command.append(f"-http_port={self.http_port}")
        self.child = Child(command, log_file(logs, "server"), "ready to serve")
        from bert_serving.client import BertClient

        self.client = BertClient(port=self.port, port_out=self.port_out, timeout=600_000, check_length=False)
        self.http = None
        if http:
            import httpx

            self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=600)

    def rerank_zmq(self, query: str, documents: list[str]) -> np.ndarray:
        results = self.client.rerank(query, documents)
        scores = np.empty(len(documents))
        for r in results:
            scores[r.index] = r.relevance_score
        return scores

    def rerank_http(self, query: str, documents: list[str]) -> np.ndarray:
        answer = self.http.post("/rerank", json={"query": query, "texts": documents})
        answer.raise_for_status()
        scores = np.empty(len(documents))
        for r in answer.json():
            scores[r["index"]] = r["score"]
        return scores

    def close(self) -> None:
        self.client.close()
        if self.http is not None:
            self.http.close()
        self.child.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--documents", type=int, default=100, help="documents per query")
    parser.add_argument("--http", action="store_true", help="also measure HTTP /rerank")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 8 queries x 50 documents")
    parser.add_argument("--server-flags", default="", help="extra bert-serving-start flags")
    parser.add_argument("--shape", type=Path, default=None,
                        help="config + tokenizer of the model to build (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: for both contenders")
    parser.add_argument("--out", type=Path, default=HERE / "results" / datetime.now().strftime("%Y-%m-%d"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.queries, args.documents = 2, 8, 50
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    sentences = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(0)
    work = [(rng.choice(sentences), rng.sample(sentences, args.documents)) for _ in range(args.queries)]
    pairs = [(q, d) for q, documents in work for d in documents]

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_cross_encoder(Path(tmp) / "minilm-l6-cross-encoder", args.shape)
        import torch
        from sentence_transformers import CrossEncoder

        local = CrossEncoder(str(model_dir), device=args.device)
        flags = args.server_flags.split() + (["-cpu"] if args.device == "cpu" else [])
        server = Server(model_dir, args.http, flags, args.out / "logs")
        try:
            contenders = {
                "CrossEncoder.predict(batch_size=32), in process":
                    lambda: np.concatenate([local.predict([(q, x) for x in d], batch_size=32, show_progress_bar=False)
                                            for q, d in work]),
                "CrossEncoder.predict(batch_size=32), in process, all pairs in one call":
                    lambda: local.predict(pairs, batch_size=32, show_progress_bar=False),
                "bert-serving, BertClient.rerank (ZeroMQ)":
                    lambda: np.concatenate([server.rerank_zmq(q, d) for q, d in work]),
            }
            if args.http:
                contenders["bert-serving, POST /rerank (HTTP)"] = \
                    lambda: np.concatenate([server.rerank_http(q, d) for q, d in work])
            answers = {name: run() for name, run in contenders.items()}  # warm-up, and the answers agree
            reference = answers["CrossEncoder.predict(batch_size=32), in process"]
            worst = {name: float(np.abs(a - reference).max()) for name, a in answers.items()}
            seconds: dict[str, list[float]] = {name: [] for name in contenders}
            for round_ in range(args.rounds):
                for name, run in contenders.items():
                    started = time.perf_counter()
                    run()
                    seconds[name].append(time.perf_counter() - started)
                print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
                    f"{name.split(',')[0]} {len(pairs) / s[-1]:.0f}" for name, s in seconds.items()), flush=True)
        finally:
            server.close()

    rates = {name: len(pairs) / statistics.median(s) for name, s in seconds.items()}
    base = rates["CrossEncoder.predict(batch_size=32), in process"]
    lines = [
        f"# Reranking, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads here), device {args.device}"
        f"{' (' + torch.cuda.get_device_name() + ')' if args.device.startswith('cuda') else ''}. Model: MiniLM-L6 cross-encoder (6 layers, 384 wide). "
        f"{args.queries} queries x {args.documents} documents = {len(pairs)} pairs per round, median of "
        f"{args.rounds} interleaved rounds. Server flags: `{' '.join(flags) or '(defaults)'}`.",
        "",
        "| contender | pairs/s | vs in process | max abs score difference |",
        "|---|---|---|---|",
        *(f"| {name} | {rate:.0f} | {rate / base:.2f}x | {worst[name]:.1e} |" for name, rate in rates.items()),
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rerank.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "rerank.json").write_text(json.dumps({"pairs_per_round": len(pairs), "rounds": args.rounds,
                                                      "seconds": seconds, "pairs_per_second": rates,
                                                      "max_abs_difference": worst}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
