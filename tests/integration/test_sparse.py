"""A SPLADE server and a BGE-M3 server, over HTTP and ZeroMQ, against their in-process references:
``/embed_sparse`` equals ``SparseEncoder.encode`` (every non-zero id, weights within 1e-4); BGE-M3's
dense (``/embed``, ``BertClient.encode``, the stock client), sparse (``/embed_sparse``) and ColBERT
(``/embed_all``) outputs equal ``BGEM3FlagModel.encode``, as do all three from one request."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bert_serving.client import BertClient
from bert_serving.errors import UnsupportedTaskError

from ..families import sample_texts
from ..sparse_models import assert_same_sparse, dicts_of
from .conftest import free_ports, run_stock_client, running_server

TEXTS = sample_texts()[:20]


@pytest.fixture(scope="module")
def splade_server(splade_model):
    port = free_ports(1)[0]
    with running_server("-http_port", str(port), model_dir=splade_model) as server:
        yield server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def m3_server(m3_model):
    port = free_ports(1)[0]
    with running_server("-http_port", str(port), model_dir=m3_model) as server:
        yield server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def splade_reference(splade_model):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(splade_model), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense().numpy()


def client(server) -> BertClient:
    return BertClient(port=server.config.port, port_out=server.config.port_out, timeout=60_000, check_length=False)


def from_tei(answer: list[list[dict]]) -> list[dict[int, float]]:
    return [{item["index"]: item["value"] for item in row} for row in answer]


def test_embed_sparse_equals_sparse_encoder(splade_server, splade_reference) -> None:
    server, base = splade_server
    want = dicts_of(splade_reference)
    with httpx.Client(base_url=base, timeout=60) as http:
        answer = http.post("/embed_sparse", json={"inputs": TEXTS})
        assert answer.status_code == 200, answer.text
        assert_same_sparse(from_tei(answer.json()), want)
        assert all(ids == sorted(ids) for ids in ([i["index"] for i in row] for row in answer.json()))
        assert_same_sparse(from_tei(http.post("/", json={"inputs": TEXTS[0]}).json()), want[:1])  # its natural route
        assert http.get("/info").json()["model_type"] == {"embedding": {"pooling": "splade"}}
        for path, body in (("/embed", {"inputs": "x"}), ("/v1/embeddings", {"input": "x"}),
                           ("/embed_all", {"inputs": "x"})):
            refused = http.post(path, json=body)
            assert refused.status_code == 404 and "POST /embed_sparse" in refused.text, (path, refused.text)
    with client(server) as bc:
        sparse = bc.encode_sparse(TEXTS)
        assert_same_sparse(sparse.to_dicts(), want)
        assert sparse.to_scipy().shape == (len(TEXTS), splade_reference.shape[1])
        np.testing.assert_allclose(bc.encode(TEXTS), splade_reference, atol=1e-4)  # the original's: as dense arrays
        with pytest.raises(UnsupportedTaskError, match="no ColBERT vectors"):
            bc.encode_colbert(TEXTS[:2])


def test_bge_m3_outputs_equal_bgem3flagmodel(m3_server, m3_reference) -> None:
    server, base = m3_server
    dense, sparse, colbert = (m3_reference[k][: len(TEXTS)] for k in ("dense", "sparse", "colbert"))
    with httpx.Client(base_url=base, timeout=60) as http:
        np.testing.assert_allclose(http.post("/embed", json={"inputs": TEXTS}).json(), dense, atol=1e-5)
        assert_same_sparse(from_tei(http.post("/embed_sparse", json={"inputs": TEXTS}).json()), sparse)
        for ours, theirs in zip(http.post("/embed_all", json={"inputs": TEXTS}).json(), colbert):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
        both = http.post("/encode", json={"texts": TEXTS[:3], "outputs": ["sparse", "colbert"]}).json()["result"]
        assert set(both) == {"sparse", "colbert"} and len(both["colbert"][2]) == len(colbert[2])
        assert_same_sparse(from_tei(both["sparse"]), sparse[:3])
    with client(server) as bc:
        np.testing.assert_allclose(bc.encode(TEXTS), dense, atol=1e-5)
        out = bc.encode_outputs(TEXTS)  # all three, one request per chunk, one forward pass per batch
        np.testing.assert_allclose(out.dense, dense, atol=1e-5)
        assert_same_sparse(out.sparse.to_dicts(), sparse)
        for ours, theirs in zip(out.colbert, colbert):
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
        assert_same_sparse(bc.encode_sparse(TEXTS[:4]).to_dicts(), sparse[:4])
    stock = run_stock_client(server, f"out['dense'] = bc.encode({TEXTS[:4]!r}).tolist()")
    np.testing.assert_allclose(stock["dense"], dense[:4], atol=1e-5)
