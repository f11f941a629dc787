"""Several models in one server (``-extra_model``): the default MiniLM embedder, a tiny CrossEncoder
reranker and a tiny 3-label classifier, each with its own replica, behind one set of ports. Every
client picks its model by name (or gets the default one) and gets what a one-model server (or the
model's own library) gives; unknown names are a 404 listing the served ones; under mixed
concurrent load every answer is right. One server for the whole module: it is the costly part."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.errors import ConfigurationError, ModelNotFoundError
from bert_serving.model import Encoder
from bert_serving.server import BertServer, get_args_parser

from ..classifiers import cross_encoder, hf_classifier
from .conftest import Concurrently, free_ports, run_stock_client, running_server

MINILM = "all-MiniLM-L6-v2"
TEXTS = ["What is Deep Learning?", "Deep learning is a kind of machine learning.", "Cheese is made from milk."]
QUERY = "the cat"
DOCUMENTS = ["the cat sat on the mat", "hello world", "the quick brown fox", "cat", "first do it"]
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"rerank": cross_encoder(root / "reranker", seed=1),
            "classify": hf_classifier(root / "classifier", num_labels=3, labels=LABELS, seed=2)}


@pytest.fixture(scope="module")
def server(folders):
    port = free_ports(1)[0]
    with running_server("-http_port", str(port), "-num_intake", "1", "-num_http", "1",
                        "-extra_model", f"rerank={folders['rerank']},max_seq_len=64",
                        "-extra_model", f"classify={folders['classify']},num_worker=1", model_dir=None) as server:
        yield server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def minilm_vectors() -> np.ndarray:
    """The default model's vectors in process: what a one-model server gives."""
    return Encoder.load(None, device="cpu").encode(TEXTS)


@pytest.fixture(scope="module")
def rerank_scores(folders) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(folders["rerank"]), device="cpu").predict([(QUERY, d) for d in DOCUMENTS])


def test_the_stock_client_and_openai_get_the_default_models_vectors(server, minilm_vectors) -> None:
    bert, base = server
    out = run_stock_client(bert, f"out['vectors'] = bc.encode({TEXTS!r}).tolist()")
    np.testing.assert_allclose(out["vectors"], minilm_vectors, atol=1e-5)
    body = httpx.post(base + "/v1/embeddings", json={"input": TEXTS, "model": MINILM}, timeout=60).json()
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], minilm_vectors, atol=1e-5)
    assert body["model"] == MINILM
    unnamed = httpx.post(base + "/v1/embeddings", json={"input": TEXTS}, timeout=60).json()  # the only embedder
    np.testing.assert_allclose([d["embedding"] for d in unnamed["data"]], minilm_vectors, atol=1e-5)


def test_cohere_rerank_orders_as_cross_encoder_predict(server, rerank_scores) -> None:
    import cohere

    order = list(np.argsort(-rerank_scores, kind="stable"))
    client = cohere.ClientV2(api_key="unused", base_url=server[1])
    results = client.rerank(model="rerank", query=QUERY, documents=DOCUMENTS).results
    assert [r.index for r in results] == order
    np.testing.assert_allclose([r.relevance_score for r in results], rerank_scores[order], atol=1e-5)
    tei = httpx.post(server[1] + "/rerank", json={"query": QUERY, "texts": DOCUMENTS}).json()  # the only reranker
    assert [r["index"] for r in tei] == order


def test_predict_with_model_equals_the_transformers_pipeline(server, folders) -> None:
    from transformers import pipeline

    want = pipeline("text-classification", model=str(folders["classify"]), top_k=None, device="cpu")(TEXTS)
    got = httpx.post(server[1] + "/predict", json={"inputs": [[t] for t in TEXTS], "model": "classify"}).json()
    for answer, expected in zip(got, want):
        assert [p["label"] for p in answer] == [e["label"] for e in expected]
        np.testing.assert_allclose([p["score"] for p in answer], [e["score"] for e in expected], atol=1e-5)
    # two models can /predict (the classifier, the reranker): naming none is a 400 naming them
    ambiguous = httpx.post(server[1] + "/predict", json={"inputs": TEXTS[0]})
    assert ambiguous.status_code == 400 and "'rerank'" in ambiguous.text and "'classify'" in ambiguous.text


