"""A soak: the server under mixed traffic for a long while, with workers killed and stopped.

    python benchmarks/soak.py                      # 10 minutes, the default model, 2 workers
    python benchmarks/soak.py --minutes 2          # a short proof that it runs
    python benchmarks/soak.py --model-dir DIR --workers 4 --out /tmp/soak

What runs, until the time is up, all against one ``bert-serving-start`` on 127.0.0.1:
- ZeroMQ: bulk requests (hundreds of texts, chunked by BertClient), small ones (1-3 texts)
  from several clients, malformed messages (bad JSON, wrong frames, blank texts), and clients
  that give up (a timeout far too short: the server computes for nobody);
- HTTP: bulk and small requests on ``/v1/embeddings`` and ``/encode``, malformed bodies, and
  clients that disconnect before their answer (the server drops their queued rows);
- faults: at a third of the time one worker is SIGKILLed, at two thirds another SIGSTOPped.
  A server with a batch deadline (``-batch_timeout_s``) replaces the stopped one; one without
  never does: the soak then says so, continues the worker, and counts the requests it held up
  as ``stalled`` rather than wrong.

Checked: every well-formed request is answered, with the vectors the model gives in process
(cosine > 0.9999 to the reference); every malformed one is answered with an error. Sampled
every few seconds: the RSS of the server process and of its workers. The verdict: ``ok`` when
nothing well-formed was wrong or unanswered and the server's RSS after warm-up grew less than
``--rss-growth-mb``. Writes ``soak.json`` (the shape is in docs/operations.md) and the
server's log into ``--out``; exits 1 unless ``ok``.

The workers' RSS is sampled and its growth reported too, not judged (a replaced worker starts
small again). On a shared machine the numbers of a run are the machine's as much as the
server's; docs/operations.md has the recorded runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
import zmq
from procs import Child, children, free_ports

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CORPUS = HERE / "corpus.txt"


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Tally:
    """Outcomes per kind of traffic, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, outcome: str, example: str | None = None) -> None:
        with self.lock:
            self.counts[kind][outcome] += 1
            if example and len(self.examples[f"{kind}/{outcome}"]) < 3:
                self.examples[f"{kind}/{outcome}"].append(example[:300])


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = 0.0
        self.started = 0.0
        self.tally = Tally()
        self.stopped_worker: int | None = None  # while a worker is SIGSTOPped and not yet replaced
        self.faults: dict[str, object] = {}
        self.rss: list[dict[str, float]] = []
        sentences = [s for s in CORPUS.read_text().splitlines() if s.strip()]
        self.pool = random.Random(0).sample(sentences, min(args.pool, len(sentences)))

    # the server ---------------------------------------------------------------------------------

    def start_server(self) -> None:
        from bert_serving.server.cli import get_args_parser

        self.port, self.port_out, self.http_port = free_ports(3)
        flags = [f"-port={self.port}", f"-port_out={self.port_out}", f"-http_port={self.http_port}",
                 "-bind=127.0.0.1", f"-num_worker={self.args.workers}", f"-max_seq_len={self.args.max_seq_len}"]
        if self.args.model_dir:
            flags.append(f"-model_dir={self.args.model_dir}")
        if "batch_timeout_s" in vars(get_args_parser().parse_args([])):
            flags.append(f"-batch_timeout_s={self.args.batch_timeout_s}")
        self.server_flags = flags
        self.server = Child([BIN / "bert-serving-start", *flags], self.args.out / "server.log", "ready to serve",
                            new_session=True)

    def reference(self) -> np.ndarray:
        from bert_serving.model import Encoder

        encoder = Encoder.load(self.args.model_dir, device="cpu", max_seq_len=self.args.max_seq_len)
        return encoder.encode(self.pool)

    # checking -----------------------------------------------------------------------------------

    def check(self, kind: str, indices: list[int], vectors) -> None:
        got = np.asarray(vectors, dtype=np.float32)
        want = self.expected[indices]
        if got.shape != want.shape:
            self.tally.add(kind, "wrong", f"shape {got.shape} != {want.shape}")
            return
        cosine = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1) + 1e-12)
        if cosine.min() > 0.9999:
            self.tally.add(kind, "ok")
        else:
            self.tally.add(kind, "wrong", f"min cosine {cosine.min():.6f}")

    def failed(self, kind: str, exc: BaseException) -> None:
        """A well-formed request not answered with vectors."""
        name = type(exc).__name__
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)) and self.stopped_worker is not None:
            self.tally.add(kind, "stalled", f"{name} while worker {self.stopped_worker} was stopped")
        else:
            self.tally.add(kind, f"error:{getattr(exc, 'code', name)}", f"{name}: {exc}")

    def pick(self, rng: random.Random, low: int, high: int) -> list[int]:
        return [rng.randrange(len(self.pool)) for _ in range(rng.randint(low, high))]

    # traffic ------------------------------------------------------------------------------------

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def zmq_texts(self, kind: str, seed: int, low: int, high: int, pause: float) -> None:
        from bert_serving.client import BertClient

        rng = random.Random(seed)
        with BertClient(port=self.port, port_out=self.port_out, timeout=self.args.client_timeout_s * 1000,
                        chunk_size=100, check_length=False) as bc:
            while self.running():
                indices = self.pick(rng, low, high)
                try:
                    self.check(kind, indices, bc.encode([self.pool[i] for i in indices]))
                except Exception as exc:
                    self.failed(kind, exc)
                time.sleep(pause * rng.random())

    def http_texts(self, kind: str, seed: int, low: int, high: int, pause: float) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=self.args.client_timeout_s) as http:
            while self.running():
                indices = self.pick(rng, low, high)
                texts = [self.pool[i] for i in indices]
                try:
                    if rng.random() < 0.5:
                        answer = http.post("/v1/embeddings", json={"input": texts, "encoding_format": "float"})
                        answer.raise_for_status()
                        vectors = [d["embedding"] for d in answer.json()["data"]]
                    else:
                        answer = http.post("/encode", json={"id": 1, "texts": texts})
                        answer.raise_for_status()
                        vectors = answer.json()["result"]
                    self.check(kind, indices, vectors)
                except Exception as exc:
                    self.failed(kind, exc)
                time.sleep(pause * rng.random())

    def malformed(self, seed: int) -> None:
        """Bad messages on both edges: each must get an error answer."""
        from bert_serving import protocol

        rng = random.Random(seed)
        ctx = zmq.Context()
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        identity = b"soak-malformed"
        sub.setsockopt(zmq.SUBSCRIBE, identity)
        sub.setsockopt(zmq.RCVTIMEO, self.args.client_timeout_s * 1000)
        sub.connect(f"tcp://127.0.0.1:{self.port_out}")
        push.connect(f"tcp://127.0.0.1:{self.port}")
        bad_frames = [lambda i: [identity, b"not json", b"%d" % i, b"1"], lambda i: [identity, b'["a"]', b"%d" % i],
                      lambda i: [identity, b'["fine", "  "]', b"%d" % i, b"2"], lambda i: [identity, b"\xff\xfe", b"%d" % i, b"0"],
                      lambda i: [identity, b'{"a": 1}', b"%d" % i, b"1"]]
        bad_bodies = [b"{not json", b'{"input": []}', b'{"input": 3.5}', b'{"input": [[15339, 1917]]}', b'{"texts": [""]}']
        req_id = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30) as http:
            while self.running():
                req_id += 1
                push.send_multipart(rng.choice(bad_frames)(req_id))
                try:
                    reply = protocol.parse_reply(sub.recv_multipart())
                    self.tally.add("zmq malformed", "error answered" if reply.error is not None else "accepted!",
                                   repr(reply))
                except zmq.Again:
                    self.tally.add("zmq malformed", "unanswered")
                body = rng.choice(bad_bodies)
                path = "/encode" if body.startswith(b'{"texts"') else "/v1/embeddings"
                try:
                    status = http.post(path, content=body, headers={"content-type": "application/json"}).status_code
                    self.tally.add("http malformed", "error answered" if 400 <= status < 500 else f"status {status}")
                except httpx.HTTPError as exc:
                    self.tally.add("http malformed", "unanswered", repr(exc))
                time.sleep(0.2 * rng.random())
        push.close(linger=0)
        sub.close()
        ctx.term()

    def abandoning(self, seed: int) -> None:
        """Clients that leave: HTTP ones disconnect, ZeroMQ ones time out."""
        from bert_serving.client import BertClient

        rng = random.Random(seed)
        with BertClient(port=self.port, port_out=self.port_out, timeout=5, check_length=False) as impatient:
            while self.running():
                texts = [self.pool[i] for i in self.pick(rng, 200, 400)]
                try:
                    httpx.post(f"http://127.0.0.1:{self.http_port}/v1/embeddings", json={"input": texts}, timeout=0.05)
                    self.tally.add("http abandoned", "answered anyway")
                except httpx.TimeoutException:
                    self.tally.add("http abandoned", "left")
                try:
                    impatient.encode(texts[:50])
                    self.tally.add("zmq abandoned", "answered anyway")
                except TimeoutError:
                    self.tally.add("zmq abandoned", "left")
                time.sleep(1 + rng.random())

    # faults and memory --------------------------------------------------------------------------

    def at(self, fraction: float) -> None:
        while self.running() and time.monotonic() < self.started + fraction * self.args.minutes * 60:
            time.sleep(0.2)

    def fault_injector(self) -> None:
        self.at(1 / 3)
        if not self.running():
            return
        workers = children(self.server.pid)
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic() - self.started
        replaced = self.wait_replaced(victim, 120)
        self.faults["sigkill"] = {"pid": victim, "at_s": round(killed_at, 1),
                                  "replaced_after_s": None if replaced is None else round(replaced - killed_at, 1)}
        self.at(2 / 3)
        if not self.running():
            return
        workers = children(self.server.pid)
        victim = workers[-1]
        os.kill(victim, signal.SIGSTOP)
        self.stopped_worker = victim
        stopped_at = time.monotonic() - self.started
        grace = self.args.batch_timeout_s + 30
        replaced = self.wait_replaced(victim, grace)
        record = {"pid": victim, "at_s": round(stopped_at, 1)}
        if replaced is None:
            record.update(replaced_after_s=None, note=f"not replaced within {grace:.0f} s (no batch deadline?); "
                                                        "continued with SIGCONT")
            os.kill(victim, signal.SIGCONT)
            time.sleep(self.args.client_timeout_s)  # what it held up is answered or timed out meanwhile
        else:
            record["replaced_after_s"] = round(replaced - stopped_at, 1)
        self.stopped_worker = None
        self.faults["sigstop"] = record

    def wait_replaced(self, victim: int, within_s: float) -> float | None:
        """When a new worker took ``victim``'s place (it is gone and the count is back), or None."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            now = children(self.server.pid)
            if victim not in now and len(now) >= self.args.workers:
                return time.monotonic() - self.started
            time.sleep(0.1)
        return None

    def sampler(self) -> None:
        while self.running():
            workers = children(self.server.pid)
            self.rss.append({"t_s": round(time.monotonic() - self.started, 1),
                             "server_mb": round(rss_mb(self.server.pid), 1),
                             "workers_mb": round(sum(rss_mb(p) for p in workers), 1)})
            time.sleep(self.args.sample_s)

    # the run ------------------------------------------------------------------------------------

    def run(self) -> dict:
        self.args.out.mkdir(parents=True, exist_ok=True)
        print(f"reference vectors for {len(self.pool)} sentences...", flush=True)
        self.expected = self.reference()
        print("starting the server...", flush=True)
        self.start_server()
        self.started = time.monotonic()
        self.deadline = self.started + self.args.minutes * 60
        threads = [threading.Thread(target=self.zmq_texts, args=("zmq bulk", 1, 200, 500, 1.0)),
                   *[threading.Thread(target=self.zmq_texts, args=("zmq small", 10 + i, 1, 3, 0.05)) for i in range(3)],
                   threading.Thread(target=self.http_texts, args=("http bulk", 2, 100, 200, 1.0)),
                   *[threading.Thread(target=self.http_texts, args=("http small", 20 + i, 1, 2, 0.05))
                     for i in range(2)],
                   threading.Thread(target=self.malformed, args=(3,)),
                   threading.Thread(target=self.abandoning, args=(4,)),
                   threading.Thread(target=self.fault_injector), threading.Thread(target=self.sampler)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            time.sleep(5)
            done = {kind: sum(c.values()) for kind, c in self.tally.counts.items()}
            print(f"[{time.monotonic() - self.started:6.0f} s] rss {self.rss[-1] if self.rss else '-'} {done}",
                  flush=True)
        return self.finish()

    def finish(self) -> dict:
        workers = children(self.server.pid)
        exit_code = self.server.close(120)  # SIGTERM; SIGKILL (-9, not ok) after 120 s
        time.sleep(2)
        left = [p for p in workers if Path(f"/proc/{p}").exists()]
        counts = {kind: dict(c) for kind, c in sorted(self.tally.counts.items())}
        well_formed = [k for k in counts if k.split()[1] in ("bulk", "small")]
        bad = {k: {o: n for o, n in counts[k].items() if o not in ("ok", "stalled")} for k in well_formed}
        bad = {k: v for k, v in bad.items() if v}
        bad.update({k: {o: n for o, n in counts[k].items() if o != "error answered"}
                    for k in counts if "malformed" in k and set(counts[k]) - {"error answered"}})
        warm = [s["server_mb"] for s in self.rss if s["t_s"] >= self.args.warmup_s]
        third = max(1, len(warm) // 3)
        growth = statistics.median(warm[-third:]) - statistics.median(warm[:third]) if warm else 0.0
        workers_warm = [s["workers_mb"] for s in self.rss if s["t_s"] >= self.args.warmup_s]
        workers_growth = (statistics.median(workers_warm[-third:]) - statistics.median(workers_warm[:third])
                          if workers_warm else 0.0)
        report = {
            "minutes": self.args.minutes, "server_flags": self.server_flags, "server_exit_code": exit_code,
            "workers_left_after_exit": left, "requests": counts, "not_answered_correctly": bad,
            "examples": dict(self.tally.examples), "faults": self.faults,
            "rss": {"samples": self.rss, "warmup_s": self.args.warmup_s,
                    "server_mb_after_warmup": {"first": warm[0] if warm else None, "last": warm[-1] if warm else None,
                                               "min": min(warm, default=None), "max": max(warm, default=None),
                                               "growth_median_first_to_last_third": round(growth, 1)},
                    # reported, not judged: a replaced worker starts small again
                    "workers_mb_growth_median_first_to_last_third": round(workers_growth, 1)},
        }
        ok = not bad and exit_code == 0 and not left and growth < self.args.rss_growth_mb
        report["verdict"] = "ok" if ok else "FAILED"
        (self.args.out / "soak.json").write_text(json.dumps(report, indent=1))
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model-dir", default=None, help="default: the packaged all-MiniLM-L6-v2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=64)
    parser.add_argument("--pool", type=int, default=800, help="distinct sentences the requests are drawn from")
    parser.add_argument("--batch-timeout-s", type=float, default=20.0, help="the server's batch deadline, if it has one")
    parser.add_argument("--client-timeout-s", type=int, default=90)
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="RSS before this is warm-up, not judged")
    parser.add_argument("--rss-growth-mb", type=float, default=50.0, help="server RSS growth after warm-up allowed")
    parser.add_argument("--out", type=Path, default=Path("soak-results"))
    soak = Soak(parser.parse_args())
    try:
        report = soak.run()
    finally:
        if getattr(soak, "server", None) is not None and soak.server.proc.poll() is None:
            for pid in children(soak.server.pid):
                os.kill(pid, signal.SIGCONT)
            soak.server.proc.kill()
    summary = {k: report[k] for k in ("verdict", "server_exit_code", "workers_left_after_exit", "requests",
                                      "not_answered_correctly", "faults")}
    summary["server_rss_mb_after_warmup"] = report["rss"]["server_mb_after_warmup"]
    print(json.dumps(summary, indent=1))
    sys.exit(0 if report["verdict"] == "ok" else 1)


if __name__ == "__main__":
    main()
