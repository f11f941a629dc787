"""Throughput and latency of bert-serving against in-process sentence-transformers, on this
machine, in one run, contenders interleaved round by round so machine noise hits all alike.

    python benchmarks/bench.py                    # the full run (a few minutes), default model
    python benchmarks/bench.py --quick            # fewer rounds and sizes
    python benchmarks/bench.py --server-flags "-max_batch_tokens 2048"   # try a setting

Measured (sentences from benchmarks/corpus.txt, 5-70 word pieces, mean ~20 tokens):
- bulk: one client encodes N sentences in one call (the server) / ``encode(batch_size=32)``
  in process (sentence-transformers);
- small requests: 32 concurrent clients, each sending 1 sentence per request, one request
  in flight each; aggregate sentences/s;
- single sentence: sequential 1-sentence round trips, p50 and p99;
- sweeps (as bert-as-service's README): throughput against max_seq_len, client batch size and
  number of clients.
Writes ``results.md``, ``results.json`` and PNG plots into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import zmq
from procs import free_ports

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 120  # a contender silent this long has hung: it is reported so, and measured no further
CORPUS = HERE / "corpus.txt"
BIN = Path(sys.executable).parent


# --- contenders ---------------------------------------------------------------------------------


class Server:
    """``bert-serving-start`` as a user runs it, in its own process."""

    def __init__(self, *flags: str) -> None:
        sockets = [socket.socket() for _ in range(2)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        self.port, self.port_out = (s.getsockname()[1] for s in sockets)
        for s in sockets:
            s.close()
        self.flags = flags
        self.proc = subprocess.Popen(
            [str(BIN / "bert-serving-start"), f"-port={self.port}", f"-port_out={self.port_out}", "-bind=127.0.0.1",
             *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for line in self.proc.stdout:
            if "ready to serve" in line:
                break
        else:
            raise RuntimeError(f"server did not start: {' '.join(flags)}")
        from bert_serving.client import BertClient

        self.client = BertClient(port=self.port, port_out=self.port_out, timeout=600_000, check_length=False)
        self.client.encode(["warm up"] * 64)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.client.encode(texts)

    def status(self) -> dict:
        return self.client.server_status

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(60)


class HttpEmbedder:
    """An OpenAI-style embeddings route: ours (``-http_port``) or a peer's (infinity-emb)."""

    def __init__(self, url: str, model: str = "any", chunk: int = 1024) -> None:
        import httpx

        self.url, self.model, self.chunk = url, model, chunk
        self.http = httpx.Client(timeout=TIMEOUT_S)
        self.failure: str | None = None  # set when it stopped answering

    def encode(self, texts: list[str]) -> list:
        import asyncio

        import httpx

        async def run() -> list:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:  # chunks in flight together, as BertClient does
                replies = await asyncio.gather(*(
                    client.post(self.url, json={"input": texts[i : i + self.chunk], "model": self.model})
                    for i in range(0, len(texts), self.chunk)))
            return [d["embedding"] for r in replies for d in r.raise_for_status().json()["data"]]

        if len(texts) == 1:
            return self.http.post(self.url, json={"input": texts, "model": self.model}).raise_for_status().json()
        return asyncio.run(run())

    def many_clients(self, texts: list[str], clients: int) -> float:
        """``clients`` concurrent callers, one 1-sentence request in flight each."""
        import asyncio

        import httpx

        async def run() -> None:
            queue = list(texts)
            async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=httpx.Limits(max_connections=clients)) as client:
                async def caller() -> None:
                    while queue:
                        (await client.post(self.url, json={"input": [queue.pop()], "model": self.model})
                         ).raise_for_status()

                await asyncio.gather(*(caller() for _ in range(clients)))

        started = time.perf_counter()
        asyncio.run(run())
        return len(texts) / (time.perf_counter() - started)

    def close(self) -> None:
        self.http.close()


