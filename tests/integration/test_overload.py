"""Overload and oversized input: fast refusals (429 / overloaded), bounded memory, recovery,
and huge requests served by splitting or refused with a clear message."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import zmq

from bert_serving import protocol
from bert_serving.client import BertClient
from bert_serving.errors import OverloadedError, PayloadTooLargeError
from bert_serving.model import Encoder

from ..conftest import TINY_BERT
from .conftest import free_ports, running_server
from .processes import start_cli, stop, tree_rss_mb, wait_for_line


def test_a_flood_gets_429s_then_normal_service() -> None:
    http_port = free_ports(1)[0]
    with running_server("-max_seq_len", "64", "-http_port", str(http_port), "-max_queued_texts", "400",
                        model_dir=None) as server:
        texts = [f"flood request sentence number {i} with some more words in it" for i in range(40)]

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=120) as client:
                return await asyncio.gather(*(client.post("/v1/embeddings", json={"input": texts})
                                              for _ in range(60)))

        backlog, flooding = [0], True

        def watch() -> None:
            while flooding:
                backlog[0] = max(backlog[0], server.batcher.queued_rows)
                time.sleep(0.001)

        watcher = threading.Thread(target=watch)
        watcher.start()
        responses = asyncio.run(flood())
        flooding = False
        watcher.join()
        codes = [r.status_code for r in responses]
        refused = [r for r in responses if r.status_code == 429]
        assert refused and codes.count(200) >= 5 and set(codes) == {200, 429}
        body = refused[0].json()["error"]
        assert body["type"] == "rate_limit_error" and body["code"] == "overloaded" and "retry later" in body["message"]
        assert 0 < backlog[0] <= 200  # the backlog never grew past its bound
        normal = httpx.post(f"http://127.0.0.1:{http_port}/v1/embeddings", json={"input": ["after the flood"]})
        assert normal.status_code == 200
        statistic = server.sync_stats().statistic()
    assert statistic["errors"]["overloaded"] == len(refused)


def test_zeromq_flood_is_refused_fast_with_bounded_memory() -> None:
    port, port_out = free_ports(2)
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={port}", f"-port_out={port_out}",
                     "-max_seq_len=32", "-max_queued_texts=500", "-bind=127.0.0.1")
    try:
        wait_for_line(proc, "ready to serve")
        with BertClient(port=port, port_out=port_out) as bc:
            bc.encode(["warm up"] * 10)
        before = tree_rss_mb(proc.pid)
        ctx = zmq.Context()
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        identity = b"flooder"
        sub.setsockopt(zmq.SUBSCRIBE, identity)
        sub.connect(f"tcp://127.0.0.1:{port_out}")
        push.connect(f"tcp://127.0.0.1:{port}")
        payload = protocol.texts_payload([f"flood text {i} " * 5 for i in range(100)])
        peak, sent = before, 8000
        for req_id in range(1, sent + 1):  # 800,000 texts, sent as fast as the socket takes them
            push.send_multipart(protocol.request_frames(identity, payload, req_id, 100))
            if req_id % 500 == 0:
                peak = max(peak, tree_rss_mb(proc.pid))
        kinds = {"ok": 0, "overloaded": 0}
        sub.setsockopt(zmq.RCVTIMEO, 60_000)
        for _ in range(sent):  # every single request is answered
            reply = protocol.parse_reply(sub.recv_multipart())
            if reply.error is None:
                kinds["ok"] += 1
            else:
                assert isinstance(reply.error, OverloadedError), reply.error
                kinds["overloaded"] += 1
            peak = max(peak, tree_rss_mb(proc.pid)) if _ % 1000 == 0 else peak
        push.close()
        sub.close()
        ctx.term()
        assert kinds["overloaded"] > sent / 2 and kinds["ok"] > 0
        assert peak - before < 300, f"memory grew {peak - before:.0f} MB under the flood"
        with BertClient(port=port, port_out=port_out) as bc:  # and then it serves normally
            assert bc.encode(["after the flood"]).shape == (1, 32)
    finally:
        stop(proc)


def test_a_hundred_thousand_texts_are_served_by_splitting(tiny_server) -> None:
    texts = [f"text number {i}" for i in range(100_000)]
    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out, chunk_size=200_000,
                    timeout=300_000) as bc:
        before = tiny_server.stats.num_batches
        vectors = bc.encode(texts)
        assert bc.request_id == 2  # SHOW_CONFIG, then one request of 100,000
    assert vectors.shape == (100_000, 32)
    assert tiny_server.stats.num_batches - before >= 100_000 / 256  # split into many forward passes
    reference = Encoder.load(str(TINY_BERT / "google"), device="cpu", max_seq_len=16)
    sample = [0, 1, 54_321, 99_999]
    np.testing.assert_allclose(vectors[sample], reference.encode([texts[i] for i in sample]), atol=1e-5)


def test_over_the_text_limit_is_refused_with_a_clear_message(tiny_server) -> None:
    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out, chunk_size=200_000,
                    timeout=60_000) as bc:
        try:
            bc.encode(["x"] * 100_001)
        except PayloadTooLargeError as exc:
            assert "100001 texts in one request; this server takes at most 100000" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("not refused")


def test_very_long_strings_are_served(tiny_server) -> None:
    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out, timeout=60_000,
                    check_length=False) as bc:
        vectors = bc.encode(["the cat sat on the mat " * 200_000, "short"])  # 4.6 MB of text
    reference = Encoder.load(str(TINY_BERT / "google"), device="cpu", max_seq_len=16)
    np.testing.assert_allclose(vectors, reference.encode(["the cat sat on the mat " * 3, "short"]), atol=1e-5)


def test_oversized_payload_is_refused() -> None:
    with running_server("-max_seq_len", "16", "-max_request_bytes", "10000") as small:
        with BertClient(port=small.config.port, port_out=small.config.port_out, timeout=30_000) as bc:
            try:
                bc.encode(["y" * 20_000])
            except PayloadTooLargeError as exc:
                assert "this server takes at most 10000" in str(exc)
            else:  # pragma: no cover
                raise AssertionError("not refused")
            assert bc.encode(["fits"]).shape == (1, 32)


def test_a_hundred_thousand_texts_with_none_pooling_are_refused_before_allocating() -> None:
    port, port_out = free_ports(2)
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-port={port}", f"-port_out={port_out}",
                     "-max_seq_len=64", "-pooling_strategy=NONE", "-bind=127.0.0.1")
    try:
        wait_for_line(proc, "ready to serve")
        before = tree_rss_mb(proc.pid)
        texts = [f"text number {i}" for i in range(100_000)]
        with BertClient(port=port, port_out=port_out, chunk_size=200_000, timeout=120_000) as bc:
            try:
                bc.encode(texts)  # one request: [100000, 64, 32] float32 would be 819 MB
            except PayloadTooLargeError as exc:
                assert "[100000, 64, 32] float32 (781.2 MiB)" in str(exc) and "-max_result_bytes" in str(exc)
            else:  # pragma: no cover
                raise AssertionError("not refused")
            assert tree_rss_mb(proc.pid) - before < 300  # nothing of that size was allocated
            bc.chunk_size = 1024  # BertClient's default: the same texts in requests of 1,024 are served
            vectors = bc.encode(texts[:3000])
        assert vectors.shape == (3000, 64, 32)
    finally:
        stop(proc)


def test_zeromq_frames_far_over_the_limit_close_their_connection_and_memory_stays_bounded() -> None:
    with running_server("-max_seq_len", "16", "-max_request_bytes", "10000") as server:
        ctx = zmq.Context()
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"giant")
        sub.setsockopt(zmq.RCVTIMEO, 3000)
        sub.connect(f"tcp://127.0.0.1:{server.config.port_out}")
        push.connect(f"tcp://127.0.0.1:{server.config.port}")
        try:
            push.send_multipart(protocol.request_frames(b"giant", b"[" + b'"x",' * 50_000 + b'"x"]', 1))
            try:
                reply = sub.recv_multipart()
            except zmq.Again:
                reply = None
            assert reply is None  # dropped with its connection, never read into memory
            push.send_multipart(protocol.request_frames(b"giant", b'["y' + b"y" * 15_000 + b'"]', 2))
            refused = protocol.parse_reply(sub.recv_multipart())  # over the limit but not far: a clear error
            assert isinstance(refused.error, PayloadTooLargeError)
        finally:
            push.close(linger=0)
            sub.close()
            ctx.term()
        with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=10_000) as bc:
            assert bc.encode(["still serving"]).shape == (1, 32)
