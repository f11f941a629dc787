"""``bert-serving-benchmark``: the experiments of bert-as-service 1.10.0, printing its tables.

For each tested variable (client batch size, max batch size, max_seq_len, number of clients,
pooling layer) and each of its values, a fresh server starts with that setting; ``num_client``
threads each encode ``client_batch_size`` random sentences of ``max_seq_len`` words,
``num_repeat`` times; the first two rounds are dropped as warm-up. Speed is sentences per
second per client (as the original reported) and for all clients together. Each experiment's
table is printed and appended to ``benchmark-<num_worker>[-fp16].result``.

Two fixes over the original: the server is used once it reports ready (``-wait_till_ready`` is
the longest wait, not a fixed sleep), and ``-test_pooling_layer -1 -2`` means layers [-1], [-2].

Ours: ``-test_rerank_documents 16 64 256`` on a served cross-encoder measures reranking, pairs
per second through the server (each client reranks that many documents per call) beside
sentence-transformers' ``CrossEncoder.predict(batch_size=32)`` in this process on the same
model and pairs, in one run.

``-test_model NAME`` sends every client's requests to that served model of a server started with
``-extra_model`` (e.g. ``-extra_model rerank=DIR -test_model rerank -test_rerank_documents 16``),
the others loaded beside it as they would be in production.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from copy import deepcopy
from pathlib import Path

from ..errors import BertServingError

__all__ = ["add_benchmark_arguments", "run_benchmark"]

_FALLBACK_VOCAB = ("the quick brown fox jumps over lazy dog a server maps every sentence to a fixed length vector "
                   "with bert as a service in two lines of code from any machine").split()


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(num_client=1, client_batch_size=4096)
    group = parser.add_argument_group("Benchmark parameters", "the experiments to run")
    group.add_argument("-test_client_batch_size", type=int, nargs="*", default=[1, 16, 256, 4096])
    group.add_argument("-test_max_batch_size", type=int, nargs="*", default=[8, 32, 128, 512])
    group.add_argument("-test_max_seq_len", type=int, nargs="*", default=[32, 64, 128, 256])
    group.add_argument("-test_num_client", type=int, nargs="*", default=[1, 4, 16, 64])
    group.add_argument("-test_pooling_layer", type=int, nargs="*", default=[-j for j in range(1, 13)])
    group.add_argument("-wait_till_ready", type=int, default=30, help="longest wait (s) for each server to be ready")
    group.add_argument("-client_vocab_file", default="README.md", help="words to build random sentences from")
    group.add_argument("-num_repeat", type=int, default=10, help="rounds per client; the first two are dropped")
    group.add_argument("-test_rerank_documents", type=int, nargs="*", default=[],
                       help="documents per rerank call (a cross-encoder's -model_dir); against in-process "
                            "CrossEncoder.predict(batch_size=32) on the same pairs")
    group.add_argument("-test_model", default=None,
                       help="the served model the clients ask (an -extra_model's NAME); default: the default model")


class _Client(threading.Thread):
    def __init__(self, args: argparse.Namespace, vocab: list[str], words: int) -> None:
        super().__init__(daemon=True)
        self.batch = [" ".join(random.choices(vocab, k=words)) for _ in range(args.client_batch_size)]
        self.args = args
        self.seconds: list[float] = []
        self.error: BaseException | None = None

        self.documents = 0  # > 0: rerank self.batch[1:] against self.batch[0] instead of encoding

    def run(self) -> None:
        from ..client import BertClient

        try:
            with BertClient(port=self.args.port, port_out=self.args.port_out, check_version=False,
                            check_length=False, timeout=600_000, model=self.args.test_model) as bc:
                for _ in range(self.args.num_repeat):
                    started = time.perf_counter()
                    if self.documents:
                        bc.rerank(self.batch[0], self.batch[1 : 1 + self.documents])
                    else:
                        bc.encode(self.batch)
                    self.seconds.append(time.perf_counter() - started)
        except BaseException as exc:
            self.error = exc


def _vocab(path: str) -> list[str]:
    file = Path(path)
    if file.is_file():
        words = sorted({w for line in file.read_text(encoding="utf-8").splitlines() for w in line.split()})
        if words:
            return words
    return list(_FALLBACK_VOCAB)


def _run_one(args: argparse.Namespace, vocab: list[str], documents: int = 0) -> tuple[float, float, float, float]:
    """(avg, max, min per-client speed, aggregate speed) in sentences/s for one setting (with
    ``documents``: pairs/s of rerank calls of that many documents)."""
    from .service import BertServer

    server = BertServer(args)
    server.start()
    try:
        server.wait_ready(args.wait_till_ready)
        words = args.max_seq_len if isinstance(args.max_seq_len, int) else 25
        if documents:
            args = deepcopy(args)
            args.client_batch_size = documents + 1
            random.seed(documents)  # the first client's pairs are the in-process run's (_in_process_rerank)
        clients = [_Client(args, vocab, words) for _ in range(args.num_client)]
        for client in clients:
            client.documents = documents
            client.start()
        for client in clients:
            client.join()
    finally:
        server.close()
    for client in clients:
        if client.error is not None:
            raise client.error
    kept = max(1, args.num_repeat - 2)
    per_call = documents or args.client_batch_size
    speeds = [per_call / statistics.mean(c.seconds[-kept:]) for c in clients]
    return statistics.mean(speeds), max(speeds), min(speeds), sum(speeds)


def _in_process_rerank(args: argparse.Namespace, vocab: list[str], documents: int) -> float | None:
    """Pairs/s of sentence-transformers' ``CrossEncoder.predict(batch_size=32)`` on the same
    model and as many pairs; None without sentence-transformers."""
    try:
        from sentence_transformers import CrossEncoder
    except ImportError:
        return None
    words = args.max_seq_len if isinstance(args.max_seq_len, int) else 25
    random.seed(documents)  # the pairs the server's first client reranked
    batch = [" ".join(random.choices(vocab, k=words)) for _ in range(documents + 1)]
    folder = args.model_dir
    if args.test_model:  # the -extra_model it names
        folder = next((e.split("=", 1)[1].split(",")[0] for e in args.extra_models or ()
                       if e.split("=", 1)[0].strip() == args.test_model), folder)
    model = CrossEncoder(folder, device="cpu" if args.cpu else None)
    if isinstance(args.max_seq_len, int):
        model.max_seq_length = args.max_seq_len
    pairs = [(batch[0], d) for d in batch[1:]]
    seconds = []
    for _ in range(args.num_repeat):
        started = time.perf_counter()
        model.predict(pairs, batch_size=32, show_progress_bar=False)
        seconds.append(time.perf_counter() - started)
    return documents / statistics.mean(seconds[-max(1, args.num_repeat - 2):])


def run_benchmark(args: argparse.Namespace) -> dict[str, list[tuple[object, float | None]]]:
    vocab = _vocab(args.client_vocab_file)
    print(f"vocabulary size: {len(vocab)}")
    experiments = [name[len("test_"):] for name, values in vars(args).items()
                   if name.startswith("test_") and name != "test_model" and values]
    tables: dict[str, list[tuple[object, float | None]]] = {}
    result_file = Path(f"benchmark-{args.num_worker}{'-fp16' if args.fp16 else ''}.result")
    for name in experiments:
        rows: list[tuple[object, float | None]] = []
        for value in getattr(args, f"test_{name}"):
            run_args = deepcopy(args)
            rerank = name == "rerank_documents"
            if not rerank:
                setattr(run_args, name, [value] if name == "pooling_layer" else value)
            try:
                avg, best, worst, total = _run_one(run_args, vocab, documents=value if rerank else 0)
            except BertServingError as exc:
                print(f"{name}={value}: {exc}", flush=True)
                rows.append((value, None))
                continue
            unit = "pairs/s" if rerank else "samples/s"
            print(f"{name}={value}\tavg speed: {avg:.0f}\tmax speed: {best:.0f}\tmin speed: {worst:.0f}"
                  f"\tall clients: {total:.0f} {unit}", flush=True)
            if rerank:
                local = _in_process_rerank(run_args, vocab, value)
                if local is not None:
                    print(f"{name}={value}\tCrossEncoder.predict(batch_size=32) in process: {local:.0f} pairs/s"
                          f"\tserver/in-process: {avg / local:.2f}x", flush=True)
            rows.append((value, avg))
        tables[name] = rows
        unit = "pairs/s" if name == "rerank_documents" else "samples/s"
        table = f"\n|`{name}`\t|{unit}|\n|---|---|\n" + "\n".join(
            f"|{value}\t|{'error' if speed is None else f'{speed:.0f}'}|" for value, speed in rows
        )
        print(table, flush=True)
        with result_file.open("a", encoding="utf-8") as out:
            print(table, file=out)
            print(f"\n{name} = {[v for v, _ in rows]}\nspeed = {[None if s is None else round(s) for _, s in rows]}",
                  file=out)
    return tables