class Infinity(HttpEmbedder):
    """michaelfeil/infinity (``infinity_emb v2``) serving the same model, from its own venv
    (``benchmarks/setup_infinity.sh`` makes one)."""

    def __init__(self, venv: Path) -> None:
        from bert_serving.model.loading import default_model_dir

        port = free_ports(1)[0]
        model = str(default_model_dir())
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        self.proc = subprocess.Popen(
            [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model, "--port", str(port), "--host",
             "127.0.0.1", "--engine", "torch", "--device", "cpu", "--batch-size", "32"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        for line in self.proc.stdout:
            if "Uvicorn running" in line:
                break
        else:
            raise RuntimeError("infinity did not start")
        super().__init__(f"http://127.0.0.1:{port}/embeddings", model)
        self.encode(["warm up"] * 64)

    def close(self) -> None:
        super().close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:  # a wedged server may not even stop
            self.proc.kill()
            self.proc.wait(20)


class InProcess:
    """sentence-transformers' ``encode``, the library users would otherwise call."""

    def __init__(self, max_seq_length: int | None = None, model_dir: str | None = None) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        from bert_serving.model.loading import default_model_dir

        torch.set_num_threads(os.cpu_count() or 1)
        self.model = SentenceTransformer(model_dir or str(default_model_dir()), device="cpu")
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.model.encode(["warm up"] * 64)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size)


# --- measurements -------------------------------------------------------------------------------


def throughput(encode, texts: list[str]) -> float:
    started = time.perf_counter()
    encode(texts)
    return len(texts) / (time.perf_counter() - started)


def latencies_ms(encode, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        started = time.perf_counter()
        encode([text])
        out.append((time.perf_counter() - started) * 1000)
    return out


def many_clients(server: Server, texts: list[str], clients: int, per_request: int = 1) -> float:
    """``clients`` simulated clients (distinct identities, as many BertClients would be), one
    request in flight each, until ``texts`` are all sent; aggregate sentences/s. One thread
    drives them all so that the load generator takes little CPU from the server."""
    from bert_serving import protocol

    ctx = zmq.Context()
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    identities = [f"bench-{i:04d}-{os.getpid()}".encode() for i in range(clients)]
    for identity in identities:
        sub.setsockopt(zmq.SUBSCRIBE, identity)
    sub.connect(f"tcp://127.0.0.1:{server.port_out}")
    push.connect(f"tcp://127.0.0.1:{server.port}")
    time.sleep(0.3)  # let the subscriptions reach the server
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    next_chunk, done, req_id = 0, 0, 0
    started = time.perf_counter()
    for identity in identities:
        if next_chunk < len(chunks):
            req_id += 1
            push.send_multipart(protocol.request_frames(identity, protocol.texts_payload(chunks[next_chunk]), req_id,
                                                        len(chunks[next_chunk])))
            next_chunk += 1
    sub.setsockopt(zmq.RCVTIMEO, 120_000)
    while done < len(chunks):
        frames = sub.recv_multipart()
        reply = protocol.parse_reply(frames)
        if reply.error is not None:
            raise reply.error
        done += 1
        if next_chunk < len(chunks):
            req_id += 1
            push.send_multipart(protocol.request_frames(frames[0], protocol.texts_payload(chunks[next_chunk]), req_id,
                                                        len(chunks[next_chunk])))
            next_chunk += 1
    seconds = time.perf_counter() - started
    push.close()
    sub.close()
    ctx.term()
    return len(texts) / seconds


def measure(peer: HttpEmbedder, step) -> None:
    """Run one measurement of a peer, unless it has already failed; note a failure."""
    if peer.failure is None:
        try:
            step()
        except Exception as exc:  # a peer that hangs or errs is reported, not fatal to the run
            peer.failure = f"{type(exc).__name__} after {TIMEOUT_S} s" if "Timeout" in type(exc).__name__ else repr(exc)
            print(f"a contender failed: {peer.failure}", flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


# --- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sweep points")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--bulk", type=int, default=2000, help="sentences per bulk measurement")
    parser.add_argument("--server-flags", default="", help="extra bert-serving-start flags for every server")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="also measure a server started with FLAGS, e.g. bf16='-dtype bfloat16'")
    parser.add_argument("--infinity", type=Path, metavar="VENV",
                        help="also measure infinity-emb from this venv (benchmarks/setup_infinity.sh makes one)")
    parser.add_argument("--http", action="store_true", help="also measure our server over HTTP (/v1/embeddings)")
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / datetime.now().strftime("%Y-%m-%d-%H%M"))
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 4)
    corpus = CORPUS.read_text(encoding="utf-8").splitlines()
    bulk = corpus[: args.bulk]
    singles = corpus[-(100 if args.quick else 300):]
    small = corpus[args.bulk : args.bulk + (500 if args.quick else 1000)]
    extra = shlex.split(args.server_flags)
    args.out.mkdir(parents=True, exist_ok=True)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}")
    variants = {"server": []}
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        variants[f"server {name}"] = shlex.split(flags)
    http_port = free_ports(1)[0]
    servers = {name: Server(*extra, *flags, *([f"-http_port={http_port}"] if args.http and name == "server" else []))
               for name, flags in variants.items()}
    peers: dict[str, HttpEmbedder] = {}
    if args.http:
        peers["server over HTTP"] = HttpEmbedder(f"http://127.0.0.1:{http_port}/v1/embeddings")
    if args.infinity:
        peers["infinity-emb"] = Infinity(args.infinity)
    inproc = InProcess()
    results: dict[str, list] = {"st_bulk": [], "st_single": []}
    for name in [*servers, *peers]:
        results.update({f"{name}|bulk": [], f"{name}|small": [], f"{name}|single": []})
    for rnd in range(rounds):  # interleaved: each round measures every contender once
        results["st_bulk"].append(throughput(inproc.encode, bulk))
        for name, server in servers.items():
            results[f"{name}|bulk"].append(throughput(server.encode, bulk))
            results[f"{name}|small"].append(many_clients(server, small, clients=32))
        for name, peer in peers.items():
            measure(peer, lambda: results[f"{name}|bulk"].append(throughput(peer.encode, bulk)))
            measure(peer, lambda: results[f"{name}|small"].append(peer.many_clients(small, clients=32)))
        results["st_single"].append(latencies_ms(inproc.encode, singles))
        for name, server in servers.items():
            results[f"{name}|single"].append(latencies_ms(server.encode, singles))
        for name, peer in peers.items():
            measure(peer, lambda: results[f"{name}|single"].append(latencies_ms(peer.encode, singles)))
        line = "; ".join(f"{name}: bulk {results[f'{name}|bulk'][-1]:.0f}, 32x1 {results[f'{name}|small'][-1]:.0f}, "
                         f"p50 {statistics.median(results[f'{name}|single'][-1]):.2f} ms"
                         for name in [*servers, *peers] if results[f"{name}|single"])
        print(f"round {rnd + 1}/{rounds}: in-process bulk {results['st_bulk'][-1]:.0f}, p50 "
              f"{statistics.median(results['st_single'][-1]):.2f} ms; {line}", flush=True)
    statuses = {name: server.status() for name, server in servers.items()}
    for contender in [*servers.values(), *peers.values()]:
        contender.close()

    st_bulk = statistics.median(results["st_bulk"])
    st_single = [x for run in results["st_single"] for x in run]
    summary = {"in-process": {"bulk": st_bulk, "single_p50_ms": pct(st_single, 50), "single_p99_ms": pct(st_single, 99)}}
    for name in [*servers, *peers]:
        if not results[f"{name}|single"]:
            summary[name] = {"failed": peers[name].failure}
            continue
        single = [x for run in results[f"{name}|single"] for x in run]
        bulk_rate = statistics.median(results[f"{name}|bulk"])
        summary[name] = {
            "bulk": bulk_rate,
            "small_32_clients": statistics.median(results[f"{name}|small"]),
            "single_p50_ms": pct(single, 50),
            "single_p99_ms": pct(single, 99),
            "bulk_ratio_vs_in_process": bulk_rate / st_bulk,
            "small_ratio_vs_bulk": statistics.median(results[f"{name}|small"]) / bulk_rate,
            "avg_batch_size": statuses[name]["statistic"]["avg_batch_size"] if name in statuses else None,
            "failure": peers[name].failure if name in peers else None,
            "flags": " ".join([*extra, *variants[name]]) or "(defaults)" if name in variants else
            ("/v1/embeddings" if name in peers and "HTTP" in name else "--engine torch --batch-size 32"),
        }
    sweeps = {} if args.no_sweeps else run_sweeps(args, corpus, extra, inproc)
    write_report(args, summary, results, sweeps, statuses["server"], rounds)


