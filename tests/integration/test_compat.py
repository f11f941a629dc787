"""Clients written for text-embeddings-inference, Cohere and OpenAI, unchanged, against a real
server: each gets the vectors ``/v1/embeddings`` gives. And TEI's other routes (``/tokenize``,
``/decode``, ``/info``, ``/embed_all``), quantized vectors over both edges, OpenAI's model list."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.quantization import quantize
from bert_serving.server.http.app import HttpSettings

from .conftest import free_ports, running_server
from .fast_lane import both_answers

TEXTS = ["What is Deep Learning?", "Deep learning is a kind of machine learning.", "Cheese is made from milk.",
         "The cat sat on the mat", "naïve café, 東京!"]
MINILM = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm_server():
    port = free_ports(1)[0]
    with running_server("-http_port", str(port), "-max_request_texts", "50", model_dir=None) as server:
        yield server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def openai_vectors(minilm_server) -> np.ndarray:
    """What ``/v1/embeddings`` gives for `TEXTS`: the vectors every other client must get."""
    body = httpx.post(minilm_server[1] + "/v1/embeddings", json={"input": TEXTS}, timeout=60).json()
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


@pytest.fixture
def hub_online(monkeypatch):
    """huggingface_hub refuses every URL, localhost too, under HF_HUB_OFFLINE (as `make test` runs)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_llama_index_text_embeddings_inference_gets_the_openai_vectors(minilm_server, openai_vectors) -> None:
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    embedder = TextEmbeddingsInference(model_name=MINILM, base_url=minilm_server[1], embed_batch_size=2)
    np.testing.assert_allclose(embedder.get_text_embedding_batch(TEXTS), openai_vectors, atol=1e-6)
    np.testing.assert_allclose(embedder.get_query_embedding(TEXTS[0]), openai_vectors[0], atol=1e-6)


