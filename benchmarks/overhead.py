"""The server's own overhead: bert-serving against the transport's ceiling and the model in process.

    python benchmarks/overhead.py                                  # CPU, the negligible model, ZeroMQ and HTTP
    python benchmarks/overhead.py --model negligible --model minilm --variant prefetch1='-prefetch_size 1'
    python benchmarks/overhead.py --device cuda --model negligible --model minilm-shaped --model bert-base-shaped

Contenders, all started once and measured round by round, interleaved, so that machine noise hits
them alike:
- ``echo``: a bare pyzmq PULL/PUB server speaking the 1.10.0 protocol that answers every request
  with a fixed vector (no tokenization, no model): what the transport costs;
- ``http echo``: a bare ASGI endpoint on the same uvicorn set-up answering ``/v1/embeddings`` with
  a fixed vector;
- ``server`` (and ``--variant`` servers): ``bert-serving-start`` on the model, over ZeroMQ and
  over HTTP (``/v1/embeddings``);
- ``in process``: the same model through `bert_serving.model.Encoder` in this process (bulk and
  single sentences).
Measurements: single-sentence round trips (p50, p99), 32 concurrent clients (``--clients`` for
more) each with one one-sentence request in flight (requests/s), and bulk: 1,024 sentences per
request (sentences/s). With the clients and in bulk, the CPU a request (a sentence) costs, from
every thread of the server's process tree (`proctree`): the serving path (every process but the
model replicas: the coordinator, the router, the intake and HTTP processes; the one server process
before they were split), the busiest of its processes, and the cap that busiest process implies
(one second of Python a second: 1 s / its CPU per request); and every process on the machine (the
clients' too, from /proc/stat): where the clients share the server's cores, half the echo's rate
is only reachable at no more than the cores' time over half the echo's rate per request.

A ``--variant`` is another server in the same run: ``NAME=FLAGS``, and ``NAME=@SRC FLAGS`` runs the
server of another source tree (``SRC``, a ``src`` folder) on the same interpreter: the design before
a change, measured against the one after it, rounds interleaved.

Models (benchmarks/synthetic.py; random init, never downloaded): ``negligible`` (1 layer, hidden
32, the real 30,522-word vocabulary: the model's compute is negligible, what is left is the
server), ``minilm-shaped``, ``bert-base-shaped``; and ``minilm``, the packaged all-MiniLM-L6-v2.

The load generator: each of ``--procs`` processes drives its share of the 32 clients from one
thread (distinct identities on one PUSH/SUB pair for ZeroMQ, asyncio keep-alive connections for
HTTP). Before the rounds it measures the echo servers with ``--procs`` and with twice as many
processes and prints both: when doubling the generator does not raise the echo's rate, the
generator is not what limits it.

Every process it starts (echoes, servers) writes its output into ``--out``/logs (without
``--out``, a temporary folder), for its whole life.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import START_DELAY_S, http_bulk, http_single, many, stock_client_dir, zmq_bulk, zmq_single  # noqa: E402
from procs import Child, free_ports, log_file  # noqa: E402
from proctree import is_replica, sample, usage  # noqa: E402

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.txt"
BULK = 1024
ECHO_READY = "echo ready"


# --- the bare echo servers (run as `overhead.py --echo-zmq/--echo-http ...` in their own process) -----------------


def echo_zmq(port: int, port_out: int, dim: int) -> None:
    ctx = zmq.Context()
    pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
    pull.bind(f"tcp://127.0.0.1:{port}")
    pub.bind(f"tcp://127.0.0.1:{port_out}")
    print(ECHO_READY)
    row = np.ones(dim, dtype=np.float32).tobytes()
    config = json.dumps({"server_version": "1.10.0", "max_seq_len": 256, "output_dim": dim}).encode()
    while True:
        identity, payload, req_id, msg_len = pull.recv_multipart()
        if payload in (b"SHOW_CONFIG", b"SHOW_STATUS"):
            pub.send_multipart([identity, config, req_id])
            continue
        n = int(msg_len)
        pub.send_multipart([identity, b'{"dtype":"float32","shape":[%d,%d],"tokens":""}' % (n, dim), row * n, req_id])


def echo_http(port: int, dim: int) -> None:
    import orjson

    from bert_serving.server.http.server import HttpServer, listen

    vector = [1.0] * dim

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        texts = orjson.loads(body)["input"]
        data = [{"object": "embedding", "index": i, "embedding": vector} for i in range(len(texts))]
        answer = orjson.dumps({"object": "list", "data": data, "model": "echo",
                               "usage": {"prompt_tokens": 0, "total_tokens": 0}})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})

    server = HttpServer(app, listen("127.0.0.1", port))
    server.start()
    print(ECHO_READY)
    threading.Event().wait()


# --- contenders ---------------------------------------------------------------------------------------------------


class MachineCpu:
    """Cores busy on the whole machine (every process: clients, server, worker) while `many`
    runs: sampled from /proc/stat over its measured window only (it starts its clients
    ``START_DELAY_S`` after the call, then runs ``seconds``), leaving out the load generator's start-up.
    With ``server``, the server's process tree is sampled over the same window (`proctree`)."""

    def __init__(self, seconds: float, server: int | None = None) -> None:
        self.cores = 0.0
        self.window_s = max(0.5, seconds - 0.5)
        self.tree: tuple[dict, dict] | None = None
        self._server = server
        self._thread = threading.Thread(target=self._sample, args=(seconds,), daemon=True)

    def __enter__(self) -> "MachineCpu":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join()

    def _sample(self, seconds: float) -> None:
        time.sleep(START_DELAY_S + 0.25)
        busy0, all0 = _jiffies()
        tree0 = sample(self._server) if self._server else None
        time.sleep(self.window_s)
        busy1, all1 = _jiffies()
        if self._server:
            self.tree = (tree0, sample(self._server))
        self.cores = (os.cpu_count() or 1) * (busy1 - busy0) / max(1, all1 - all0)


