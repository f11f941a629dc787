"""The benchmarks' process starter (benchmarks/procs.py) keeps a child's output flowing for its
whole life: a server that writes a line per request, as uvicorn's access log does, keeps
answering after far more than a pipe's 64 KiB, where a pipe read only until the ready line
wedged infinity-emb at its 1,032nd request."""

from __future__ import annotations

import importlib.util
import sys
import time
import urllib.request

import pytest

from ..conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_procs", REPO / "benchmarks" / "procs.py")
procs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(procs)

# A server that prints a line of ~1 KiB per request to stdout (not flushed by hand: the helper
# makes Python children unbuffered), and says when it listens.
CHATTY = r"""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        print("GET", self.path, "x" * 1000)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening on", sys.argv[1])
server.serve_forever()
"""

REQUESTS = 200  # ~200 KiB of output: three times what a pipe holds


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.read()


@pytest.mark.parametrize("ready", ["line", "probe"])
def test_a_chatty_child_keeps_answering_past_a_pipes_worth_of_output(tmp_path, ready) -> None:
    port = procs.free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "chatty.log"
    readiness = "listening on" if ready == "line" else procs.http_ready(f"{url}/health")
    with procs.Child([sys.executable, "-c", CHATTY, str(port)], log, readiness, timeout_s=30) as child:
        started = time.monotonic()
        answers = [get(f"{url}/{i}") for i in range(REQUESTS)]
        assert answers == [b"ok"] * REQUESTS
        assert time.monotonic() - started < 20
        assert child.proc.poll() is None
    assert log.stat().st_size > 3 * 64 * 1024
    assert f"GET /{REQUESTS - 1} " in log.read_text()


def test_a_child_that_exits_before_it_is_ready_is_reported_with_its_output(tmp_path) -> None:
    log = tmp_path / "broken.log"
    script = "import sys; print('no model in /nowhere'); sys.exit(3)"
    with pytest.raises(procs.ChildError, match=r"(?s)exited with 3 before it was ready.*no model in /nowhere"):
        procs.Child([sys.executable, "-c", script], log, "ready to serve", timeout_s=30)


def test_a_child_never_ready_is_stopped_and_reported(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); print('starting'); time.sleep(60)"
    with pytest.raises(procs.ChildError, match=r"(?s)not ready after 1 s.*starting"):
        procs.Child([sys.executable, "-c", script], tmp_path / "slow.log", "ready to serve", timeout_s=1)
    assert not _alive(int(pid_file.read_text()))


def test_close_kills_a_child_that_ignores_sigterm(tmp_path) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up'); time.sleep(60)"
    child = procs.Child([sys.executable, "-c", script], tmp_path / "stubborn.log", "up", timeout_s=30)
    assert child.close(timeout_s=0.5) == -9
    assert not _alive(child.pid)


def test_each_process_gets_its_own_log(tmp_path) -> None:
    first = procs.log_file(tmp_path / "logs", "server")
    first.write_text("")
    assert first.name == "server.log" and procs.log_file(tmp_path / "logs", "server").name == "server-2.log"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