def test_huggingface_hub_feature_extraction_gets_the_openai_vectors(minilm_server, openai_vectors, hub_online) -> None:
    from huggingface_hub import InferenceClient

    client = InferenceClient(base_url=minilm_server[1])  # POST / {"inputs": ...}: TEI's catch-all
    vectors = client.feature_extraction(TEXTS)
    assert vectors.shape == (5, 384)
    np.testing.assert_allclose(vectors, openai_vectors, atol=1e-6)
    np.testing.assert_allclose(client.feature_extraction(TEXTS[1], normalize=False), openai_vectors[1:2], atol=1e-6)
    short = client.feature_extraction(TEXTS, dimensions=64)
    want = openai_vectors[:, :64] / np.linalg.norm(openai_vectors[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(short, want, atol=1e-6)


def test_haystack_tei_embedders_get_the_openai_vectors(minilm_server, openai_vectors, hub_online) -> None:
    from haystack import Document
    from haystack_integrations.components.embedders.huggingface_api import (
        HuggingFaceAPIDocumentEmbedder,
        HuggingFaceAPITextEmbedder,
    )

    params = {"api_type": "text_embeddings_inference", "api_params": {"url": minilm_server[1]}}
    embedding = HuggingFaceAPITextEmbedder(**params).run(text=TEXTS[0])["embedding"]  # normalize=False, truncate
    np.testing.assert_allclose(embedding, openai_vectors[0], atol=1e-6)
    documents = HuggingFaceAPIDocumentEmbedder(**params, batch_size=2).run(
        documents=[Document(content=t) for t in TEXTS])["documents"]
    np.testing.assert_allclose([d.embedding for d in documents], openai_vectors, atol=1e-6)


def test_cohere_v2_embed_gets_every_embedding_type(minilm_server, openai_vectors) -> None:
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=minilm_server[1])
    types = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    response = client.embed(model="embed-v4.0", input_type="search_document", texts=TEXTS, embedding_types=types)
    embeddings = response.embeddings
    floats = np.array(embeddings.float_, dtype=np.float32)
    np.testing.assert_allclose(floats, openai_vectors, atol=1e-6)
    assert response.texts == TEXTS and response.meta.billed_units.input_tokens > len(TEXTS)
    for kind in ("int8", "uint8", "binary", "ubinary"):  # computed on the server from those floats
        np.testing.assert_array_equal(getattr(embeddings, kind), quantize(floats, kind))
    assert np.array(embeddings.ubinary).shape == (5, 48) and np.array(embeddings.int8).shape == (5, 384)
    decoded = [np.frombuffer(base64.b64decode(b), dtype="<f4") for b in embeddings.base64]
    np.testing.assert_array_equal(decoded, floats)
    cut = client.embed(model="m", input_type="search_query", texts=TEXTS[:2], output_dimension=32,
                       embedding_types=["float"]).embeddings.float_
    want = openai_vectors[:2, :32] / np.linalg.norm(openai_vectors[:2, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, want, atol=1e-6)


def test_cohere_v1_embed_answers_floats_or_types(minilm_server, openai_vectors) -> None:
    import cohere

    client = cohere.Client(api_key="unused", base_url=minilm_server[1])
    floats = client.embed(texts=TEXTS, model="embed-english-v3.0", input_type="search_query")
    assert floats.response_type == "embeddings_floats"
    np.testing.assert_allclose(floats.embeddings, openai_vectors, atol=1e-6)
    by_type = client.embed(texts=TEXTS, model="m", input_type="clustering", embedding_types=["ubinary"])
    assert by_type.response_type == "embeddings_by_type"
    np.testing.assert_array_equal(by_type.embeddings.ubinary, quantize(openai_vectors, "ubinary"))


@pytest.mark.parametrize(("body", "says"), [
    ({"texts": ["a"], "truncate": "START"}, "truncate"),
    ({"texts": ["a"], "images": ["data:image/png;base64,AAAA"]}, "images: this server embeds texts only"),
    ({"texts": ["a"], "max_tokens": 8}, "max_tokens"),  # shorter than -max_seq_len: cannot be honoured
    ({"texts": ["a"], "embedding_types": ["int4"]}, "embedding_types[0]"),
    ({"texts": []}, "texts"),
    ({"texts": ["a"], "output_dimension": 385}, "output_dimension"),
])
def test_cohere_embed_refuses_what_it_cannot_do_in_coheres_shape(minilm_server, body, says) -> None:
    answer = httpx.post(minilm_server[1] + "/v2/embed", json=body)
    assert answer.status_code == 400 and says in answer.json()["message"], answer.text
    assert answer.json()["code"] == "invalid_request"


def test_openai_models_list_and_retrieve(minilm_server) -> None:
    import openai

    client = openai.OpenAI(base_url=minilm_server[1] + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MINILM]
    card = client.models.retrieve(MINILM)
    assert (card.id, card.object, card.owned_by) == (MINILM, "model", "bert-serving") and card.created > 0
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4o")


def test_tokenize_gives_the_tokenizers_ids_and_decode_reverses_it(minilm_server) -> None:
    from transformers import AutoTokenizer

    server, base = minilm_server
    theirs = AutoTokenizer.from_pretrained(str(server.spec.source.tokenizer_path.parent))
    tokens = httpx.post(base + "/tokenize", json={"inputs": TEXTS}).json()
    assert [[t["id"] for t in row] for row in tokens] == \
        [theirs(t, truncation=True, max_length=server.spec.max_length)["input_ids"] for t in TEXTS]
    last = tokens[-1]  # lower-cased, accents stripped: the spans still show the text as sent
    assert [(t["text"], t["special"]) for t in (last[0], last[-1])] == [("[CLS]", True), ("[SEP]", True)]
    assert "".join(t["text"] for t in last if not t["special"]) == TEXTS[-1].replace(" ", "")
    assert all(TEXTS[-1][t["start"] : t["stop"]] == t["text"] for t in last if not t["special"])
    single = httpx.post(base + "/tokenize", json={"inputs": "Hello", "add_special_tokens": False}).json()
    assert single == [[{"id": 7592, "text": "Hello", "special": False, "start": 0, "stop": 5}]]
    ids = [[t["id"] for t in row] for row in tokens[:2]]
    assert httpx.post(base + "/decode", json={"ids": ids}).json() == [t.lower() for t in TEXTS[:2]]
    assert httpx.post(base + "/decode", json={"ids": ids[0], "skip_special_tokens": False}).json() == \
        [theirs.backend_tokenizer.decode(ids[0], skip_special_tokens=False)] == ["[CLS] what is deep learning? [SEP]"]


def test_info_describes_the_model_and_the_limits(minilm_server) -> None:
    info = httpx.get(minilm_server[1] + "/info").json()
    assert info["model_id"] == info["served_model_name"] == MINILM
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["model_dtype"] == "float32"
    assert (info["max_input_length"], info["max_client_batch_size"], info["max_batch_requests"]) == (256, 50, 256)
    assert info["max_batch_tokens"] > 0 and info["max_concurrent_requests"] == 1024 and info["auto_truncate"]


def test_embed_options_and_tei_errors(minilm_server, openai_vectors) -> None:
    base = minilm_server[1]
    with httpx.Client(base_url=base, timeout=60) as http:
        np.testing.assert_allclose(http.post("/embed", json={"inputs": TEXTS}).json(), openai_vectors, atol=1e-6)
        np.testing.assert_allclose(http.post("/", json={"inputs": TEXTS[0]}).json(), openai_vectors[:1], atol=1e-6)
        # token ids as /tokenize gives them (with [CLS] / [SEP]) or bare: the text's vector either way
        ids = [t["id"] for t in http.post("/tokenize", json={"inputs": TEXTS[0]}).json()[0]]
        for inputs in ([ids], ids, ids[1:-1]):
            np.testing.assert_allclose(http.post("/embed", json={"inputs": inputs}).json(), openai_vectors[:1],
                                       atol=1e-5)
        for path, body, status, says in (
            ("/embed", {"inputs": []}, 400, "inputs"),
            ("/embed", {"inputs": "x", "prompt_name": "query"}, 400, "prompt_name"),
            ("/embed", {"inputs": "x", "truncation_direction": "left"}, 400, "truncation_direction"),
            ("/embed", {"inputs": [[30522]]}, 400, "inputs[0][0]"),  # past the vocabulary
            ("/embed_all", {"inputs": "x"}, 404, "-pooling_strategy NONE"),
            ("/embed_sparse", {"inputs": "x"}, 404, "no sparse vectors"),
            ("/tokenize", {"inputs": " "}, 400, "must not be empty or blank"),
            ("/decode", {"ids": [-1]}, 400, "ids"),
        ):
            answer = http.post(path, json=body)
            assert answer.status_code == status and says in answer.json()["error"], (path, answer.text)
            assert answer.json()["error_type"] == "validation"
    assert httpx.post(base + "/embed", json={"inputs": "still serving"}).status_code == 200


def test_our_client_gets_quantized_vectors_over_zeromq(minilm_server) -> None:
    server, _ = minilm_server
    with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60_000) as bc:
        floats = bc.encode(TEXTS)
        for precision, dtype, width in (("int8", np.int8, 384), ("uint8", np.uint8, 384),
                                        ("binary", np.int8, 48), ("ubinary", np.uint8, 48)):
            vectors = bc.encode(TEXTS, precision=precision)
            assert (vectors.dtype, vectors.shape) == (np.dtype(dtype), (5, width))
            np.testing.assert_array_equal(vectors, quantize(floats, precision))
        assert bc.encode(TEXTS, precision="float").dtype == np.float32
        with pytest.raises(ValueError, match="precision must be one of"):
            bc.encode(TEXTS, precision="int4")


def test_the_fast_lane_answers_the_new_routes_as_fastapi_would(minilm_server) -> None:
    requests = [("/embed", {"inputs": TEXTS[:2]}), ("/", {"inputs": "one"}),
                ("/embed", {"inputs": [[101, 7592, 102]], "normalize": False, "dimensions": 8}),
                ("/embed_all", {"inputs": "x"}),  # valid, and refused in the endpoint: 404 both ways
                ("/embed", {"inputs": []}), ("/v2/embed", {"texts": ["a"], "embedding_types": []})]
    settings = HttpSettings(max_request_texts=50, max_request_bytes=64 * 1024 * 1024)
    fast, slow, passed_on = both_answers(minilm_server[0], settings, requests)
    assert [a[0] for a in fast] == [200, 200, 200, 404, 400, 400]
    assert passed_on == [False, False, False, False, True, True]
    assert fast == slow
    cohere = [("/v2/embed", {"texts": TEXTS[:2], "embedding_types": ["int8"]}), ("/v1/embed", {"texts": ["a"]})]
    fast, slow, passed_on = both_answers(minilm_server[0], settings, cohere)
    assert passed_on == [False, False]
    strip = [httpx.Response(a[0], content=a[2]).json() for a in fast + slow]
    assert all(s.pop("id") for s in strip) and strip[:2] == strip[2:]  # the same, but for the random id


@pytest.fixture(scope="module")
def token_server():
    """tiny-bert answering token vectors (-pooling_strategy NONE), float16 on the wire (-fp16)."""
    port = free_ports(1)[0]
    with running_server("-max_seq_len", "16", "-pooling_strategy", "NONE", "-fp16", "-http_port", str(port),
                        "-cpu") as server:
        yield server, f"http://127.0.0.1:{port}"


def test_embed_all_gives_each_inputs_token_vectors(token_server) -> None:
    server, base = token_server
    texts = ["the cat sat", "the cat sat on the mat ||| and the dog"]
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        padded = bc.encode(texts)  # [2, 16, D] float16, zero past each text's tokens
    lengths = [len(row) for row in httpx.post(base + "/tokenize", json={"inputs": texts}).json()]
    assert lengths[0] < lengths[1] <= 16
    for path in ("/embed_all", "/"):
        tokens = httpx.post(base + path, json={"inputs": texts}).json()
        assert [len(row) for row in tokens] == lengths
        for row, want, n in zip(tokens, padded, lengths):
            np.testing.assert_allclose(row, want[:n].astype(np.float32), atol=1e-6)
    single = httpx.post(base + "/embed_all", json={"inputs": texts[0]}).json()
    assert np.array(single).shape == (1, lengths[0], padded.shape[2])
    for path, body in (("/embed", {"inputs": "x"}), ("/v2/embed", {"texts": ["x"]})):
        answer = httpx.post(base + path, json=body)
        assert answer.status_code == 404 and "token vectors (-pooling_strategy NONE)" in answer.text


def test_status_says_what_computes_and_what_is_returned(token_server) -> None:
    # -fp16 on a CPU: the model computes in float32, the vectors travel as float16
    server, base = token_server
    status = httpx.get(base + "/status/server").json()
    assert (status["dtype"], status["output_dtype"], status["fp16"]) == ("float32", "float16", True)
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        assert (bc.server_config["dtype"], bc.server_config["output_dtype"]) == ("float32", "float16")
    assert httpx.get(base + "/info").json()["model_dtype"] == "float32"


def test_token_vectors_quantize_token_by_token(token_server) -> None:
    server, _ = token_server
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        tokens = bc.encode(["the cat sat"], precision="ubinary")
        np.testing.assert_array_equal(tokens, quantize(bc.encode(["the cat sat"]), "ubinary"))
        assert tokens.shape[:2] == (1, 16)


def test_an_unknown_precision_gets_an_error_reply(minilm_server) -> None:
    server, _ = minilm_server
    with BertClient(port=server.config.port, port_out=server.config.port_out) as bc:
        with bc._receiving(30_000):
            reply = bc._recv(bc._send(b'{"texts": ["a"], "precision": "int4"}'))  # past the client's own check
        assert reply.error is not None and "precision must be one of" in reply.error.message
        assert bc.encode(["a"], precision="int8").dtype == np.int8  # still serving


@pytest.mark.parametrize("family", ["bert", "modernbert"])  # e5's query / passage, nomic's query / document
def test_cohere_input_types_and_tei_prompt_names_pick_the_models_prompts(family, family_model) -> None:
    import cohere

    port = free_ports(1)[0]
    with running_server("-http_port", str(port), model_dir=family_model(family)) as server:
        base = f"http://127.0.0.1:{port}"
        prompts = server.model.prompts
        document = "passage" if "passage" in prompts else "document"

        def openai(**prompt) -> list:
            body = httpx.post(base + "/v1/embeddings", json={"input": TEXTS[:2], **prompt}).json()
            return [d["embedding"] for d in body["data"]]

        client = cohere.ClientV2(api_key="unused", base_url=base)
        for input_type, prompt in (("search_query", {"prompt_name": "query"}),
                                   ("search_document", {"prompt_name": document}),
                                   ("clustering", {})):  # no such prompt: the default (here none)
            got = client.embed(model="m", input_type=input_type, texts=TEXTS[:2], embedding_types=["float"])
            np.testing.assert_allclose(got.embeddings.float_, openai(**prompt), atol=1e-6)
        tei = httpx.post(base + "/embed", json={"inputs": TEXTS[:2], "prompt_name": "query", "normalize": False})
        np.testing.assert_allclose(tei.json(), openai(prompt_name="query"), atol=1e-6)
        tokens = httpx.post(base + "/tokenize", json={"inputs": "hello", "prompt_name": "query"}).json()[0]
        words = [t for t in tokens if not t["special"]]  # the prompt's tokens first: offsets into prompt + text
        line = prompts["query"] + "hello"
        assert (words[0]["start"], words[-1]["stop"]) == (0, len(line))
        assert "".join(t["text"] for t in words).replace(" ", "") == line.replace(" ", "")
