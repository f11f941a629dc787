"""The HTTP API against a real server: a real HTTP client and the openai SDK."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.server.http.app import HttpSettings

from .conftest import free_ports, running_server
from .fast_lane import both_answers

SENTENCES = ["First do it", "then do it right", "then do it better", "the cat sat ||| on the mat"]
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def http_server():
    port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(port), "-max_request_texts", "50",
                        "-max_request_bytes", "20000", "-http_token_ids") as server:
        yield server, f"http://127.0.0.1:{port}"


@pytest.fixture
def http(http_server):
    with httpx.Client(base_url=http_server[1], timeout=60) as client:
        yield client


@pytest.fixture
def zmq_vectors(http_server):
    server, _ = http_server
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        yield bc.encode


def test_encode_route_equals_zeromq(http, zmq_vectors) -> None:
    response = http.post("/encode", json={"id": "abc", "texts": SENTENCES})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "abc" and body["status"] == 200
    np.testing.assert_allclose(body["result"], zmq_vectors(SENTENCES), atol=1e-6)
    tokenized = http.post("/encode", json={"id": 2, "texts": [["the", "cat"]], "is_tokenized": True}).json()
    np.testing.assert_allclose(tokenized["result"], zmq_vectors([["the", "cat"]], is_tokenized=True), atol=1e-6)


def test_openai_route_equals_zeromq_in_float_and_base64(http, zmq_vectors) -> None:
    want = zmq_vectors(SENTENCES)
    for path in ("/v1/embeddings", "/embeddings"):
        body = http.post(path, json={"input": SENTENCES, "model": "anything"}).json()
        assert body["object"] == "list" and body["model"] == "google"
        assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
        assert all(d["object"] == "embedding" for d in body["data"])
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], want, atol=1e-6)
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(SENTENCES)
    encoded = http.post("/v1/embeddings", json={"input": SENTENCES, "encoding_format": "base64"}).json()
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in encoded["data"]]
    np.testing.assert_allclose(decoded, want, atol=1e-6)
    single = http.post("/v1/embeddings", json={"input": "First do it"}).json()
    np.testing.assert_allclose(single["data"][0]["embedding"], want[0], atol=1e-6)


def test_openai_token_ids_and_dimensions(http, zmq_vectors) -> None:
    ids = http.post("/v1/embeddings", json={"input": [[78, 25]]}).json()  # word-piece ids of "the", "cat"
    tokens = http.post("/v1/embeddings", json={"input": [78, 25]}).json()
    assert ids["data"][0]["embedding"] == tokens["data"][0]["embedding"]
    short = http.post("/v1/embeddings", json={"input": SENTENCES, "dimensions": 8}).json()
    vectors = np.array([d["embedding"] for d in short["data"]])
    full = zmq_vectors(SENTENCES)[:, :8]
    np.testing.assert_allclose(vectors, full / np.linalg.norm(full, axis=1, keepdims=True), atol=1e-5)


def test_the_openai_sdk_works_unchanged(http_server, zmq_vectors) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{http_server[1]}/v1", api_key="unused", max_retries=0)
    response = client.embeddings.create(input=SENTENCES, model="google")  # the SDK asks for base64
    np.testing.assert_allclose([d.embedding for d in response.data], zmq_vectors(SENTENCES), atol=1e-6)
    assert response.usage.total_tokens > 0
    as_float = client.embeddings.create(input="First do it", model="google", encoding_format="float")
    np.testing.assert_allclose(as_float.data[0].embedding, zmq_vectors(["First do it"])[0], atol=1e-6)
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(input=[], model="google")
    assert info.value.status_code == 400 and info.value.body["param"] == "input"
    assert info.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize("path, payload, status, code, fragment", [
    ("/encode", {"id": 1, "texts": ["ok", "  "]}, 400, "invalid_request", "texts[1]: must not be empty or blank"),
    ("/encode", {"id": 1, "texts": []}, 400, "invalid_request", "texts: List should have at least 1 item"),
    ("/encode", {"id": 1}, 400, "invalid_request", "texts: Field required"),
    ("/encode", {"id": 1, "texts": [["the", False]], "is_tokenized": True}, 400, "invalid_request", "texts[0][1]"),
    ("/encode", {"id": 1, "texts": ["a"] * 51}, 400, "invalid_request", "51 texts in one request; this server takes"
                                                                          " at most 50 (-max_request_texts)"),
    ("/encode", {"id": 1, "texts": ["a" * 30000]}, 413, "payload_too_large", "exceeds 20000 bytes"),
    ("/v1/embeddings", {"input": []}, 400, "invalid_request", "input"),
    ("/v1/embeddings", {"input": ""}, 400, "invalid_request", "input: must not be empty or blank"),
    ("/v1/embeddings", {"input": 3.5}, 400, "invalid_request", "input: must be a string, a list of strings, a list"),
    ("/v1/embeddings", {"input": [1, "a"]}, 400, "invalid_request", "input[1]: must be an integer"),
    ("/encode", {"texts": "one text"}, 400, "invalid_request", "texts: must be a list of texts, or a list of token"),
    ("/v1/embeddings", {"input": [[True]]}, 400, "invalid_request", "input"),
    ("/v1/embeddings", {"input": [[1, 99999]]}, 400, "invalid_request", "input[0][1]: Input should be less than 96"),
    ("/v1/embeddings", {"input": "x", "dimensions": 33}, 400, "invalid_request", "dimensions: Input should be less"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 400, "invalid_request", "dimensions"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 400, "invalid_request", "encoding_format"),
    ("/v1/embeddings", {"input": ["a"] * 51}, 400, "invalid_request", "51 texts in one request"),
    ("/v1/embeddings", {"input": "x", "prompt_name": "query"}, 400, "invalid_request",
     "prompt_name: 'query' is not one of this model's prompts (none: it has no prompts)"),
    ("/encode", {"texts": ["x"], "prompt_name": "query"}, 400, "invalid_request", "'query' is not one of this model's"),
])
def test_errors_have_their_documented_status_and_body(http, path, payload, status, code, fragment) -> None:
    response = http.post(path, json=payload)
    assert response.status_code == status
    body = response.json()
    if path == "/encode":
        assert body["status"] == status and body["code"] == code and fragment in body["description"]
        assert body["type"].endswith("Error")
    else:
        error = body["error"]
        assert error["code"] == code and fragment in error["message"] or fragment == error["param"]
        assert error["type"] == ("invalid_request_error" if status in (400, 413) else error["type"])
        assert set(error) == {"message", "type", "param", "code"}


def test_a_validation_error_names_the_one_problem_found(http) -> None:
    for path, payload in [("/v1/embeddings", {"input": 3.5}), ("/v1/embeddings", {"input": {"text": "x"}}),
                          ("/v1/embeddings", {"input": ["fine", 7]}), ("/encode", {"texts": [3]}),
                          ("/v1/embeddings", {"input": [[1, 2], "x"]})]:
        response = http.post(path, json=payload)
        assert response.status_code == 400
        message = response.json()["error"]["message"] if path != "/encode" else response.json()["description"]
        assert ";" not in message, message  # one problem, not one per member of the input union
    two = http.post("/encode", json={"texts": ["", " ", "ok"]}).json()["description"]
    assert two == "texts[0]: must not be empty or blank (and 1 more problem)"


def test_malformed_json_and_chunked_oversized_bodies(http) -> None:
    response = http.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["message"].startswith("the body is not valid JSON (Expecting property name") and not error["param"]
    # curl -d without -H 'content-type: application/json': a form body, though its text is JSON
    form = {"content-type": "application/x-www-form-urlencoded"}
    response = http.post("/encode", content=b'{"texts": ["x"]}', headers=form)
    assert response.status_code == 400
    assert response.json()["description"] == "the body must be a JSON object, sent with Content-Type: application/json"
    response = http.post("/encode", content=b"\xff\xfe\x07", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["description"]
    assert http.get("/nowhere").json() == {"description": "Not Found", "type": "HTTPException", "code": "http_404",
                                           "status": 404}

    def chunks():
        yield b'{"input": ["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]}'

    before = http.get("/status/server").json()["statistic"]["errors"].get("payload_too_large", 0)
    response = http.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    response = http.post("/encode", json={"id": 1, "texts": ["a" * 30000]})  # announced too long: never read
    assert response.status_code == 413
    # refused before the pipeline saw them, and counted all the same
    assert http.get("/status/server").json()["statistic"]["errors"]["payload_too_large"] == before + 2


def test_status_health_ready_docs_and_schema(http) -> None:
    status = http.get("/status/server").json()
    assert status["server_version"] == "1.10.0" and "statistic" in status
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    schema = http.get("/openapi.json").json()
    assert {"/encode", "/v1/embeddings", "/embeddings", "/health", "/ready", "/metrics"} <= set(schema["paths"])
    assert "400" in schema["paths"]["/v1/embeddings"]["post"]["responses"]
    docs = http.get("/docs")
    assert docs.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert http.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert http.options("/encode", headers={"Origin": "http://x.org", "Access-Control-Request-Method": "POST"}
                        ).headers["access-control-allow-origin"] in ("*", "http://x.org")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_move_with_traffic(http) -> None:
    before = http.get("/metrics").text
    http.post("/encode", json={"id": 1, "texts": SENTENCES})
    http.post("/encode", json={"id": 1, "texts": [" "]})
    after = http.get("/metrics").text
    assert _metric(after, 'bert_serving_requests_total{channel="http"}') == \
        _metric(before, 'bert_serving_requests_total{channel="http"}') + 2
    assert _metric(after, "bert_serving_sentences_total") == _metric(before, "bert_serving_sentences_total") + 4
    assert _metric(after, "bert_serving_tokens_total") > _metric(before, "bert_serving_tokens_total")
    assert _metric(after, "bert_serving_forward_passes_total") > _metric(before, "bert_serving_forward_passes_total")
    assert _metric(after, 'bert_serving_errors_total{code="invalid_request"}') >= 1
    for name in ('bert_serving_latency_seconds_count{phase="inference"}', "bert_serving_batch_size_count",
                 'bert_serving_latency_seconds_count{phase="queue"}', 'bert_serving_latency_seconds_count{phase="tokenize"}'):
        assert _metric(after, name) > _metric(before, name)
    assert "bert_serving_queue_depth" in after and _metric(after, "bert_serving_ready") == 1


def test_sixty_four_concurrent_requests_all_succeed(http_server, zmq_vectors) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=http_server[1], timeout=60) as client:
            return await asyncio.gather(*(
                client.post("/v1/embeddings", json={"input": [SENTENCES[i % 4], f"request number {i}"]})
                for i in range(64)
            ))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 64
    for i, response in enumerate(responses):
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], zmq_vectors([SENTENCES[i % 4]])[0],
                                   atol=1e-5)


def test_api_key_guards_inference_routes() -> None:
    port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(port), "-api_key", KEY):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            missing = http.post("/v1/embeddings", json={"input": "x"})
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            assert missing.json()["error"]["type"] == "authentication_error"
            wrong = http.post("/encode", json={"texts": ["x"]}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
            good = http.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": f"Bearer {KEY}"})
            assert good.status_code == 200
            assert http.get("/status/server").status_code == 401
            assert http.get("/health").status_code == 200 and http.get("/metrics").status_code == 200
            # TEI's, Cohere's and OpenAI's other routes: refused in each one's shape, and their SDKs send the key
            for method, path, body, shape in (("POST", "/embed", {"inputs": "x"}, "error_type"),
                                              ("POST", "/", {"inputs": "x"}, "error_type"),
                                              ("POST", "/tokenize", {"inputs": "x"}, "error_type"),
                                              ("GET", "/info", None, "error_type"),
                                              ("POST", "/v2/embed", {"texts": ["x"]}, "message"),
                                              ("GET", "/v1/models", None, "error")):
                answer = http.request(method, path, json=body)
                assert answer.status_code == 401 and shape in answer.json(), path
        import cohere
        from openai import OpenAI

        base = f"http://127.0.0.1:{port}"
        assert cohere.ClientV2(api_key=KEY, base_url=base).embed(
            model="m", input_type="search_query", texts=["x"], embedding_types=["int8"]).embeddings.int8
        assert [m.id for m in OpenAI(base_url=f"{base}/v1", api_key=KEY).models.list()] == ["google"]


HELLO_WORLD_CL100K = [15339, 1917]  # "hello world" in tiktoken's cl100k_base: what LangChain sends by default


class _Cl100kStandIn:
    """tiktoken's cl100k_base for the one text used here: the real file is downloaded at run
    time, which cannot work offline. LangChain itself builds and sends the request."""

    def encode_ordinary(self, text: str) -> list[int]:
        assert text == "hello world"
        return list(HELLO_WORLD_CL100K)

    encode = encode_ordinary


def test_token_ids_are_opt_in_and_langchain_defaults_get_a_400_saying_why(monkeypatch) -> None:
    port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-http_port", str(port)) as server:
        base = f"http://127.0.0.1:{port}"
        body = {"input": [HELLO_WORLD_CL100K], "model": "text-embedding-ada-002", "encoding_format": "base64"}
        refused = httpx.post(f"{base}/v1/embeddings", json=body)  # exactly LangChain's default request
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "input" and error["type"] == "invalid_request_error"
        assert "-http_token_ids" in error["message"] and "check_embedding_ctx_length=False" in error["message"]
        assert httpx.post(f"{base}/v1/embeddings", json={"input": [101, 102]}).status_code == 400

        import tiktoken
        from langchain_openai import OpenAIEmbeddings
        from openai import BadRequestError

        monkeypatch.setattr(tiktoken, "encoding_for_model", lambda name: _Cl100kStandIn())
        default = OpenAIEmbeddings(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with pytest.raises(BadRequestError, match="check_embedding_ctx_length=False"):
            default.embed_documents(["hello world"])
        fixed = OpenAIEmbeddings(base_url=f"{base}/v1", api_key="unused", max_retries=0,
                                 check_embedding_ctx_length=False)
        with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
            np.testing.assert_allclose(fixed.embed_documents(["hello world"]), bc.encode(["hello world"]), atol=1e-6)
        statistic = server.sync_stats().statistic()
    assert statistic["num_data_request"] == 5 and statistic["num_completed_request"] == 2  # the 3 refused are not run


FAST_LANE_BODIES = [
    ("/v1/embeddings", {"input": SENTENCES, "model": "m"}),
    ("/v1/embeddings", {"input": "one text", "encoding_format": "base64", "user": "u"}),
    ("/embeddings", {"input": [[5, 6, 7]], "dimensions": 8}),
    ("/encode", {"id": "i", "texts": SENTENCES[:2]}),
    ("/encode", {"id": 7, "texts": [["the", "cat"]], "is_tokenized": True}),
    ("/v1/embeddings", {"input": []}),  # from here on, not valid: FastAPI answers either way
    ("/v1/embeddings", {"input": "x", "dimensions": "8"}),
    ("/v1/embeddings", {"input": 3.5}),
    ("/v1/embeddings", {"input": "x", "dimensions": 33}),
    ("/encode", {"texts": [3]}),
    ("/encode", ["not", "an", "object"]),
]


def test_the_fast_lane_answers_exactly_as_fastapi_would(http_server) -> None:
    """The hot routes skip FastAPI's per-request machinery (`http/fast_lane.py`) for bodies that
    validate; the same app without it must give the same status, headers and bytes, for valid
    bodies as for invalid ones (which it leaves to FastAPI)."""
    settings = HttpSettings(max_request_texts=50, max_request_bytes=20000, token_ids=True)
    fast, slow, passed_on = both_answers(http_server[0], settings, FAST_LANE_BODIES)
    assert [a[0] for a in fast][:5] == [200] * 5 and all(a[0] >= 400 for a in fast[5:])
    assert passed_on == [False] * 5 + [True] * (len(FAST_LANE_BODIES) - 5)  # the valid ones never reach FastAPI
    assert all(("access-control-allow-origin", "*") in a[1] for a in fast)  # CORS still applies
    assert fast == slow
