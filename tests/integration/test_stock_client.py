"""The unmodified bert-serving-client 1.10.0 from PyPI against our server."""

from __future__ import annotations

import numpy as np
import pytest

from bert_serving.model import Encoder

from ..conftest import TINY_BERT
from .conftest import run_stock_client

SENTENCES = ["First do it", "then do it right", "then do it better", "the cat sat ||| on the mat"]


@pytest.fixture(scope="module")
def reference():
    return Encoder.load(str(TINY_BERT / "google"), device="cpu", max_seq_len=16, show_tokens=True)


def test_it_imports_the_stock_client(tiny_server) -> None:
    out = run_stock_client(tiny_server, """
        import bert_serving.client as c
        out["file"] = c.__file__
        out["version"] = c.__version__
    """)
    assert "stock-client" in out["file"] and out["version"] == "1.10.0"


def test_plain_tokenized_and_tokens(tiny_server, reference) -> None:
    out = run_stock_client(tiny_server, f"""
        out["plain"] = bc.encode({SENTENCES!r}).tolist()
        out["tokenized"] = bc.encode([["first", "do", "it"], ["the", "cat", "|||", "mat"]], is_tokenized=True).tolist()
        vectors, tokens = bc.encode(["Hello, World!"], show_tokens=True)
        out["tokens"] = tokens
        out["with_tokens"] = vectors.tolist()
    """)
    np.testing.assert_allclose(out["plain"], reference.encode(SENTENCES), atol=1e-5)
    want = reference.encode([["first", "do", "it"], ["the", "cat", "|||", "mat"]], is_tokenized=True)
    np.testing.assert_allclose(out["tokenized"], want, atol=1e-5)
    assert out["tokens"] == [["[CLS]", "hello", ",", "world", "!", "[SEP]"]]
    np.testing.assert_allclose(out["with_tokens"], reference.encode(["Hello, World!"]), atol=1e-5)


def test_non_blocking_fetch_all_and_encode_async(tiny_server, reference) -> None:
    out = run_stock_client(tiny_server, f"""
        for s in {SENTENCES!r}:
            bc.encode([s], blocking=False)
        out["fetch_all"] = np.concatenate(bc.fetch_all()).tolist()
        out["fetch_all_concat"] = bc.fetch_all() is None
        results = list(bc.encode_async(iter([[s] for s in {SENTENCES!r}]), max_num_batch=4))
        out["async_ids"] = sorted(r.id for r in results)
        out["async"] = [r.embedding.tolist() for r in sorted(results, key=lambda r: r.id)]
    """)
    want = reference.encode(SENTENCES)
    np.testing.assert_allclose(out["fetch_all"], want, atol=1e-5)
    assert out["fetch_all_concat"] is True  # nothing pending any more
    assert len(out["async_ids"]) == 4
    np.testing.assert_allclose(np.concatenate(out["async"]), want, atol=1e-5)


def test_server_config_and_status(tiny_server) -> None:
    out = run_stock_client(tiny_server, """
        out["config"] = bc.server_config
        bc.encode(["a sentence"])
        out["status"] = bc.server_status
    """)
    config = out["config"]
    assert config["server_version"] == "1.10.0"
    assert config["bert_serving_version"].startswith("2.")
    assert config["max_seq_len"] == 16 and config["show_tokens_to_client"] is True
    assert config["pooling_strategy"] == 2 and config["pooling_layer"] == [-2]
    statistic = out["status"]["statistic"]
    for key in ("num_data_request", "num_total_seq", "num_sys_request", "num_total_request",
                "num_total_client", "num_active_client", "avg_request_per_client", "avg_size_per_request"):
        assert key in statistic
    assert statistic["num_data_request"] >= 1


def test_an_unservable_request_raises_instead_of_hanging(tiny_server, reference) -> None:
    out = run_stock_client(tiny_server, """
        # bypass the client's own checks: an int among the texts
        bc.receiver.setsockopt(__import__("zmq").RCVTIMEO, 10000)
        req_id = bc._send(b'["fine", 3]', 2)
        try:
            bc._recv_ndarray(req_id)
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"
        out["next"] = bc.encode(["then do it right"]).tolist()
    """)
    assert "texts[1] must be a string" in out["error"]  # the server's message reaches the user
    np.testing.assert_allclose(out["next"], reference.encode(["then do it right"]), atol=1e-5)
