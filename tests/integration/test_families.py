"""Every family the server runs, through every edge: the stock 1.10.0 client, our client with a
prompt, the original HTTP route and OpenAI's, all equal to sentence-transformers in process."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.errors import InvalidRequestError

from ..families import FAMILIES, sample_texts
from .conftest import free_ports, run_stock_client, running_server


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_edge_serves_the_family_as_sentence_transformers_encodes_it(name, family_model) -> None:
    from sentence_transformers import SentenceTransformer

    family, folder = FAMILIES[name], family_model(name)
    prompt_name = next(iter(family.prompts))
    texts = sample_texts()
    reference = SentenceTransformer(str(folder), device="cpu")
    plain, prompted = reference.encode(texts), reference.encode(texts, prompt_name=prompt_name)
    http_port = free_ports(1)[0]
    with running_server("-http_port", str(http_port), model_dir=folder) as server:
        config = server.status()
        assert (config["model_type"], config["architecture_path"]) == (name, family.path)
        assert config["prompts"] == family.prompts and config["default_prompt_name"] == family.default_prompt_name

        stock = run_stock_client(server, f"out['v'] = bc.encode({texts!r}).tolist()")
        assert cosine(stock["v"], plain).min() >= 0.99999

        with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60_000,
                        check_length=False) as client:
            assert cosine(client.encode(texts, prompt_name=prompt_name), prompted).min() >= 0.99999
            with pytest.raises(InvalidRequestError, match="'nope' is not one of this model's prompts"):
                client.encode(texts[:2], prompt_name="nope")
            assert cosine(client.encode(texts), plain).min() >= 0.99999  # the server still serves

        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as http:
            body = http.post("/encode", json={"texts": texts, "prompt_name": prompt_name}).json()
            assert cosine(body["result"], prompted).min() >= 0.99999
            with_prompt = http.post("/v1/embeddings", json={"input": texts[:3], "prompt_name": prompt_name}).json()
            without = http.post("/v1/embeddings", json={"input": texts[:3], "prompt": ""}).json()
            assert cosine([d["embedding"] for d in with_prompt["data"]], prompted[:3]).min() >= 0.99999
            # usage counts the prompt's tokens too
            assert with_prompt["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]
            refused = http.post("/v1/embeddings", json={"input": texts[:1], "prompt_name": "nope"})
            assert refused.status_code == 400  # the schema lists the names, the error too
            assert f"prompt_name: 'nope' is not one of this model's prompts ({prompt_name!r}" in refused.text


def test_a_roberta_cross_encoder_reranks_through_the_server_as_sentence_transformers(tmp_path) -> None:
    from sentence_transformers import CrossEncoder

    from ..families import build_classifier, pairs

    folder = build_classifier("roberta", tmp_path / "roberta-reranker", num_labels=1, cross_encoder=True)
    query, documents = pairs()[0][0], [b for _, b in pairs()]  # long ones cut as the CrossEncoder cuts them
    want = CrossEncoder(str(folder), device="cpu").predict([(query, d) for d in documents])
    order = list(np.argsort(-want, kind="stable"))
    http_port = free_ports(1)[0]
    with running_server("-http_port", str(http_port), model_dir=folder) as server:
        assert (server.status()["model_type"], server.status()["task"]) == ("roberta", "rerank")
        with BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60_000) as client:
            ranked = client.rerank(query, documents)
            with pytest.raises(InvalidRequestError, match="'query' is not one of this model's prompts"):
                client.encode(["a", "b"], prompt_name="query")  # this cross-encoder has none
        assert [r.index for r in ranked] == order
        np.testing.assert_allclose([r.relevance_score for r in ranked], want[order], atol=1e-5)
        tei = httpx.post(f"http://127.0.0.1:{http_port}/rerank", json={"query": query, "texts": documents},
                         timeout=60).json()
        np.testing.assert_allclose([r["score"] for r in tei], want[order], atol=1e-5)