def _jiffies() -> tuple[int, int]:
    """(busy, all) CPU time of every core since boot, from /proc/stat (idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


class Server:
    def __init__(self, model_dir: str | None, device: str, flags: list[str], http: bool, logs: Path,
                 name: str = "server") -> None:
        src = flags[0][1:] if flags and flags[0].startswith("@") else None  # another tree's server
        flags = flags[1:] if src else flags
        self.port, self.port_out, http_port = free_ports(3)
        self.http_port = http_port if http else None
        argv = [sys.executable, "-m", "bert_serving.server", f"-port={self.port}", f"-port_out={self.port_out}",
                "-bind=127.0.0.1", *(["-model_dir", model_dir] if model_dir else []),
                *(["-device_map", "0"] if device == "cuda" else ["-cpu"]),
                *([f"-http_port={self.http_port}"] if http else []), *flags]
        env = {**os.environ, "PYTHONPATH": src} if src else None
        self.child = Child(argv, log_file(logs, name.replace(" ", "-")), "ready to serve", env=env)
        zmq_bulk(self.port, self.port_out, ["warm up the server"] * 64, 2)
        self.processes: dict[str, list[dict[str, float]]] = {}  # per measurement, per round: role -> µs per unit
        self.busiest: dict[str, list[str]] = {}

    def measured(self, units: float, samples: tuple[dict, dict], note, label: str, key: str) -> None:
        """Note the CPU the tree spent between two samples per unit (request or sentence): the
        serving path's, the busiest serving process's, the replicas'."""
        spent = usage(*samples)
        serving = [u for u in spent if not is_replica(u.role)]
        busiest = serving[0]
        note(label, f"serving_us_{key}", sum(u.cpu_s for u in serving) / max(units, 1) * 1e6)
        note(label, f"busiest_us_{key}", busiest.per(units))
        note(label, f"busiest_thread_us_{key}", max(u.busiest_thread[1] for u in serving) / max(units, 1) * 1e6)
        note(label, f"replicas_us_{key}", sum(u.cpu_s for u in spent if is_replica(u.role)) / max(units, 1) * 1e6)
        self.processes.setdefault(key, []).append(
            {u.role: round(u.per(units), 1) for u in serving})
        self.busiest.setdefault(key, []).append(busiest.role)

    def status(self) -> dict:
        from bert_serving.client import BertClient

        with BertClient(port=self.port, port_out=self.port_out, timeout=60_000) as bc:
            return bc.server_status

    def close(self) -> None:
        self.child.close()


class InProcess:
    def __init__(self, model_dir: str | None, device: str) -> None:
        from bert_serving.model import Encoder

        self.encoder = Encoder.load(model_dir, device=device)
        self.encoder.encode(["warm up"] * 64)

    def single(self, texts: list[str]) -> list[float]:
        out = []
        for text in texts:
            started = time.perf_counter()
            self.encoder.encode([text])
            out.append((time.perf_counter() - started) * 1000)
        return out

    def bulk(self, texts: list[str], repeats: int) -> float:
        started = time.perf_counter()
        for _ in range(repeats):
            self.encoder.encode(texts)
        return len(texts) * repeats / (time.perf_counter() - started)


