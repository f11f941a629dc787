"""Fine-tuned heads through a real server: the original's CLASSIFICATION / REGRESSION for the
stock 1.10.0 client, Hugging Face classifiers on ``/predict``, a CrossEncoder on ``/rerank``,
``/v1/rerank``, ``/v2/rerank`` (the Cohere SDK) and ``BertClient.rerank``, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from bert_serving import protocol
from bert_serving.client import BertClient
from bert_serving.errors import UnsupportedTaskError
from bert_serving.model import Encoder
from bert_serving.server.http.app import HttpSettings

from ..classifiers import cross_encoder, hf_classifier
from ..conftest import TINY_BERT
from .conftest import free_ports, run_stock_client, running_server
from .fast_lane import both_answers
from .processes import start_cli, stop, terminate_and_wait, wait_for_line

GOOGLE_CLASSIFIER = ("-tuned_model_dir", str(TINY_BERT / "google-classifier"), "-ckpt_name", "model.ckpt-55",
                     "-pooling_strategy", "CLASSIFICATION", "-num_labels", "3", "-max_seq_len", "16")
QUERY = "the cat"
DOCUMENTS = ["the cat sat on the mat", "hello world", "the quick brown fox", "a dog " * 40, "cat", "first do it"]


@pytest.fixture(scope="module")
def expected_heads() -> dict:
    return dict(np.load(TINY_BERT / "expected_heads.npz"))


@pytest.fixture(scope="module")
def classifier_server():
    port = free_ports(1)[0]
    with running_server(*GOOGLE_CLASSIFIER, "-http_port", str(port)) as server:
        yield server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def reranker(tmp_path_factory) -> Path:
    return cross_encoder(tmp_path_factory.mktemp("heads") / "reranker")


@pytest.fixture(scope="module")
def reranker_server(reranker: Path):
    port = free_ports(1)[0]
    with running_server("-http_port", str(port), "-max_request_texts", "50", "-max_request_bytes", "20000",
                        model_dir=reranker) as server:
        yield server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def cross_encoder_scores(reranker: Path) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(reranker), device="cpu").predict([(QUERY, d) for d in DOCUMENTS], batch_size=32)


def test_the_stock_client_gets_classification_probabilities(classifier_server, expected, expected_heads) -> None:
    server, _ = classifier_server
    out = run_stock_client(server, f"""
        out["probabilities"] = bc.encode({expected["sentences"]!r}).tolist()
        out["single"] = bc.encode(["the cat sat ||| on the mat"]).tolist()
    """)
    probabilities = np.array(out["probabilities"])
    assert probabilities.shape == (10, 3)
    np.testing.assert_allclose(probabilities, expected_heads["classification"], atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    pair = expected["sentences"].index("the cat sat ||| on the mat")
    np.testing.assert_allclose(out["single"][0], expected_heads["classification"][pair], atol=1e-5)


def test_the_stock_client_gets_regression_scores(expected, expected_heads) -> None:
    flags = ("-tuned_model_dir", str(TINY_BERT / "google-regression"), "-ckpt_name", "model.ckpt-21",
             "-pooling_strategy", "REGRESSION", "-max_seq_len", "16")
    with running_server(*flags) as server:
        out = run_stock_client(server, f'out["scores"] = bc.encode({expected["sentences"]!r}).tolist()')
    np.testing.assert_allclose(out["scores"], expected_heads["regression"], atol=1e-5)


def test_the_seeds_command_with_classification_serves_probabilities() -> None:
    port, port_out = free_ports(2)
    proc = start_cli(f"-model_dir={TINY_BERT / 'google'}", f"-tuned_model_dir={TINY_BERT / 'google-finetuned'}/",
                     "-ckpt_name=model.ckpt-343", "-pooling_strategy", "CLASSIFICATION", "-num_labels", "2",
                     "-max_seq_len", "16", "-port", str(port), "-port_out", str(port_out), "-bind", "127.0.0.1")
    try:
        wait_for_line(proc, "ready to serve")
        with BertClient(port=port, port_out=port_out) as bc:
            probabilities = bc.encode(["the cat sat", "the cat sat ||| on the mat"])
            assert bc.server_config["task"] == "classify" and bc.labels == ["LABEL_0", "LABEL_1"]
        terminate_and_wait(proc, port)
    finally:
        stop(proc)
    want = Encoder.load(str(TINY_BERT / "google"), device="cpu", tuned_model_dir=str(TINY_BERT / "google-finetuned"),
                        ckpt_name="model.ckpt-343", pooling_strategy="CLASSIFICATION", num_labels=2, max_seq_len=16)
    np.testing.assert_allclose(probabilities, want.encode(["the cat sat", "the cat sat ||| on the mat"]), atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_our_client_predicts_with_labels_pairs_and_raw_scores(classifier_server, expected_heads, expected) -> None:
    server, base = classifier_server
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        assert bc.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
        scores = bc.predict(expected["sentences"])
        raw = bc.predict(expected["sentences"], raw_scores=True)
        explicit = bc.predict([["the cat sat", "on the mat"], ("the cat sat", "on the mat")])
        with pytest.raises(UnsupportedTaskError, match="classifies.*cannot rerank"):
            bc.rerank("q", ["d"])
    np.testing.assert_allclose(scores, expected_heads["classification"], atol=1e-5)
    np.testing.assert_allclose(raw, expected_heads["classification_logits"], atol=1e-5)
    pair = expected["sentences"].index("the cat sat ||| on the mat")
    np.testing.assert_allclose(explicit, [expected_heads["classification"][pair]] * 2, atol=1e-5)
    body = httpx.post(f"{base}/predict", json={"inputs": [["the cat sat", "on the mat"], ["hello"]]}).json()
    assert [[p["label"] for p in answer] for answer in body][0] == \
        [f"LABEL_{j}" for j in np.argsort(-expected_heads["classification"][pair])]
    np.testing.assert_allclose(sorted(p["score"] for p in body[0]), sorted(expected_heads["classification"][pair]),
                               atol=1e-5)


def test_a_classifier_refuses_what_it_does_not_do_with_a_4xx(classifier_server) -> None:
    _, base = classifier_server
    embeddings = httpx.post(f"{base}/v1/embeddings", json={"input": "x"})
    assert embeddings.status_code == 404 and embeddings.json()["error"]["code"] == "unsupported_task"
    assert "-pooling_strategy" in embeddings.json()["error"]["message"]
    for path, body, shape in (("/rerank", {"query": "q", "texts": ["d"]}, "error"),
                              ("/v1/rerank", {"query": "q", "documents": ["d"]}, "message")):
        answer = httpx.post(base + path, json=body)
        assert answer.status_code == 404 and "cross-encoder" in answer.json()[shape]
    for path, body, shape in (("/embed", {"inputs": "x"}, "error"), ("/v2/embed", {"texts": ["x"]}, "message")):
        answer = httpx.post(base + path, json=body)
        assert answer.status_code == 404 and "-pooling_strategy" in answer.json()[shape]
    assert httpx.post(f"{base}/encode", json={"texts": ["x"]}).json()["status"] == 200  # the original's route: scores
    assert httpx.get(f"{base}/").json()["task"] == "classify"
    paths = set(httpx.get(f"{base}/openapi.json").json()["paths"])  # the schema shows what this server answers
    assert "/predict" in paths and not paths & {"/rerank", "/v1/rerank", "/v1/embeddings", "/embed", "/v2/embed"}
    server, _ = classifier_server
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        with pytest.raises(UnsupportedTaskError, match="classifies.*cannot embed"):
            bc.encode(["x"], precision="int8")  # scores do not quantize


def test_tei_post_root_and_info_follow_the_classifier(classifier_server) -> None:
    _, base = classifier_server
    body = {"inputs": [["the cat sat", "on the mat"], ["hello"]]}
    assert httpx.post(f"{base}/", json=body).json() == httpx.post(f"{base}/predict", json=body).json()
    assert httpx.get(f"{base}/info").json()["model_type"] == {"classifier": {
        "id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1,
                                                                                   "LABEL_2": 2}}}


@pytest.mark.parametrize(("problem_type", "num_labels"), [
    ("single_label_classification", 3), ("multi_label_classification", 3), ("regression", 1)])
def test_hf_classifiers_predict_equals_transformers_pipeline(tmp_path: Path, problem_type, num_labels) -> None:
    from transformers import pipeline

    labels = ["negative", "neutral", "positive"][:num_labels] if num_labels > 1 else None
    folder = hf_classifier(tmp_path / "classifier", num_labels=num_labels, problem_type=problem_type, labels=labels)
    texts = ["the cat sat on the mat", "hello world", "first do it right"]
    classify = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
    want = classify(texts)
    want_pair = classify({"text": "the cat sat", "text_pair": "on the mat"})
    port = free_ports(1)[0]
    with running_server("-http_port", str(port), model_dir=folder):
        base = f"http://127.0.0.1:{port}"
        batch = httpx.post(f"{base}/predict", json={"inputs": [[t] for t in texts]}).json()
        single = httpx.post(f"{base}/predict", json={"inputs": texts[0]}).json()
        pair = httpx.post(f"{base}/predict", json={"inputs": ["the cat sat", "on the mat"]}).json()
        raw = httpx.post(f"{base}/predict", json={"inputs": texts[0], "raw_scores": True}).json()
    for got, answer in [*zip(batch, want), (single, want[0]), (pair, want_pair)]:
        assert [p["label"] for p in got] == [a["label"] for a in answer]
        np.testing.assert_allclose([p["score"] for p in got], [a["score"] for a in answer], atol=1e-5)
    if problem_type == "regression":
        assert raw == single  # a regressor's score is its raw value
    else:
        assert raw != single


def test_rerank_routes_equal_cross_encoder_predict(reranker_server, cross_encoder_scores) -> None:
    server, base = reranker_server
    order = list(np.argsort(-cross_encoder_scores, kind="stable"))
    tei = httpx.post(f"{base}/rerank", json={"query": QUERY, "texts": DOCUMENTS, "return_text": True}).json()
    assert [r["index"] for r in tei] == order and [r["text"] for r in tei] == [DOCUMENTS[i] for i in order]
    np.testing.assert_allclose([r["score"] for r in tei], cross_encoder_scores[order], atol=1e-5)
    for path in ("/v1/rerank", "/v2/rerank"):
        cohere = httpx.post(base + path, json={"query": QUERY, "documents": [{"text": d} for d in DOCUMENTS],
                                               "model": "whatever"}).json()
        assert cohere["model"] == "reranker" and cohere["usage"]["total_tokens"] > len(DOCUMENTS)
        assert [r["index"] for r in cohere["results"]] == order and "document" not in cohere["results"][0]
        np.testing.assert_allclose([r["relevance_score"] for r in cohere["results"]], cross_encoder_scores[order],
                                   atol=1e-5)
    top = httpx.post(f"{base}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2,
                                                "return_documents": True}).json()["results"]
    assert [(r["index"], r["document"]["text"]) for r in top] == [(i, DOCUMENTS[i]) for i in order[:2]]
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        results = bc.rerank(QUERY, DOCUMENTS, top_n=3, return_documents=True)
        everything = bc.rerank(QUERY, DOCUMENTS)
    assert [(r.index, r.document) for r in results] == [(i, DOCUMENTS[i]) for i in order[:3]]
    np.testing.assert_allclose([r.relevance_score for r in everything], cross_encoder_scores[order], atol=1e-5)
    assert everything[0].document is None


def test_llama_index_tei_reranker_and_tei_post_root(reranker_server, cross_encoder_scores) -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    _, base = reranker_server
    order = list(np.argsort(-cross_encoder_scores, kind="stable"))
    reranker = TextEmbeddingInference(base_url=base, top_n=3)  # POST /rerank {"query", "texts"}
    nodes = reranker.postprocess_nodes([NodeWithScore(node=TextNode(text=d), score=0.0) for d in DOCUMENTS],
                                       query_bundle=QueryBundle(QUERY))
    assert [n.node.text for n in nodes] == [DOCUMENTS[i] for i in order[:3]]
    np.testing.assert_allclose([n.score for n in nodes], cross_encoder_scores[order[:3]], atol=1e-5)
    body = {"query": QUERY, "texts": DOCUMENTS}
    assert httpx.post(f"{base}/", json=body).json() == httpx.post(f"{base}/rerank", json=body).json()
    assert httpx.get(f"{base}/info").json()["model_type"] == {"reranker": {"id2label": {"0": "LABEL_0"},
                                                                           "label2id": {"LABEL_0": 0}}}


def test_the_cohere_sdk_works_unchanged(reranker_server, cross_encoder_scores) -> None:
    import cohere

    _, base = reranker_server
    order = list(np.argsort(-cross_encoder_scores, kind="stable"))
    v1 = cohere.Client(api_key="unused", base_url=base).rerank(query=QUERY, documents=DOCUMENTS, top_n=3,
                                                               return_documents=True, model="rerank-english-v3.0")
    assert [r.index for r in v1.results] == order[:3] and v1.results[0].document.text == DOCUMENTS[order[0]]
    np.testing.assert_allclose([r.relevance_score for r in v1.results], cross_encoder_scores[order[:3]], atol=1e-5)
    v2 = cohere.ClientV2(api_key="unused", base_url=base).rerank(model="rerank-v3.5", query=QUERY,
                                                                 documents=DOCUMENTS, top_n=4)
    assert [r.index for r in v2.results] == order[:4]
    np.testing.assert_allclose([r.relevance_score for r in v2.results], cross_encoder_scores[order[:4]], atol=1e-5)


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/v1/rerank", {"query": " ", "documents": ["d"]}, 400, "query: must not be empty or blank"),
    ("/v1/rerank", {"query": "q", "documents": []}, 400, "documents: List should have at least 1 item"),
    ("/v1/rerank", {"query": "q", "documents": ["d"] * 51}, 400, "documents: 51 texts in one request"),
    ("/rerank", {"query": "q", "texts": ["d"] * 51}, 400, "texts: 51 texts in one request"),
    ("/v1/rerank", {"query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": [{"title": "d"}]}, 400, "documents[0]"),
    ("/v1/rerank", {"query": "q", "documents": ["d"], "rank_fields": ["title"]}, 400, "rank_fields"),
    ("/v2/rerank", {"query": "q", "documents": ["d" * 30000]}, 413, "exceeds 20000 bytes"),
    ("/rerank", {"query": "q", "texts": [1, 2]}, 400, "texts[0]"),
    ("/rerank", {"query": "", "texts": ["d"]}, 400, "query"),
    ("/predict", {"inputs": ["a", "b", "c"]}, 400, "a pair holds two texts, not 3"),
    ("/predict", {"inputs": [["a", "b", "c"]]}, 400, "inputs[0] must be [text] or a pair"),
    ("/predict", {"inputs": ["a", "b", "c"]}, 400, "inputs"),  # a pair of three: malformed, not too many texts
    ("/predict", {"inputs": [["a", "b"]] * 51}, 400, "inputs: 51 texts in one request"),
    ("/predict", {"inputs": 5}, 400, "inputs: must be a string, a pair"),
    ("/predict", {"inputs": [[" "]]}, 400, "must not be empty or blank"),
    ("/predict", {"inputs": "x", "raw_scores": "yes"}, 400, "raw_scores"),
])
def test_bad_inputs_get_4xx_in_the_routes_shape_and_the_server_keeps_serving(reranker_server, path, body, status,
                                                                              says) -> None:
    _, base = reranker_server
    answer = httpx.post(base + path, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()
    message = error["error"] if path in ("/predict", "/rerank") else error["message"]
    assert says in message
    if path in ("/predict", "/rerank"):
        assert error["error_type"] == "validation"
    else:
        assert error["code"] == ("payload_too_large" if status == 413 else "invalid_request")
    assert httpx.post(f"{base}/rerank", json={"query": "q", "texts": ["d"]}).status_code == 200


def test_bad_zeromq_task_requests_get_error_replies(reranker_server) -> None:
    server, _ = reranker_server
    with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=30_000) as bc:
        for payload, says in ((protocol.rerank_payload(" ", ["d"]), "query"),
                              (json.dumps({"task": "rerank", "query": "q", "documents": []}).encode(), "documents"),
                              (protocol.predict_payload([["a", "b", "c"]]), "texts[0]"),
                              (protocol.predict_payload([]), "must not be empty")):
            with bc._receiving(30_000):
                reply = bc._recv(bc._send(payload))
            assert reply.error is not None and says in reply.error.message
        assert len(bc.rerank("q", ["d", "e"])) == 2  # still serving


def test_task_and_counters_in_metrics_status_and_dashboard(reranker_server) -> None:
    server, base = reranker_server
    before = server.status(with_statistic=True)["statistic"]
    httpx.post(f"{base}/rerank", json={"query": "q", "texts": ["a", "b", "c"]})
    httpx.post(f"{base}/predict", json={"inputs": [["a"], ["b", "c"]]})
    statistic = server.status(with_statistic=True)["statistic"]
    assert statistic["num_reranked_pairs"] == before["num_reranked_pairs"] + 3
    assert statistic["num_predictions"] == before["num_predictions"] + 2
    metrics = httpx.get(f"{base}/metrics").text
    assert 'bert_serving_model_info{name="reranker",task="rerank"} 1.0' in metrics
    assert f"bert_serving_reranked_pairs_total {float(statistic['num_reranked_pairs'])}" in metrics
    assert f"bert_serving_predictions_total {float(statistic['num_predictions'])}" in metrics
    view = httpx.get(f"{base}/dashboard/data").json()
    assert view["model"]["task"] == "rerank" and view["model"]["activation"] == "sigmoid"
    assert view["reranked_pairs"] == statistic["num_reranked_pairs"]
    schema = httpx.get(f"{base}/openapi.json").json()
    assert {"/predict", "/rerank", "/v1/rerank", "/v2/rerank"} <= set(schema["paths"])


def test_the_fast_lane_scores_exactly_as_fastapi_would(reranker_server) -> None:
    """/predict and the rerank routes skip FastAPI's per-request machinery for bodies that
    validate (`http/fast_lane.py`): the same answers as FastAPI's, byte for byte (Cohere's random
    id aside), and errors raised by a route itself still in the route's shape."""
    documents = [{"text": d} for d in DOCUMENTS]
    bodies = [("/predict", {"inputs": [QUERY, DOCUMENTS[0]]}),
              ("/predict", {"inputs": [[QUERY, d] for d in DOCUMENTS[:3]], "raw_scores": True}),
              ("/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True}),
              ("/v1/rerank", {"query": QUERY, "documents": documents, "top_n": 2, "return_documents": True}),
              ("/v2/rerank", {"query": QUERY, "documents": DOCUMENTS}),
              ("/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "rank_fields": ["title"]}),  # the route refuses
              ("/rerank", {"query": QUERY, "texts": []}),  # from here on, not valid: FastAPI answers either way
              ("/predict", {"inputs": 3})]
    fast, slow, passed_on = both_answers(reranker_server[0], HttpSettings(max_request_texts=50, max_request_bytes=20000),
                                         bodies)
    assert [a[0] for a in fast][:5] == [200] * 5 and all(a[0] >= 400 for a in fast[5:])
    assert passed_on == [False] * 6 + [True] * 2
    assert b"rank_fields" in fast[5][2]

    def without_random_id(answer):
        status, headers, content = answer
        body = json.loads(content)
        return status, headers, body.pop("id", None) is not None if isinstance(body, dict) else None, body

    assert [without_random_id(a) for a in fast] == [without_random_id(a) for a in slow]
