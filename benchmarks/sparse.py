"""Sparse and multi-vector throughput: bert-serving against the in-process references, in one
run, contenders of each model interleaved round by round so the machine's noise hits all alike.

    python benchmarks/sparse.py                 # 5 rounds of 512 sentences
    python benchmarks/sparse.py --quick         # 2 rounds of 128
    python benchmarks/sparse.py --http          # also through HTTP (/embed_sparse, /encode with outputs)

Models, MiniLM-shaped (6 layers, 384 wide) at random init over all-MiniLM-L6-v2's 30,522-word
vocabulary (`synthetic`); nothing is downloaded, their outputs are meaningless, their cost real:
- **SPLADE**: a masked-LM head (its bias lowered: a few hundred non-zero weights per text, as a
  trained SPLADE gives), saved as a SparseEncoder (6.x: fill-mask Transformer + SpladePooling);
  reference ``SparseEncoder.encode(batch_size=32)`` in process; bert-serving through
  ``BertClient.encode_sparse``;
- **BGE-M3-shaped**: the same backbone with ``colbert_linear.pt`` and ``sparse_linear.pt`` beside
  it (its [SEP] declared as the tokenizer's eos, as XLM-R's ``</s>`` is, so that both drop it from
  the lexical weights); reference ``BGEM3FlagModel.encode(batch_size=32)`` with all three outputs,
  in its own process (FlagEmbedding needs transformers 4: ``.venv/flag-embedding``, `make install`),
  timed there; bert-serving through ``BertClient.encode_outputs`` (dense, sparse, ColBERT in one
  request per chunk) and ``BertClient.encode`` (dense alone).
Sentences come from ``benchmarks/corpus.txt``, each cut at 128 tokens by both. Writes
``sparse.md`` and ``sparse.json`` into ``--out``, the servers' output into its ``logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
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
FLAG_EMBEDDING = Path(sys.prefix) / "flag-embedding"
MAX_LENGTH = 128


def build_splade(folder: Path) -> Path:
    from splade_memory import build

    return build(folder)


def build_m3(folder: Path) -> Path:
    """A MiniLM-shaped BERT with BGE-M3's two heads (random), as a sentence-transformers folder (CLS, Normalize)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from synthetic import SHAPES, vocab_dir
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(1)
    raw = folder.with_name(folder.name + "-hf")
    BertModel(BertConfig(vocab_size=30522, **SHAPES["minilm-shaped"])).save_pretrained(raw)
    BertTokenizerFast.from_pretrained(str(vocab_dir()), eos_token="[SEP]").save_pretrained(raw)
    transformer = Transformer(str(raw), max_seq_length=MAX_LENGTH)
    SentenceTransformer(modules=[transformer, Pooling(384, "cls"), Normalize()], device="cpu").save(str(folder))
    colbert, sparse = torch.nn.Linear(384, 384), torch.nn.Linear(384, 1)
    torch.save(colbert.state_dict(), folder / "colbert_linear.pt")
    torch.save(sparse.state_dict(), folder / "sparse_linear.pt")
    return folder


_FLAG = """
import json, sys, time
from FlagEmbedding import BGEM3FlagModel
model = BGEM3FlagModel(sys.argv[1], use_fp16=False, devices="cpu")
texts = json.loads(sys.stdin.readline())
kw = dict(batch_size=32, max_length=int(sys.argv[2]), return_dense=True, return_sparse=True, return_colbert_vecs=True)
model.encode(texts[:64], **kw)  # warm-up
print("ready", flush=True)
for line in sys.stdin:
    started = time.perf_counter()
    found = model.encode(texts, **kw)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "dense": found["dense_vecs"][:4].tolist()}), flush=True)
"""