# --- the run ------------------------------------------------------------------------------------------------------


def model_folder(name: str, work: Path) -> str | None:
    if name == "minilm":
        return None  # the packaged default
    sys.path.insert(0, str(HERE))
    from synthetic import build

    return str(build(name, work / name))


def run_model(name: str, args, corpus: list[str], work: Path) -> dict:
    folder = model_folder(name, work)
    dim = {"negligible": 32, "minilm": 384, "minilm-shaped": 384, "bert-base-shaped": 768}[name]
    singles, small, bulk = corpus[-args.singles:], corpus[:2000], corpus[:BULK]
    echo_ports = tuple(free_ports(2))
    me = [sys.executable, str(Path(__file__).resolve())]
    logs = (args.out or work) / "logs"  # every started process's output, for its whole life
    contenders = {"echo": Child([*me, "--echo-zmq", *map(str, echo_ports), str(dim)], log_file(logs, "echo"),
                                ECHO_READY)}
    http_echo_port = free_ports(1)[0]
    if args.http:
        contenders["http echo"] = Child([*me, "--echo-http", str(http_echo_port), str(dim)],
                                        log_file(logs, "http-echo"), ECHO_READY)
    servers = {"server": Server(folder, args.device, shlex.split(args.server_flags), args.http, logs)}
    for spec in args.variant:
        label, _, flags = spec.partition("=")
        flags = shlex.split(flags)
        if flags and flags[0].startswith("@"):  # another tree: its own flags only
            servers[f"server {label}"] = Server(folder, args.device, flags, args.http, logs, f"server-{label}")
        else:
            servers[f"server {label}"] = Server(folder, args.device, [*shlex.split(args.server_flags), *flags],
                                                args.http, logs, f"server-{label}")
    inproc = InProcess(folder, args.device)
    rows: dict[str, dict[str, list[float]]] = {}

    def note(contender: str, measurement: str, value) -> None:
        rows.setdefault(contender, {}).setdefault(measurement, []).extend(value if isinstance(value, list) else [value])

    print(f"\n## {name} ({folder or 'packaged all-MiniLM-L6-v2'}) on {args.device}", flush=True)
    drivers = ["raw", *(["stock"] if stock_client_dir() else [])]
    check = {f"{d}, {p} processes": many(d, echo_ports, small, p, args.seconds)
             for d in drivers for p in ((args.procs,) if args.quick else (args.procs, 2 * args.procs))}
    if args.http:
        check.update({f"http, {p} processes": many("http", (http_echo_port,), small, p, args.seconds)
                      for p in ((args.procs,) if args.quick else (args.procs, 2 * args.procs))})
    print("load generator check, echo requests/s: " + ", ".join(f"{k}: {v:,.0f}" for k, v in check.items()))
    try:
        for round_ in range(args.rounds):
            note("echo", "single_ms", zmq_single(*echo_ports, singles))
            for d in drivers:
                with MachineCpu(args.seconds) as machine:
                    rate = many(d, echo_ports, small, args.procs, args.seconds)
                note("echo", f"many_{d}_rps", rate)
                note("echo", f"machine_us_{d}", machine.cores / rate * 1e6)
            if args.http:
                note("http echo", "single_ms", http_single(http_echo_port, singles))
                note("http echo", "many_http_rps", many("http", (http_echo_port,), small, args.procs, args.seconds))
            note("in process", "single_ms", inproc.single(singles))
            note("in process", "bulk_sps", inproc.bulk(bulk, args.bulk_repeats))
            for label, server in servers.items():
                note(label, "single_ms", zmq_single(server.port, server.port_out, singles))
                for clients in args.clients:
                    n = "" if clients == 32 else f"{clients}_"
                    for d in drivers:
                        with MachineCpu(args.seconds, server.child.pid) as machine:
                            rate = many(d, (server.port, server.port_out), small, args.procs, args.seconds, clients)
                        note(label, f"many_{n}{d}_rps", rate)
                        if not n:
                            note(label, f"machine_us_{d}", machine.cores / rate * 1e6)
                        server.measured(rate * machine.window_s, machine.tree, note, label, f"{n}{d}")
                before = sample(server.child.pid)
                note(label, "bulk_sps", zmq_bulk(server.port, server.port_out, bulk, args.bulk_repeats))
                server.measured(len(bulk) * args.bulk_repeats, (before, sample(server.child.pid)), note, label, "bulk")
                if args.http:
                    note(f"{label} http", "single_ms", http_single(server.http_port, singles))
                    for clients in args.clients:
                        n = "" if clients == 32 else f"{clients}_"
                        with MachineCpu(args.seconds, server.child.pid) as machine:
                            rate = many("http", (server.http_port,), small, args.procs, args.seconds, clients)
                        note(f"{label} http", f"many_{n}http_rps", rate)
                        server.measured(rate * machine.window_s, machine.tree, note, f"{label} http", f"{n}http")
                    note(f"{label} http", "bulk_sps", http_bulk(server.http_port, bulk, args.bulk_repeats))
            print(f"round {round_ + 1}/{args.rounds}: " + "; ".join(
                f"{c}: " + ", ".join(f"{m} {v[-1]:.2f}" for m, v in ms.items()) for c, ms in rows.items()), flush=True)
        batches = {label: s.status()["statistic"].get("avg_batch_size") for label, s in servers.items()}
    finally:
        for contender in (*contenders.values(), *servers.values()):
            contender.close()
    summary = {c: {m: (statistics.median(v) if m != "single_ms" else
                       {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))})
                   for m, v in ms.items()} for c, ms in rows.items()}
    processes = {label: {key: _median_roles(rounds) for key, rounds in server.processes.items()}
                 for label, server in servers.items()}
    return {"model": name, "device": args.device, "cores": os.cpu_count(), "summary": summary,
            "load_generator_check": check, "avg_batch_size": batches, "processes": processes}


