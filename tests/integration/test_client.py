"""Our client against a real server: the 1.10.0 API, plus bounded waits, errors and chunking."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from bert_serving.client import BertClient, ConcurrentBertClient
from bert_serving.errors import InvalidRequestError, ServerTimeoutError
from bert_serving.model import Encoder

from ..conftest import TINY_BERT
from .conftest import Concurrently, free_ports

SENTENCES = ["First do it", "then do it right", "then do it better", "the cat sat ||| on the mat"]


@pytest.fixture(scope="module")
def reference():
    return Encoder.load(str(TINY_BERT / "google"), device="cpu", max_seq_len=16)


@pytest.fixture
def bc(tiny_server):
    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out, timeout=20000) as client:
        yield client


def test_client_works_with_only_numpy_and_pyzmq_installed(tmp_path, tiny_server) -> None:
    """A bare interpreter (no site-packages) that sees numpy, pyzmq and our package only."""
    import numpy
    import zmq

    site = tmp_path / "site"
    site.mkdir()
    for module in (numpy, zmq):
        root = Path(module.__file__).parent
        (site / root.name).symlink_to(root)
    for libs in Path(numpy.__file__).parents[1].glob("*.libs"):  # the wheels' bundled shared libraries
        if libs.name.split(".")[0] in ("numpy", "pyzmq"):
            (site / libs.name).symlink_to(libs)
    (site / "bert_serving").symlink_to(Path(__file__).resolve().parents[2] / "src" / "bert_serving")
    code = (
        "import sys; from bert_serving.client import BertClient; "
        f"bc = BertClient(port={tiny_server.config.port}, port_out={tiny_server.config.port_out}); "
        "print(bc.encode(['the cat']).shape); "
        "print(sorted(m for m in ('torch', 'tokenizers', 'fastapi', 'bert_serving.server', 'bert_serving.model') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["(1, 32)", "[]"]


def test_encode_tokenized_tokens_and_formats(bc, reference) -> None:
    np.testing.assert_allclose(bc.encode(SENTENCES), reference.encode(SENTENCES), atol=1e-5)
    tokenized = [["first", "do", "it"], ["the", "cat"]]
    np.testing.assert_allclose(bc.encode(tokenized, is_tokenized=True), reference.encode(tokenized, is_tokenized=True),
                               atol=1e-5)
    vectors, tokens = bc.encode(["the cat"], show_tokens=True)
    assert tokens == [["[CLS]", "the", "cat", "[SEP]"]] and vectors.shape == (1, 32)
    listed = BertClient(port=bc.port, port_out=bc.port_out, output_fmt="list")
    with listed:
        assert isinstance(listed.encode(["the cat"]), list)


def test_fetch_fetch_all_and_encode_async(bc, reference) -> None:
    for sentence in SENTENCES:
        assert bc.encode([sentence], blocking=False) is None
    assert bc.status["num_pending_request"] == 4
    np.testing.assert_allclose(bc.fetch_all(concat=True), reference.encode(SENTENCES), atol=1e-5)
    assert bc.fetch_all() is None
    results = sorted(bc.encode_async(iter([[s] for s in SENTENCES]), max_num_batch=4), key=lambda r: r.id)
    np.testing.assert_allclose(np.concatenate([r.embedding for r in results]), reference.encode(SENTENCES), atol=1e-5)


def test_server_config_and_status(bc) -> None:
    assert bc.server_config["max_seq_len"] == 16
    assert bc.server_status["statistic"]["num_sys_request"] >= 1
    assert bc.length_limit == 16 and bc.token_info_available


def test_malformed_request_gets_an_error_and_the_next_succeeds(bc, reference) -> None:
    req_id = bc._send(b'["fine", 3]', 2)
    with bc._receiving(20000), pytest.raises(InvalidRequestError, match=r"texts\[1\] must be a string"):
        bc._response(bc._recv(req_id))
    for payload, message in [(b"not json", "not valid JSON"), (b'{"a": 1}', "must be a JSON list"),
                             (b'["ok", "  "]', "empty or blank"), (b"[]", "must not be empty"),
                             (b"\xff\xfe", "not UTF-8|not valid JSON")]:
        req_id = bc._send(payload, 1)
        with bc._receiving(20000), pytest.raises(InvalidRequestError, match=message):
            bc._response(bc._recv(req_id))
    np.testing.assert_allclose(bc.encode(["then do it right"]), reference.encode(["then do it right"]), atol=1e-5)


def test_wrong_frame_count_is_answered(bc) -> None:
    bc.sender.send_multipart([bc.identity, b'["a"]', b"7"])  # 3 frames
    bc.pending_request.add(7)
    with bc._receiving(20000), pytest.raises(InvalidRequestError, match="expected 4 frames"):
        bc._response(bc._recv(7))


def test_constructor_gives_up_when_no_server_answers() -> None:
    port, port_out = free_ports(2)
    started = time.monotonic()
    with pytest.raises(ServerTimeoutError, match=f"no bert-serving server answered at localhost:{port}"):
        BertClient(port=port, port_out=port_out, connect_timeout=500)
    assert time.monotonic() - started < 5
    started = time.monotonic()
    with pytest.raises(ServerTimeoutError, match="within 1500 ms"):  # 1.10.0's timeout bounds the first contact too
        BertClient(port=port, port_out=port_out, timeout=1500)
    assert time.monotonic() - started < 5


def test_timeout_raises_a_timeout_error(tiny_server) -> None:
    port, port_out = free_ports(2)
    client = BertClient(port=port, port_out=port_out, ignore_all_checks=True, timeout=300)
    with client, pytest.raises(TimeoutError, match="no response from the server within timeout=300 ms"):
        client.encode(["nobody listens"])


def test_big_lists_are_chunked_and_come_back_in_order(tiny_server, reference) -> None:
    texts = [f"the {w} sat on the mat {i}" for i, w in enumerate(["cat", "dog", "fox"] * 400)]
    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out, chunk_size=100,
                    max_in_flight=3) as client:
        before = client.request_id
        got = client.encode(texts, show_progress=True)
        assert client.request_id - before == 12  # 1200 texts in chunks of 100
    np.testing.assert_allclose(got, reference.encode(texts), atol=1e-5)


def test_a_client_can_be_shared_between_threads(bc, reference) -> None:
    results = Concurrently(lambda i: bc.encode([SENTENCES[i % 4]]), 8).start().join()
    for i, vectors in results.items():
        np.testing.assert_allclose(vectors, reference.encode([SENTENCES[i % 4]]), atol=1e-5)


def test_concurrent_client_pool(tiny_server, reference) -> None:
    with ConcurrentBertClient(max_concurrency=3, port=tiny_server.config.port,
                              port_out=tiny_server.config.port_out) as pool:
        outs = Concurrently(lambda i: pool.encode([SENTENCES[i % 4]]), 3).start().join()  # 3 threads, 3 clients
        for i, vectors in outs.items():
            np.testing.assert_allclose(vectors, reference.encode([SENTENCES[i % 4]]), atol=1e-5)
        assert pool.server_config["server_version"] == "1.10.0"
        with pytest.raises(NotImplementedError):
            pool.fetch_all()


def test_concurrent_client_raises_at_once_when_every_client_is_busy() -> None:
    port, port_out = free_ports(2)  # nobody answers there: a call holds its client until its timeout
    with ConcurrentBertClient(max_concurrency=2, port=port, port_out=port_out, ignore_all_checks=True,
                              timeout=5000) as pool:
        busy = [threading.Thread(target=lambda: pytest.raises(TimeoutError, pool.encode, ["waits"])) for _ in range(2)]
        for thread in busy:
            thread.start()
        while not pool._free.empty():  # both clients borrowed
            time.sleep(0.01)
        with pytest.raises(RuntimeError, match='Too many concurrent connections! .*"max_concurrency", currently = 2'):
            pool.encode(["a third caller"])  # as 1.10.0: at once, not after the others are done
        assert all(thread.is_alive() for thread in busy)
        for thread in busy:
            thread.join(30)


def test_fetch_all_after_a_blocking_encode_collects_the_earlier_request(bc, reference) -> None:
    assert bc.encode(["First do it"], blocking=False) is None
    np.testing.assert_allclose(bc.encode(["then do it right"]), reference.encode(["then do it right"]), atol=1e-5)
    # the first answer arrived while the blocking call waited, and was parked
    np.testing.assert_allclose(bc.fetch_all(concat=True), reference.encode(["First do it"]), atol=1e-5)
    assert bc.fetch_all() is None and not bc.pending_request


def test_after_a_chunked_request_times_out_no_chunk_answer_lingers(tiny_server) -> None:
    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out, chunk_size=10,
                    timeout=1) as client:
        with pytest.raises(TimeoutError):
            client.encode([f"sentence number {i}" for i in range(300)])  # 30 chunks, 1 ms is too short
        abandoned = set(client._abandoned)
        assert len(abandoned) >= 10 and not client.pending_request  # every chunk in flight, not only the first
        client.timeout = 20_000
        time.sleep(0.5)  # the late answers arrive meanwhile
        assert client.encode(["the dog"]).shape == (1, 32)
        assert client.fetch_all() is None and not client.pending_response


def test_stale_reply_after_a_timeout_is_dropped(tiny_server) -> None:
    with BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out, timeout=1) as client:
        with pytest.raises(TimeoutError):
            client.encode(["the cat"] * 200)  # 1 ms is too short
        client.timeout = 20000
        assert client.encode(["the dog"]).shape == (1, 32)
        time.sleep(0.2)
        assert not client.pending_response


def test_zmq_context_is_released_on_close(tiny_server) -> None:
    client = BertClient(port=tiny_server.config.port, port_out=tiny_server.config.port_out)
    client.close()
    assert client.context.closed
    with pytest.raises(zmq.ZMQError):
        client.sender.send(b"x")
