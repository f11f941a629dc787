"""Real servers on random ports of 127.0.0.1, always shut down, and the stock 1.10.0 client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from bert_serving.errors import ConfigurationError
from bert_serving.server import BertServer, get_args_parser

from ..conftest import TINY_BERT

STOCK_CLIENT = Path(sys.prefix) / "stock-client"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def running_server(*flags: str, model_dir: Path | None = TINY_BERT / "google", ready_timeout: float = 120):
    """A BertServer on fresh ports; closed on exit, whatever happened."""
    for attempt in range(3):
        port, port_out = free_ports(2)
        model = ["-model_dir", str(model_dir)] if model_dir else []
        args = get_args_parser().parse_args(
            [*model, "-port", str(port), "-port_out", str(port_out), "-bind", "127.0.0.1", *flags]
        )
        server = BertServer(args)
        try:
            server.start()
        except ConfigurationError:
            if attempt == 2:
                raise
            continue  # someone took the port meanwhile
        try:
            server.wait_ready(ready_timeout)
            yield server
        finally:
            server.close()
        return


@pytest.fixture(scope="module")
def tiny_server():
    """tiny-bert (Google layout), max_seq_len 16, tokens shown to clients."""
    with running_server("-max_seq_len", "16", "-show_tokens_to_client") as server:
        yield server


def run_stock_client(server: BertServer, body: str, timeout: float = 60) -> dict:
    """Run ``body`` with the unmodified bert-serving-client 1.10.0 in a subprocess; ``bc`` is a
    BertClient with default arguments on ``server``'s ports; ``out`` is a dict printed as JSON."""
    assert (STOCK_CLIENT / "bert_serving" / "client").is_dir(), f"run `make install`: {STOCK_CLIENT} is missing"
    script = "import json, numpy as np\nfrom bert_serving.client import BertClient\nout = {}\n"
    script += f"bc = BertClient(port={server.config.port}, port_out={server.config.port_out})\n"
    script += textwrap.dedent(body) + "\nbc.close()\nprint(json.dumps(out))\n"
    env = {**os.environ, "PYTHONPATH": str(STOCK_CLIENT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


class Concurrently:
    """``work(i)`` for i in range(n), each on its own thread; results by i, exceptions kept."""

    def __init__(self, work, n: int) -> None:
        self.results: dict[int, object] = {}
        self.errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                self.results[i] = work(i)
            except BaseException as exc:  # reported by join()
                self.errors.append(exc)

        self._threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]

    def start(self) -> "Concurrently":
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float = 120) -> dict[int, object]:
        for thread in self._threads:
            thread.join(timeout)
        assert not any(t.is_alive() for t in self._threads), "a client thread is still waiting"
        assert not self.errors, self.errors
        return self.results
