"""Several models in one server (``-extra_model``): is each isolated from the others' load, and what
does one server for three models save over three servers?

    python benchmarks/multi_model.py            # 4 interleaved rounds of 8 s
    python benchmarks/multi_model.py --quick    # 2 rounds of 4 s

Models: the packaged all-MiniLM-L6-v2 (the default model, an embedder), a MiniLM-L6-sized
CrossEncoder reranker and a MiniLM-L6-sized 3-label classifier, both made here from the same
backbone with seeded random heads (`rerank.make_cross_encoder`; nothing is downloaded).

1. **Isolation.** One three-model server. A reranker client (``BertClient(model="rerank")``, one
   query and ``--documents`` documents a call, sequential) measures its latency, in rounds
   alternating between *alone* and *under flood*: ``--flood-clients`` processes sending the
   embedder bulk requests of ``--bulk`` sentences back to back. The p50 and p90 of each, and the
   embedder's sentences/s during the flood, all from the same run.
2. **Memory.** The resident memory of the server's whole process tree (coordinator, router,
   intake and HTTP processes, replicas) once ready and after one request to each model: RSS
   summed over the processes, and PSS (shared pages shared out, so a tree's sum counts each page
   once), for the three-model server against three one-model servers running at once (same
   flags).

Writes ``multi_model.md`` and ``multi_model.json`` into ``--out`` and the servers' output into its ``logs/``.
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
import textwrap
import time
from datetime import datetime
from pathlib import Path

from procs import Child, free_ports, http_ready, log_file
from proctree import tree
from rerank import make_cross_encoder

HERE = Path(__file__).resolve().parent
SERVER = [sys.executable, "-c", "from bert_serving.server.cli import main; main()"]  # bert-serving-start
CORPUS = HERE / "corpus.txt"
MINILM = "all-MiniLM-L6-v2"


def make_classifier(folder: Path, seed: int = 0) -> Path:
    """A MiniLM-L6-sized 3-label classifier (the packaged backbone, a seeded random head)."""
    import torch
    from transformers import BertForSequenceClassification
    from transformers import logging as hf_logging

    from bert_serving.model.loading import default_model_dir

    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    shape = default_model_dir()
    model = BertForSequenceClassification.from_pretrained(
        str(shape), num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (shape / name).is_file():
            (folder / name).write_bytes((shape / name).read_bytes())
    return folder


class Server:
    """``bert-serving-start`` in its own process, with HTTP (for /ready)."""

    def __init__(self, name: str, flags: list[str], logs: Path) -> None:
        self.port, self.port_out, self.http_port = free_ports(3)
        command = [*SERVER, f"-port={self.port}", f"-port_out={self.port_out}", f"-http_port={self.http_port}",
                   "-bind=127.0.0.1", *flags]
        self.child = Child(command, log_file(logs, name), http_ready(f"http://127.0.0.1:{self.http_port}/ready"))

    def memory_mb(self) -> dict[str, float]:
        """RSS and PSS of the whole process tree, in MB."""
        rss = pss = 0
        for pid in tree(self.child.pid):
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
            except OSError:
                pass
        return {"rss_mb": round(rss / 1024, 1), "pss_mb": round(pss / 1024, 1),
                "processes": len(tree(self.child.pid))}

    def close(self) -> None:
        self.child.close()


_FLOOD = textwrap.dedent("""
    import sys, time
    from bert_serving.client import BertClient
    port, port_out, bulk, until = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    texts = [line.strip() for line in open(sys.argv[5], encoding="utf-8") if line.strip()][:bulk]
    done = 0
    with BertClient(port=port, port_out=port_out, timeout=600_000, check_length=False) as bc:
        while time.time() < until:
            bc.encode(texts)
            done += len(texts)
    print(done)