def test_models_are_listed_and_an_unknown_one_is_a_404_naming_them(server) -> None:
    bert, base = server
    listed = httpx.get(base + "/v1/models").json()
    assert [m["id"] for m in listed["data"]] == [MINILM, "rerank", "classify"]
    missing = httpx.post(base + "/v1/embeddings", json={"input": ["a"], "model": "text-embedding-3-small"})
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert all(f"'{name}'" in error["message"] for name in (MINILM, "rerank", "classify"))
    assert httpx.get(base + "/v1/models/nope").status_code == 404
    with BertClient(port=bert.config.port, port_out=bert.config.port_out, model="nope") as bc:
        with pytest.raises(ModelNotFoundError, match="'rerank'"):
            bc.encode(["a"])


def test_our_client_picks_a_model_over_zeromq(server, minilm_vectors, rerank_scores) -> None:
    bert, _ = server
    with BertClient(port=bert.config.port, port_out=bert.config.port_out) as bc:
        np.testing.assert_allclose(bc.encode(TEXTS), minilm_vectors, atol=1e-5)
        ranked = bc.rerank(QUERY, DOCUMENTS, model="rerank")
        assert [r.index for r in ranked] == list(np.argsort(-rerank_scores, kind="stable"))
        assert bc.predict(TEXTS, model="classify").shape == (3, 3)
    with BertClient(port=bert.config.port, port_out=bert.config.port_out, model="classify") as bc:
        assert bc.labels == LABELS


def test_operations_show_every_model(server) -> None:
    bert, base = server
    status = httpx.get(base + "/status/server").json()
    assert status["default_model"] == MINILM and list(status["models"]) == [MINILM, "rerank", "classify"]
    assert status["models"]["rerank"]["task"] == "rerank" and status["models"]["rerank"]["max_seq_len"] == 64
    assert set(status["statistic"]["models"]) == {MINILM, "rerank", "classify"}
    info = httpx.get(base + "/info", params={"model": "classify"}).json()
    assert info["model_id"] == "classify" and "classifier" in info["model_type"]
    metrics = httpx.get(base + "/metrics").text
    for name in (MINILM, "rerank", "classify"):
        assert f'bert_serving_model_completed_requests_total{{model="{name}"}}' in metrics
    ready = httpx.get(base + "/ready").json()
    assert ready["ready"] and set(ready["workers"]) == {"0", "rerank/0", "classify/0"}


def test_mixed_concurrent_load_gets_every_answer_right(server, minilm_vectors, rerank_scores) -> None:
    """16 embedding clients (ZeroMQ and HTTP) and 4 rerank clients at once: rows of different
    models never share a batch, and every client gets its own model's answer."""
    bert, base = server
    order = list(np.argsort(-rerank_scores, kind="stable"))

    def work(i: int) -> None:
        for _ in range(3):
            if i >= 16:  # a reranker client
                body = httpx.post(base + "/v2/rerank", json={"model": "rerank", "query": QUERY,
                                                             "documents": DOCUMENTS}, timeout=60).json()
                assert [r["index"] for r in body["results"]] == order
            elif i % 2:
                with BertClient(port=bert.config.port, port_out=bert.config.port_out, timeout=60_000) as bc:
                    np.testing.assert_allclose(bc.encode(TEXTS[i % 3:]), minilm_vectors[i % 3:], atol=1e-5)
            else:
                body = httpx.post(base + "/v1/embeddings", json={"input": TEXTS[i % 3:], "model": MINILM},
                                  timeout=60).json()
                np.testing.assert_allclose([d["embedding"] for d in body["data"]], minilm_vectors[i % 3:], atol=1e-5)

    Concurrently(work, 20).start().join()


def test_an_extra_model_that_cannot_load_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    args = get_args_parser().parse_args(["-extra_model", f"broken={tmp_path / 'nowhere'}", "-port", "1",
                                         "-port_out", "2"])
    with pytest.raises(ConfigurationError, match="-extra_model broken"):
        BertServer(args)
