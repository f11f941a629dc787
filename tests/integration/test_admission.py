"""Admission before work: a flood of large requests neither swells the server's processes nor
locks other clients out. Requests over the backlog are refused from their frames' sizes, before
anything is decoded; what each connection may have queued is bounded; a small request from a new
client goes before the flood's."""

from __future__ import annotations

import contextlib
import threading
import time

import httpx
import zmq

from bert_serving import protocol
from bert_serving.client import BertClient
from bert_serving.errors import OverloadedError

from ..conftest import TINY_BERT
from .conftest import free_ports
from .processes import start_cli, stop, tree_rss_mb, wait_for_line

MAX_QUEUED_MB = 64
CONNECTIONS, PER_CONNECTION = 8, 25
WORDS = " ".join(f"word{i % 97}" for i in range(200))  # 200 words, ~1.2 KB a text


@contextlib.contextmanager
def flooding(pid: int, flood, peak: list[float]):
    """``flood(i)`` on CONNECTIONS threads, the process tree's RSS peak watched meanwhile (into
    ``peak[0]``); the body runs once the flood is on, and the flooders are joined after it."""
    on = threading.Event()
    on.set()

    def watch() -> None:
        while on.is_set():
            peak[0] = max(peak[0], tree_rss_mb(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    flooders = [threading.Thread(target=flood, args=(i,)) for i in range(CONNECTIONS)]
    for thread in flooders:
        thread.start()
    time.sleep(1.0)  # the flood is on
    try:
        yield
    finally:
        for thread in flooders:
            thread.join(180)
        on.clear()
        watcher.join()
    assert not any(t.is_alive() for t in flooders), "a flooding client was never answered"


def test_a_flood_of_large_requests_is_refused_early_and_a_new_client_still_gets_through() -> None:
    port, port_out = free_ports(2)
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={port}", f"-port_out={port_out}", "-max_seq_len=16",
                     "-bind=127.0.0.1", f"-max_queued_bytes={MAX_QUEUED_MB * 1024 * 1024}")
    try:
        wait_for_line(proc, "ready to serve")
        with BertClient(port=port, port_out=port_out, timeout=30_000) as bc:
            bc.encode(["warm up"])
        baseline = tree_rss_mb(proc.pid)
        payload = protocol.texts_payload([WORDS] * 8_000)  # ~10 MB a request: 8 x 25 of them, ~2 GB offered
        peak, outcomes = [baseline], {"ok": 0, "overloaded": 0}
        lock = threading.Lock()

        def flood(i: int) -> None:
            ctx = zmq.Context()
            push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
            identity = b"flood-%d" % i
            sub.setsockopt(zmq.SUBSCRIBE, identity)
            sub.setsockopt(zmq.RCVTIMEO, 120_000)
            sub.connect(f"tcp://127.0.0.1:{port_out}")
            push.connect(f"tcp://127.0.0.1:{port}")
            time.sleep(0.3)  # subscribed
            try:
                for req_id in range(1, PER_CONNECTION + 1):  # as fast as the wire takes them
                    push.send_multipart(protocol.request_frames(identity, payload, req_id, 8_000), copy=False)
                for _ in range(PER_CONNECTION):  # every one of them is answered
                    reply = protocol.parse_reply(sub.recv_multipart())
                    with lock:
                        if reply.error is None:
                            outcomes["ok"] += 1
                        else:
                            assert isinstance(reply.error, OverloadedError), reply.error
                            outcomes["overloaded"] += 1
            finally:
                ctx.destroy(linger=0)

        with flooding(proc.pid, flood, peak):
            started = time.monotonic()
            with BertClient(port=port, port_out=port_out, timeout=30_000) as bc:  # a new client, one sentence
                assert bc.encode(["a small request during the flood"]).shape == (1, 32)
            waited = time.monotonic() - started
        assert waited < 5, f"the new client waited {waited:.1f} s"
        assert outcomes["ok"] + outcomes["overloaded"] == CONNECTIONS * PER_CONNECTION
        assert outcomes["overloaded"] > 0 and outcomes["ok"] > 0, outcomes
        grown = peak[0] - baseline
        assert grown < MAX_QUEUED_MB + 1024, f"the processes grew {grown:.0f} MB under a ~2 GB flood"
        with BertClient(port=port, port_out=port_out, timeout=30_000) as bc:  # and then it serves normally
            assert bc.encode(["after the flood"]).shape == (1, 32)
    finally:
        stop(proc)


def test_a_flood_of_large_http_bodies_is_refused_early_and_a_new_client_still_gets_through() -> None:
    """The same over HTTP (fewer bodies: each admitted one is parsed, tokenized and answered in full)."""
    per_connection = 3
    port, port_out, http_port = free_ports(3)
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={port}", f"-port_out={port_out}", "-max_seq_len=16",
                     "-bind=127.0.0.1", f"-http_port={http_port}", f"-max_queued_bytes={MAX_QUEUED_MB * 1024 * 1024}")
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_for_line(proc, "ready to serve")
        assert httpx.post(f"{base}/v1/embeddings", json={"input": ["warm up"]}, timeout=30).status_code == 200
        baseline = tree_rss_mb(proc.pid)
        body = b'{"input": [' + b",".join([b'"' + WORDS.encode() + b'"'] * 8_000) + b"]}"  # ~10 MB
        peak, codes = [baseline], []
        lock = threading.Lock()

        def flood(i: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as client:
                for _ in range(per_connection):
                    answer = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
                    with lock:
                        codes.append(answer.status_code)
                    if answer.status_code == 429:
                        assert answer.json()["error"]["code"] == "overloaded"

        with flooding(proc.pid, flood, peak):
            started = time.monotonic()
            small = httpx.post(f"{base}/v1/embeddings", json={"input": ["a small request during the flood"]},
                               timeout=30)
            waited = time.monotonic() - started
        assert small.status_code == 200 and waited < 5, f"the new client waited {waited:.1f} s ({small.status_code})"
        assert len(codes) == CONNECTIONS * per_connection and set(codes) <= {200, 429} and 429 in codes, codes
        grown = peak[0] - baseline
        assert grown < MAX_QUEUED_MB + 1024, f"the processes grew {grown:.0f} MB under a ~240 MB flood"
        assert httpx.post(f"{base}/v1/embeddings", json={"input": ["after"]}, timeout=30).status_code == 200
    finally:
        stop(proc)