def run_sweeps(args, corpus: list[str], extra: list[str], inproc: InProcess) -> dict:
    quick = args.quick
    sweeps: dict[str, dict] = {}
    long_texts = [" ".join(corpus[i : i + 12]) for i in range(0, 12 * 400, 12)]  # long enough for any cut
    lens = [16, 32, 64, 128] if quick else [16, 32, 64, 128, 256]
    sweeps["max_seq_len"] = {"x": lens, "server": [], "in-process": []}
    for length in lens:
        server = Server(f"-max_seq_len={length}", *extra)
        texts = long_texts[: max(100, 6400 // length)]
        sweeps["max_seq_len"]["server"].append(throughput(server.encode, texts))
        server.close()
        st = InProcess(max_seq_length=length)
        sweeps["max_seq_len"]["in-process"].append(throughput(st.encode, texts))
        print(f"max_seq_len {length}: server {sweeps['max_seq_len']['server'][-1]:.0f}, in-process "
              f"{sweeps['max_seq_len']['in-process'][-1]:.0f} sentences/s", flush=True)
    server = Server(*extra)
    sizes = [1, 4, 16, 64, 256] if quick else [1, 4, 16, 64, 256, 1024]
    sweeps["client_batch_size"] = {"x": sizes, "server": [], "in-process": []}
    for size in sizes:
        texts = corpus[: max(size * 4, 256)]
        requests = [texts[i : i + size] for i in range(0, len(texts), size)]
        started = time.perf_counter()
        for request in requests:
            server.encode(request)
        sweeps["client_batch_size"]["server"].append(len(texts) / (time.perf_counter() - started))
        started = time.perf_counter()
        for request in requests:
            inproc.encode(request, batch_size=size)
        sweeps["client_batch_size"]["in-process"].append(len(texts) / (time.perf_counter() - started))
        print(f"client batch size {size}: server {sweeps['client_batch_size']['server'][-1]:.0f}, in-process "
              f"{sweeps['client_batch_size']['in-process'][-1]:.0f} sentences/s", flush=True)
    counts = [1, 4, 16, 32] if quick else [1, 2, 4, 8, 16, 32, 64]
    sweeps["num_client"] = {"x": counts, "server, 1 sentence per request": [], "server, 16 per request": []}
    for count in counts:
        sweeps["num_client"]["server, 1 sentence per request"].append(many_clients(server, corpus[:600], count, 1))
        sweeps["num_client"]["server, 16 per request"].append(many_clients(server, corpus[:2000], count, 16))
        print(f"{count} clients: {sweeps['num_client']['server, 1 sentence per request'][-1]:.0f} (1/request), "
              f"{sweeps['num_client']['server, 16 per request'][-1]:.0f} (16/request) sentences/s", flush=True)
    server.close()
    return sweeps


def write_report(args, summary: dict, results: dict, sweeps: dict, status: dict, rounds: int) -> None:
    out = args.out
    (out / "results.json").write_text(json.dumps({"summary": summary, "rounds": results, "sweeps": sweeps},
                                                 indent=1))
    st = summary["in-process"]
    failed = {name: v["failed"] for name, v in summary.items() if "failed" in v}
    servers = [name for name in summary if name != "in-process" and name not in failed]
    lines = [
        f"# bert-serving benchmark, {datetime.now():%Y-%m-%d %H:%M}",
        "",
        f"`{' '.join(sys.argv)}`: {os.cpu_count()} cores, {platform.machine()}; model {status['model_name']}; "
        f"{rounds} interleaved rounds, medians; single-sentence percentiles over all rounds.",
        "",
        "| measurement | sentence-transformers in process | " + " | ".join(
            f"{name} (`{summary[name]['flags']}`)" for name in servers) + " |",
        "|---|---|" + "---|" * len(servers),
        f"| bulk, sentences/s | {st['bulk']:.0f} (`encode(batch_size=32)`) | " + " | ".join(
            f"{summary[n]['bulk']:.0f} ({summary[n]['bulk_ratio_vs_in_process']:.2f}x)" for n in servers) + " |",
        "| 32 clients x 1 sentence per request, sentences/s | - | " + " | ".join(
            f"{summary[n]['small_32_clients']:.0f} ({summary[n]['small_ratio_vs_bulk']:.2f}x of its bulk)"
            for n in servers) + " |",
        f"| single sentence, p50 ms | {st['single_p50_ms']:.2f} | " + " | ".join(
            f"{summary[n]['single_p50_ms']:.2f} ({summary[n]['single_p50_ms'] / st['single_p50_ms']:.2f}x)"
            for n in servers) + " |",
        f"| single sentence, p99 ms | {st['single_p99_ms']:.2f} | " + " | ".join(
            f"{summary[n]['single_p99_ms']:.2f}" for n in servers) + " |",
        "",
        *[f"{name} stopped answering during the run ({why}) and was measured no further; it appears in no "
          "column." for name, why in failed.items()],
        *[f"{name} stopped answering during the run ({summary[name]['failure']}); its figures are from the rounds "
          "before." for name in servers if summary[name].get("failure")],
        "",
        "Average batch the servers ran: " + ", ".join(f"{n} {summary[n]['avg_batch_size']:.1f}" for n in servers
                                                      if summary[n]["avg_batch_size"] is not None) + " sentences.",
    ]
    for name, sweep in sweeps.items():
        lines += ["", f"## Throughput against {name.replace('_', ' ')} (sentences/s)", "",
                  f"| {name} | " + " | ".join(k for k in sweep if k != "x") + " |",
                  "|---" * len(sweep) + "|"]
        for i, x in enumerate(sweep["x"]):
            lines.append(f"| {x} | " + " | ".join(f"{sweep[k][i]:.0f}" for k in sweep if k != "x") + " |")
        plot(out / f"{name}.png", name, sweep)
        lines += ["", f"![{name}]({name}.png)"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out}")


def plot(path: Path, name: str, sweep: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for label, values in sweep.items():
        if label != "x":
            ax.plot(sweep["x"], values, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(name.replace("_", " "))
    ax.set_ylabel("sentences / s")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