class FlagReference:
    """BGEM3FlagModel in its own process: each `run` encodes the texts there and says how long it took."""

    def __init__(self, folder: Path, texts: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(FLAG_EMBEDDING), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        self.process = subprocess.Popen([sys.executable, "-c", _FLAG, str(folder), str(MAX_LENGTH)], env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.process.stdin.write(json.dumps(texts) + "\n")
        self.process.stdin.flush()
        while (line := self.process.stdout.readline()) and line.strip() != "ready":
            pass
        if not line:
            raise RuntimeError("BGEM3FlagModel did not start: is FlagEmbedding in .venv/flag-embedding (make install)?")
        self.last: dict = {}

    def run(self) -> float:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self.last = json.loads(self.process.stdout.readline())
        return self.last["seconds"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


class Server:
    def __init__(self, model: Path, http: bool, flags: list[str], logs: Path, name: str) -> None:
        port, port_out, http_port = free_ports(3)
        command = [*SERVER, f"-model_dir={model}", f"-port={port}", f"-port_out={port_out}", "-bind=127.0.0.1",
                   f"-max_seq_len={MAX_LENGTH}", *flags, *([f"-http_port={http_port}"] if http else [])]
        self.child = Child(command, log_file(logs, name), "ready to serve")
        from bert_serving.client import BertClient

        self.client = BertClient(port=port, port_out=port_out, timeout=600_000, check_length=False)
        self.http = None
        if http:
            import httpx

            self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=600)

    def post(self, path: str, body: dict) -> object:
        answer = self.http.post(path, json=body)
        answer.raise_for_status()
        return answer.json()

    def close(self) -> None:
        self.client.close()
        if self.http is not None:
            self.http.close()
        self.child.close()


def timed(contenders: dict, rounds: int, count: int, label: str) -> dict[str, list[float]]:
    """Each contender's seconds per round, rounds interleaved; a contender is a callable that runs
    a round and returns None, or its own measured seconds."""
    for run in contenders.values():
        run()  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            own = run()
            seconds[name].append(own if isinstance(own, float) else time.perf_counter() - started)
        print(f"{label} round {round_ + 1}/{rounds}: " + ", ".join(
            f"{name.split(',')[0]} {count / s[-1]:.0f}" for name, s in seconds.items()), flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--http", action="store_true", help="also measure the HTTP routes")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 128 sentences")
    parser.add_argument("--server-flags", default="", help="extra bert-serving-start flags")
    parser.add_argument("--out", type=Path, default=HERE / "results" / datetime.now().strftime("%Y-%m-%d"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.sentences = 2, 128
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(HERE))
    sentences = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = random.Random(0).sample(sentences, args.sentences)
    flags = args.server_flags.split() + ["-cpu"]
    results: dict[str, dict[str, list[float]]] = {}

    with tempfile.TemporaryDirectory() as tmp:
        import torch
        from sentence_transformers import SparseEncoder

        splade_dir = build_splade(Path(tmp) / "splade-minilm")
        local = SparseEncoder(str(splade_dir), device="cpu")
        local.max_seq_length = MAX_LENGTH
        server = Server(splade_dir, args.http, flags, args.out / "logs", "splade-server")
        try:
            contenders = {
                "SparseEncoder.encode(batch_size=32), in process":
                    lambda: local.encode(texts, batch_size=32, convert_to_tensor=True),
                "bert-serving, BertClient.encode_sparse (ZeroMQ)": lambda: server.client.encode_sparse(texts),
            }
            if args.http:
                contenders["bert-serving, POST /embed_sparse (HTTP)"] = lambda: [
                    server.post("/embed_sparse", {"inputs": texts[i : i + 32]}) for i in range(0, len(texts), 32)]
            results["SPLADE"] = timed(contenders, args.rounds, len(texts), "SPLADE")
            nonzero = float(np.diff(server.client.encode_sparse(texts).offsets).mean())
        finally:
            server.close()
        local = None  # its memory, before the next model

        m3_dir = build_m3(Path(tmp) / "m3-minilm")
        reference = FlagReference(m3_dir, texts)
        server = Server(m3_dir, args.http, flags, args.out / "logs", "m3-server")
        try:
            contenders = {
                "BGEM3FlagModel.encode(batch_size=32, dense + sparse + colbert), in process": reference.run,
                "bert-serving, BertClient.encode_outputs (dense + sparse + colbert, ZeroMQ)":
                    lambda: server.client.encode_outputs(texts),
                "bert-serving, BertClient.encode (dense, ZeroMQ)": lambda: server.client.encode(texts),
            }
            if args.http:
                contenders["bert-serving, POST /encode with outputs (HTTP)"] = lambda: [
                    server.post("/encode", {"texts": texts[i : i + 32], "outputs": ["dense", "sparse", "colbert"]})
                    for i in range(0, len(texts), 32)]
            results["BGE-M3-shaped"] = timed(contenders, args.rounds, len(texts), "BGE-M3")
            ours = server.client.encode(texts[:4])
            worst_dense = float(np.abs(ours - np.array(reference.last["dense"])).max())
        finally:
            server.close()
            reference.close()

    rates = {model: {name: len(texts) / statistics.median(s) for name, s in found.items()}
             for model, found in results.items()}
    lines = [
        f"# Sparse and multi-vector outputs, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}. "
        f"MiniLM-shaped models (6 layers, 384 wide, 30,522-word vocabulary), {len(texts)} sentences per round cut at "
        f"{MAX_LENGTH} tokens, median of {args.rounds} interleaved rounds. Server flags: `{' '.join(flags)}`. "
        f"SPLADE: {nonzero:.0f} non-zero weights per text on average. "
        f"BGE-M3 dense vectors, ours against FlagEmbedding's: max abs difference {worst_dense:.1e}.",
        "",
        "| model | contender | sentences/s | vs in process |",
        "|---|---|---|---|",
    ]
    for model, found in rates.items():
        base = next(iter(found.values()))
        lines += [f"| {model} | {name} | {rate:.0f} | {rate / base:.2f}x |" for name, rate in found.items()]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sparse.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "sparse.json").write_text(json.dumps({"sentences_per_round": len(texts), "rounds": args.rounds,
                                                      "seconds": results, "sentences_per_second": rates},
                                                     indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
