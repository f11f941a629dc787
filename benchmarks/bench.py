"""Throughput and latency of bert-serving against in-process sentence-transformers, on this
machine, in one run, contenders interleaved round by round so machine noise hits all alike.

    python benchmarks/bench.py                    # the full run (a few minutes), default model
    python benchmarks/bench.py --quick            # fewer rounds and sizes
    python benchmarks/bench.py --server-flags "-max_batch_tokens 2048"   # try a setting
    python benchmarks/bench.py --http --infinity benchmarks/.venv-infinity  # with the peer (setup_infinity.sh)

Measured (sentences from benchmarks/corpus.txt, 5-70 word pieces, mean ~20 tokens):
- bulk: one client encodes N sentences in one call (the server) / ``encode(batch_size=32)``
  in process (sentence-transformers);
- small requests: 32 concurrent clients, each sending 1 sentence per request, one request
  in flight each; aggregate sentences/s;
- single sentence: sequential 1-sentence round trips, p50 and p99;
- sweeps (as bert-as-service's README): throughput against max_seq_len, client batch size and
  number of clients.
A step that fails for a contender (an error, no answer in ``TIMEOUT_S``) is named in the report
with its round; the contender's other steps and earlier rounds keep their numbers.
Writes ``results.md``, ``results.json`` and PNG plots into ``--out``, and the output of every
process it starts (servers, infinity-emb) into ``--out``/logs, drained for their whole life.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import zmq
from bench_report import Record, summarize, sweep_failure, write_report
from procs import Child, free_ports, http_ready, log_file

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 120  # a step of a contender silent this long fails: it is reported so, and not run again
CORPUS = HERE / "corpus.txt"
BIN = Path(sys.executable).parent


# --- contenders ---------------------------------------------------------------------------------


class Server:
    """``bert-serving-start`` as a user runs it, in its own process, its output in ``logs``."""

    def __init__(self, *flags: str, logs: Path) -> None:
        self.port, self.port_out = free_ports(2)
        self.flags = flags
        self.child = Child([BIN / "bert-serving-start", f"-port={self.port}", f"-port_out={self.port_out}",
                            "-bind=127.0.0.1", *flags], log_file(logs, "server"), "ready to serve")
        from bert_serving.client import BertClient

        self.client = BertClient(port=self.port, port_out=self.port_out, timeout=600_000, check_length=False)
        self.client.encode(["warm up"] * 64)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.client.encode(texts)

    def many_clients(self, texts: list[str], clients: int) -> float:
        return many_clients(self, texts, clients)

    def status(self) -> dict:
        return self.client.server_status

    def close(self) -> None:
        self.client.close()
        self.child.close()


class HttpEmbedder:
    """An OpenAI-style embeddings route: ours (``-http_port``) or a peer's (infinity-emb)."""

    def __init__(self, url: str, model: str = "any", chunk: int = 1024) -> None:
        import httpx

        self.url, self.model, self.chunk = url, model, chunk
        self.http = httpx.Client(timeout=TIMEOUT_S)

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
    (``benchmarks/setup_infinity.sh`` makes one), its output (an access-log line per request) in ``logs``."""

    def __init__(self, venv: Path, logs: Path) -> None:
        from bert_serving.model.loading import default_model_dir

        port = free_ports(1)[0]
        model = str(default_model_dir())
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        self.child = Child([venv / "bin" / "infinity_emb", "v2", "--model-id", model, "--port", str(port), "--host",
                            "127.0.0.1", "--engine", "torch", "--device", "cpu", "--batch-size", "32"],
                           log_file(logs, "infinity"), http_ready(f"http://127.0.0.1:{port}/health"), env=env)
        super().__init__(f"http://127.0.0.1:{port}/embeddings", model)
        self.encode(["warm up"] * 64)

    def close(self) -> None:
        super().close()
        self.child.close(20)


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
    try:
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
                push.send_multipart(protocol.request_frames(identity, protocol.texts_payload(chunks[next_chunk]),
                                                            req_id, len(chunks[next_chunk])))
                next_chunk += 1
        sub.setsockopt(zmq.RCVTIMEO, TIMEOUT_S * 1000)
        while done < len(chunks):
            try:
                frames = sub.recv_multipart()
            except zmq.Again:
                raise TimeoutError(f"no reply in {TIMEOUT_S} s") from None
            reply = protocol.parse_reply(frames)
            if reply.error is not None:
                raise reply.error
            done += 1
            if next_chunk < len(chunks):
                req_id += 1
                push.send_multipart(protocol.request_frames(frames[0], protocol.texts_payload(chunks[next_chunk]),
                                                            req_id, len(chunks[next_chunk])))
                next_chunk += 1
        return len(texts) / (time.perf_counter() - started)
    finally:
        ctx.destroy(linger=0)


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
    logs = args.out / "logs"  # every started process's output, for its whole life

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}")
    variants = {"server": []}
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        variants[f"server {name}"] = shlex.split(flags)
    http_port = free_ports(1)[0]
    servers = {name: Server(*extra, *flags, *([f"-http_port={http_port}"] if args.http and name == "server" else []),
                            logs=logs) for name, flags in variants.items()}
    contenders: dict[str, Server | HttpEmbedder] = dict(servers)
    setups = {name: " ".join([*extra, *variants[name]]) or "(defaults)" for name in servers}
    if args.http:
        contenders["server over HTTP"] = HttpEmbedder(f"http://127.0.0.1:{http_port}/v1/embeddings")
        setups["server over HTTP"] = "/v1/embeddings"
    if args.infinity:
        contenders["infinity-emb"] = Infinity(args.infinity, logs)
        setups["infinity-emb"] = "--engine torch --batch-size 32"
    inproc = InProcess()
    record = Record(TIMEOUT_S)
    try:
        for rnd in range(rounds):  # interleaved: each round measures every contender once
            record.measure("in-process", "bulk", rnd, lambda: throughput(inproc.encode, bulk))
            for name, contender in contenders.items():
                record.measure(name, "bulk", rnd, lambda: throughput(contender.encode, bulk))
                record.measure(name, "small", rnd, lambda: contender.many_clients(small, clients=32))
            for name, encode in [("in-process", inproc.encode), *((n, c.encode) for n, c in contenders.items())]:
                record.measure(name, "single", rnd, lambda: latencies_ms(encode, singles))
            print(f"round {rnd + 1}/{rounds}: " + "; ".join(record.latest(name) for name in ["in-process", *contenders]),
                  flush=True)
        statuses = {name: server.status() for name, server in servers.items()}
    finally:
        for contender in contenders.values():
            contender.close()

    summary = summarize(record, list(contenders), statuses, setups)
    sweeps: dict[str, dict] = {}
    sweeps_failure = None
    if not args.no_sweeps:
        try:
            run_sweeps(args, corpus, extra, inproc, logs, sweeps)
        except Exception as exc:  # the rounds above, and the sweep points before, are kept
            sweeps_failure = sweep_failure(sweeps, exc)
            print(sweeps_failure, flush=True)
    write_report(args, summary, record, sweeps, statuses["server"], rounds, sweeps_failure)


def run_sweeps(args, corpus: list[str], extra: list[str], inproc: InProcess, logs: Path, sweeps: dict) -> None:
    """Fills ``sweeps`` point by point: ``{sweep: {"x": points, series: values}}``."""
    quick = args.quick
    long_texts = [" ".join(corpus[i : i + 12]) for i in range(0, 12 * 400, 12)]  # long enough for any cut
    lens = [16, 32, 64, 128] if quick else [16, 32, 64, 128, 256]
    sweeps["max_seq_len"] = {"x": lens, "server": [], "in-process": []}
    for length in lens:
        server = Server(f"-max_seq_len={length}", *extra, logs=logs)
        texts = long_texts[: max(100, 6400 // length)]
        sweeps["max_seq_len"]["server"].append(throughput(server.encode, texts))
        server.close()
        st = InProcess(max_seq_length=length)
        sweeps["max_seq_len"]["in-process"].append(throughput(st.encode, texts))
        print(f"max_seq_len {length}: server {sweeps['max_seq_len']['server'][-1]:.0f}, in-process "
              f"{sweeps['max_seq_len']['in-process'][-1]:.0f} sentences/s", flush=True)
    server = Server(*extra, logs=logs)
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


if __name__ == "__main__":
    main()