def _median_roles(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each serving process's CPU per unit, median over the rounds (a process absent from a round: 0)."""
    roles = sorted({role for r in rounds for role in r})
    return {role: round(statistics.median(r.get(role, 0.0) for r in rounds), 1) for role in roles}


def targets(result: dict) -> list[str]:
    s = result["summary"]
    lines = []
    for label in [c for c in s if c.startswith("server") and not c.endswith("http")]:
        srv, http, echo = s[label], s.get(f"{label} http", {}), s["echo"]
        many = ", ".join(f"{srv[k]:,.0f}/s = {srv[k] / echo[k]:.2f}x echo ({k[5:-4]} clients)"
                         for k in srv if k.startswith("many_") and k in echo)
        zmq_many = srv.get("many_stock_rps", srv["many_raw_rps"])
        lines.append(f"- {label}: single p50 {srv['single_ms']['p50']:.2f} ms; 32 clients {many}; "
                     f"{zmq_many / srv['bulk_sps']:.2f}x its bulk; bulk {srv['bulk_sps']:,.0f}/s = "
                     f"{srv['bulk_sps'] / s['in process']['bulk_sps']:.2f}x in process")
        for key, unit, where in (("stock", "request", srv), ("raw", "request", srv), ("http", "request", http),
                                 ("bulk", "sentence", srv)):
            if f"busiest_us_{key}" in where:
                busiest = where[f"busiest_us_{key}"]
                roles = result["processes"][label].get(key, {})
                top = ", ".join(f"{role} {us:,.1f}" for role, us in sorted(roles.items(), key=lambda kv: -kv[1])[:3])
                lines.append(f"  - {key}: serving path {where[f'serving_us_{key}']:,.1f} µs a {unit}; busiest process "
                             f"{busiest:,.1f} µs a {unit} = a cap of {1e6 / busiest:,.0f} {unit}s/s ({top})")
        for d in ("stock", "raw"):
            if f"machine_us_{d}" in srv and f"machine_us_{d}" in echo:
                allowed = result["cores"] / (0.5 * echo[f"many_{d}_rps"]) * 1e6
                spent, echo_spent = srv[f"machine_us_{d}"], echo[f"machine_us_{d}"]
                lines.append(f"  - {d} clients, CPU per request, every process on the machine: {spent:,.0f} µs "
                             f"(echo {echo_spent:,.0f}); half the echo's rate on {result['cores']} cores allows at "
                             f"most {allowed:,.0f}")
        if http:
            lines.append(f"- {label} over HTTP: single p50 {http['single_ms']['p50']:.2f} ms; 32 clients "
                         f"{http['many_http_rps']:,.0f}/s = {http['many_http_rps'] / s['http echo']['many_http_rps']:.2f}x"
                         f" http echo, {http['many_http_rps'] / zmq_many:.2f}x ZeroMQ's; bulk {http['bulk_sps']:,.0f}/s")
    return lines


ROWS = (("single_ms", "single sentence, p50 / p99 ms"),
        ("many_stock_rps", "32 clients x 1 sentence, requests/s (stock 1.10.0 clients)"),
        ("many_raw_rps", "32 clients x 1 sentence, requests/s (raw frames)"),
        ("many_http_rps", "32 clients x 1 sentence, requests/s (HTTP keep-alive)"),
        ("bulk_sps", f"bulk, {BULK} sentences per request, sentences/s"),
        ("serving_us_stock", "serving path CPU per small request, µs (every process but the replicas; stock clients)"),
        ("serving_us_raw", "serving path CPU per small request, µs (raw frames)"),
        ("serving_us_http", "serving path CPU per small request, µs (HTTP)"),
        ("serving_us_bulk", "serving path CPU per bulk sentence, µs"),
        ("busiest_us_stock", "busiest serving process, CPU per small request, µs (stock clients)"),
        ("busiest_us_raw", "busiest serving process, CPU per small request, µs (raw frames)"),
        ("busiest_us_http", "busiest serving process, CPU per small request, µs (HTTP)"),
        ("busiest_us_bulk", "busiest serving process, CPU per bulk sentence, µs"),
        ("replicas_us_raw", "replicas' CPU per small request, µs (raw frames)"),
        ("machine_us_stock", "CPU per small request, every process on the machine (clients too), µs (stock clients)"),
        ("machine_us_raw", "CPU per small request, every process on the machine (clients too), µs (raw frames)"))


def table(result: dict) -> str:
    s = result["summary"]
    cols = list(s)
    out = [f"### {result['model']} on {result['device']}", "",
           "| measurement | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    known = {key for key, _ in ROWS}
    more = sorted({k for c in cols for k in s[c] if k not in known})  # more clients (many_64_raw_rps, ...)
    for key, label in (*ROWS, *((k, k) for k in more)):
        cells = []
        for c in cols:
            v = s[c].get(key)
            cells.append("-" if v is None else f"{v['p50']:.2f} / {v['p99']:.2f}" if key == "single_ms"
                         else f"{v:,.1f}" if v < 100 else f"{v:,.0f}")
        if any(c != "-" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", *targets(result), "",
            "load generator check (echo, requests/s): " +
            ", ".join(f"{p}: {v:,.0f}" for p, v in result["load_generator_check"].items()),
            f"average batch: {result['avg_batch_size']}", "",
            "serving processes, CPU µs per request (bulk: per sentence), medians over the rounds:", ""]
    for label, keys in result.get("processes", {}).items():
        for key, roles in keys.items():
            out.append(f"- {label}, {key}: " + ", ".join(f"{role} {us:,.1f}" for role, us in
                                                        sorted(roles.items(), key=lambda kv: -kv[1])))
    out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", choices=["negligible", "minilm", "minilm-shaped",
                                                              "bert-base-shaped"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each 32-client measurement")
    parser.add_argument("--singles", type=int, default=300, help="single-sentence round trips per round")
    parser.add_argument("--bulk-repeats", type=int, default=2)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--server-flags", default="")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                        help="another server in the same run; NAME=@SRC FLAGS: the server of another source tree")
    parser.add_argument("--clients", type=int, action="append", default=None,
                        help="concurrent one-sentence clients (repeatable; default 32)")
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test of this script)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--echo-zmq", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo-http", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_zmq:
        return echo_zmq(*args.echo_zmq)
    if args.echo_http:
        return echo_http(*args.echo_http)
    args.clients = args.clients or [32]
    if args.quick:
        args.rounds, args.seconds, args.singles, args.bulk_repeats = 1, 1.0, 30, 1
    models = args.model or ["negligible"]
    corpus = CORPUS.read_text(encoding="utf-8").splitlines()
    header = (f"`benchmarks/overhead.py {' '.join(shlex.quote(a) for a in sys.argv[1:])}`: {os.cpu_count()} cores "
              f"({platform.processor() or platform.machine()}), python {platform.python_version()}, "
              f"{datetime.now():%Y-%m-%d %H:%M}; {args.rounds} interleaved rounds, medians")
    print(header, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as work:
        for name in models:
            results.append(run_model(name, args, corpus, Path(work)))
            print(table(results[-1]), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "overhead.md").write_text("# Server overhead\n\n" + header + "\n\n" +
                                              "\n".join(table(r) for r in results))
        (args.out / "overhead.json").write_text(json.dumps(results, indent=1))
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
