"""Load generators for the benchmarks: a client's requests as frames, without a client library in the way.

- ZeroMQ, raw frames: one PUSH/SUB pair per process acting for many client identities (`ZmqDriver`);
- ZeroMQ, the unmodified bert-serving-client 1.10.0, one thread per client (where ``make install`` put it);
- HTTP/1.1 keep-alive connections on asyncio, written and parsed by hand (``/v1/embeddings``).

`many` spreads 32 concurrent clients over several processes, so that the generator is not what limits.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
from pathlib import Path

import zmq

__all__ = ["CLIENTS", "http_bulk", "http_single", "many", "stock_client_dir", "zmq_bulk", "zmq_single"]

CLIENTS = 32
START_DELAY_S = 2.5  # `many` starts its clients this long after the call: every process connected, subscribed


class ZmqDriver:
    """One PUSH/SUB pair acting for ``identities`` clients."""

    def __init__(self, port: int, port_out: int, identities: list[bytes]) -> None:
        self.ctx = zmq.Context()
        self.push, self.sub = self.ctx.socket(zmq.PUSH), self.ctx.socket(zmq.SUB)
        for identity in identities:
            self.sub.setsockopt(zmq.SUBSCRIBE, identity)
        self.sub.connect(f"tcp://127.0.0.1:{port_out}")
        self.push.connect(f"tcp://127.0.0.1:{port}")
        self.sub.setsockopt(zmq.RCVTIMEO, 300_000)
        self.identities, self.req_id = identities, 0
        time.sleep(0.3)  # the subscriptions reach the server

    def send(self, identity: bytes, texts: list[str]) -> None:
        self.req_id += 1
        self.push.send_multipart([identity, json.dumps(texts).encode(), b"%d" % self.req_id, b"%d" % len(texts)])

    def receive(self) -> bytes:
        frames = self.sub.recv_multipart()
        if len(frames) == 4 and frames[1].startswith(b'{"dtype": "bert-serving error'):
            raise RuntimeError(frames[1].decode())
        return frames[0]

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def zmq_single(port: int, port_out: int, texts: list[str]) -> list[float]:
    driver, out = ZmqDriver(port, port_out, [b"single-%d" % os.getpid()]), []
    try:
        for text in texts:
            started = time.perf_counter()
            driver.send(driver.identities[0], [text])
            driver.receive()
            out.append((time.perf_counter() - started) * 1000)
    finally:
        driver.close()
    return out


def zmq_bulk(port: int, port_out: int, texts: list[str], repeats: int) -> float:
    driver = ZmqDriver(port, port_out, [b"bulk-%d" % os.getpid()])
    try:
        started = time.perf_counter()
        for _ in range(repeats):
            driver.send(driver.identities[0], texts)
            driver.receive()
        return len(texts) * repeats / (time.perf_counter() - started)
    finally:
        driver.close()


def _zmq_many(port: int, port_out: int, first: int, count: int, texts: list[str], start_at: float,
              seconds: float) -> int:
    driver = ZmqDriver(port, port_out, [b"many-%05d-%d" % (i, os.getpid()) for i in range(first, first + count)])
    try:
        time.sleep(max(0.0, start_at - time.time()))
        stop_at, done = time.time() + seconds, 0
        for i, identity in enumerate(driver.identities):
            driver.send(identity, [texts[i % len(texts)]])
        while True:
            identity = driver.receive()
            if time.time() >= stop_at:
                return done
            done += 1
            driver.send(identity, [texts[done % len(texts)]])
    finally:
        driver.close()


async def _http_post(reader, writer, port: int, body: bytes) -> bytes:
    writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    answer = await reader.readexactly(length)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {answer[:200]!r}")
    return answer


async def _connect(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 26)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


def http_single(port: int, texts: list[str]) -> list[float]:
    async def run() -> list[float]:
        reader, writer = await _connect(port)
        out = []
        for text in texts:
            started = time.perf_counter()
            await _http_post(reader, writer, port, json.dumps({"input": [text], "model": "m"}).encode())
            out.append((time.perf_counter() - started) * 1000)
        writer.close()
        return out

    return asyncio.run(run())


def http_bulk(port: int, texts: list[str], repeats: int) -> float:
    async def run() -> float:
        reader, writer = await _connect(port)
        body = json.dumps({"input": texts, "model": "m"}).encode()
        started = time.perf_counter()
        for _ in range(repeats):
            await _http_post(reader, writer, port, body)
        writer.close()
        return len(texts) * repeats / (time.perf_counter() - started)

    return asyncio.run(run())


def _http_many(port: int, first: int, count: int, texts: list[str], start_at: float, seconds: float) -> int:
    async def run() -> int:
        connections = [await _connect(port) for _ in range(count)]
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at, done = time.time() + seconds, [0]

        async def caller(i: int, reader, writer) -> None:
            while time.time() < stop_at:
                text = texts[(first + i + done[0]) % len(texts)]
                await _http_post(reader, writer, port, json.dumps({"input": [text], "model": "m"}).encode())
                if time.time() < stop_at:
                    done[0] += 1

        await asyncio.gather(*(caller(i, r, w) for i, (r, w) in enumerate(connections)))
        for _, writer in connections:
            writer.close()
        return done[0]

    return asyncio.run(run())


def _stock_many(stock: str, port: int, port_out: int, first: int, count: int, texts: list[str], start_at: float,
                seconds: float) -> int:
    """``count`` unmodified 1.10.0 clients (``stock``: where that package lies), one thread each."""
    sys.path.insert(0, stock)
    from bert_serving.client import BertClient  # the stock one: ``stock`` is searched first

    clients = [BertClient(port=port, port_out=port_out, ignore_all_checks=True, timeout=300_000)
               for _ in range(count)]
    subscribed_at = time.time() + 0.5  # a bare PUB drops answers to subscriptions that have not arrived yet
    done = [0] * count

    def work(i: int) -> None:
        time.sleep(max(0.0, start_at - time.time(), subscribed_at - time.time()))
        stop_at, n = time.time() + seconds, 0
        while True:
            clients[i].encode([texts[(first + i + n) % len(texts)]])
            if time.time() >= stop_at:
                break
            n += 1
        done[i] = n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for bc in clients:
        bc.close()
    return sum(done)


def stock_client_dir() -> str | None:
    """Where ``make install`` put the unmodified bert-serving-client 1.10.0, if it did."""
    for candidate in (os.environ.get("BERT_SERVING_STOCK_CLIENT"), str(Path(sys.prefix) / "stock-client")):
        if candidate and (Path(candidate) / "bert_serving" / "client").is_dir():
            return candidate
    return None


def many(kind: str, target: tuple, texts: list[str], procs: int, seconds: float, clients: int = CLIENTS) -> float:
    """Requests/s of ``clients`` concurrent one-sentence clients, driven from ``procs`` processes.
    ``kind``: zmq (raw frames, one thread per process), stock (the 1.10.0 client, a thread per client)
    or http."""
    ctx = multiprocessing.get_context("spawn")
    share = [clients // procs + (i < clients % procs) for i in range(procs)]
    start_at = time.time() + START_DELAY_S
    jobs = []
    with ctx.Pool(procs) as pool:
        first = 0
        for count in share:
            if kind == "raw":
                jobs.append(pool.apply_async(_zmq_many, (*target, first, count, texts, start_at, seconds)))
            elif kind == "stock":
                jobs.append(pool.apply_async(_stock_many, (stock_client_dir(), *target, first, count, texts, start_at,
                                                           seconds)))
            else:
                jobs.append(pool.apply_async(_http_many, (*target, first, count, texts, start_at, seconds)))
            first += count
        total = sum(job.get(seconds + 300) for job in jobs)
    return total / seconds