""")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def isolation(server: Server, args, sentences: list[str]) -> dict:
    from bert_serving.client import BertClient

    rng = random.Random(0)
    calls = [(rng.choice(sentences), rng.sample(sentences, args.documents)) for _ in range(64)]
    latencies: dict[str, list[float]] = {"alone": [], "under flood": []}
    flood_rates: list[float] = []
    with BertClient(port=server.port, port_out=server.port_out, timeout=600_000, check_length=False,
                    model="rerank") as bc:
        for query, documents in calls[:4]:  # warm-up
            bc.rerank(query, documents)
        for round_ in range(args.rounds):
            for phase in ("alone", "under flood"):
                floods = []
                started = time.time()
                if phase == "under flood":
                    floods = [subprocess.Popen([sys.executable, "-c", _FLOOD, str(server.port), str(server.port_out),
                                                str(args.bulk), str(started + args.seconds + 1), str(CORPUS)],
                                               stdout=subprocess.PIPE, text=True) for _ in range(args.flood_clients)]
                    time.sleep(1.0)  # the flood under way (its clients connected, its queue full)
                deadline = time.time() + args.seconds
                n = 0
                while time.time() < deadline:
                    query, documents = calls[n % len(calls)]
                    began = time.perf_counter()
                    bc.rerank(query, documents)
                    latencies[phase].append(time.perf_counter() - began)
                    n += 1
                if floods:
                    embedded = sum(int(f.communicate()[0].strip() or 0) for f in floods)
                    flood_rates.append(embedded / (time.time() - started - 1.0))
                print(f"round {round_ + 1}/{args.rounds} {phase}: {n} rerank calls, p50 "
                      f"{1000 * statistics.median(latencies[phase][-n:]):.1f} ms"
                      + (f", embedder {flood_rates[-1]:.0f} sentences/s" if floods else ""), flush=True)
    return {
        "rerank_ms": {phase: {"p50": round(1000 * statistics.median(v), 2), "p90": round(1000 * percentile(v, 0.9), 2),
                              "calls": len(v)} for phase, v in latencies.items()},
        "flood_sentences_per_s": round(statistics.median(flood_rates), 1),
    }


def warm(server: Server, models: list[str | None]) -> None:
    """One request to each model (its replica's first batch allocates what it keeps)."""
    from bert_serving.client import BertClient

    with BertClient(port=server.port, port_out=server.port_out, timeout=600_000) as bc:
        for model in models:
            if model == "rerank":
                bc.rerank("a query", ["a document", "another one"], model=model)
            elif model == "classify":
                bc.predict(["a text"], model=model)
            else:
                bc.encode(["a sentence"] * 64, model=model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per phase of a round")
    parser.add_argument("--documents", type=int, default=20, help="documents per rerank call")
    parser.add_argument("--bulk", type=int, default=256, help="sentences per flood request")
    parser.add_argument("--flood-clients", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s")
    parser.add_argument("--server-flags", default="-cpu", help="flags of every server started")
    parser.add_argument("--out", type=Path,
                        default=HERE / "results" / f"{datetime.now():%Y-%m-%d}-multi-model")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 4.0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sentences = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    flags = args.server_flags.split()
    logs = args.out / "logs"
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        reranker = make_cross_encoder(Path(tmp) / "reranker", seed=1)
        classifier = make_classifier(Path(tmp) / "classifier", seed=2)
        extras = [f"-extra_model=rerank={reranker}", f"-extra_model=classify={classifier}"]

        server = Server("three-models", [*flags, *extras], logs)
        try:
            results["memory_three_model_server_ready"] = server.memory_mb()
            warm(server, [None, "rerank", "classify"])
            results["memory_three_model_server"] = server.memory_mb()
            results["isolation"] = isolation(server, args, sentences)
        finally:
            server.close()

        singles = []
        try:
            for name, model in (("embedder", []), ("reranker", [f"-model_dir={reranker}"]),
                                ("classifier", [f"-model_dir={classifier}"])):
                singles.append(Server(name, [*flags, *model], logs))
            for single in singles:
                warm(single, [None])
            each = [single.memory_mb() for single in singles]
            results["memory_three_one_model_servers"] = {
                "rss_mb": round(sum(m["rss_mb"] for m in each), 1), "pss_mb": round(sum(m["pss_mb"] for m in each), 1),
                "processes": sum(m["processes"] for m in each), "each": each}
        finally:
            for single in singles:
                single.close()

    iso, one, three = results["isolation"], results["memory_three_model_server"], \
        results["memory_three_one_model_servers"]
    lines = [
        f"# Several models in one server, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores. Server flags `{' '.join(flags)}`; "
        f"models: {MINILM} (default), a MiniLM-L6-sized CrossEncoder (`rerank`), a MiniLM-L6-sized 3-label "
        f"classifier (`classify`), one replica each.",
        "",
        f"## Isolation: the reranker's latency, {args.documents} documents a call, one sequential client",
        "",
        f"{args.rounds} interleaved rounds of {args.seconds:.0f} s per phase; the flood: {args.flood_clients} "
        f"processes sending the embedder {args.bulk} sentences a request, back to back.",
        "",
        "| reranker | p50 ms | p90 ms | calls |",
        "|---|---|---|---|",
        *(f"| {phase} | {v['p50']} | {v['p90']} | {v['calls']} |" for phase, v in iso["rerank_ms"].items()),
        "",
        f"The embedder meanwhile: {iso['flood_sentences_per_s']:.0f} sentences/s (median over the flood phases).",
        "",
        "## Memory of the process tree, after one request to each model",
        "",
        "| | processes | RSS MB (summed) | PSS MB |",
        "|---|---|---|---|",
        f"| one server, three models | {one['processes']} | {one['rss_mb']} | {one['pss_mb']} |",
        f"| three one-model servers | {three['processes']} | {three['rss_mb']} | {three['pss_mb']} |",
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multi_model.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "multi_model.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, **results},
                                                          indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
