"""Sparse and ColBERT outputs on their way: `Ragged` rows, the frames that carry them (coordinator
and edges, replicas, ZeroMQ), the sink putting a request's rows back in order, the batcher's byte
budget, what a request may ask of a model, and admission's bounds. Numpy only: no model runs."""

from __future__ import annotations

import numpy as np
import pytest

from bert_serving import protocol
from bert_serving.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedTaskError
from bert_serving.model.features import Features
from bert_serving.model.outputs import BatchOutput, OutputLayout
from bert_serving.outputs import Ragged, SparseVectors, from_parts, kind_bits, kind_names, to_parts
from bert_serving.server.link import frames as link
from bert_serving.server.pipeline.batcher import Batch, Batcher
from bert_serving.server.pipeline.gateway import ServedModel
from bert_serving.server.pipeline.request import Request
from bert_serving.server.pipeline.sink import Sink
from bert_serving.server.pipeline.stats import Stats
from bert_serving.server.pipeline.tasks import wanted_outputs
from bert_serving.server.replicas import frames as replica

SPARSE, COLBERT, DENSE_SPARSE = kind_bits(["sparse"]), kind_bits(["colbert"]), kind_bits(["dense", "sparse"])


def sparse_rows(rows: list[dict[int, float]]) -> Ragged:
    offsets = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    ids = np.array([i for r in rows for i in sorted(r)], dtype=np.int32)
    values = np.array([r[i] for r in rows for i in sorted(r)], dtype=np.float32)
    return Ragged(offsets, {"indices": ids, "values": values})


def colbert(lengths: list[int], dim: int = 3, start: float = 0) -> Ragged:
    offsets = np.cumsum([0, *lengths]).astype(np.int64)
    return Ragged(offsets, {"vectors": start + np.arange(offsets[-1] * dim, dtype=np.float32).reshape(-1, dim)})


def test_ragged_rows_take_and_concat() -> None:
    rows = sparse_rows([{1: 0.5, 7: 1.0}, {}, {3: 2.0}])
    assert rows.lengths.tolist() == [2, 0, 1] and rows.row(2)["indices"].tolist() == [3]
    taken = rows.take([2, 0, 1])
    assert taken.lengths.tolist() == [1, 2, 0] and taken.columns["indices"].tolist() == [3, 1, 7]
    joined = Ragged.concat([rows.rows(0, 1), rows.rows(1, 3)])
    assert joined.offsets.tolist() == rows.offsets.tolist()
    assert np.array_equal(joined.columns["values"], rows.columns["values"])
    assert kind_names(kind_bits(["colbert", "dense"])) == ("dense", "colbert")
    with pytest.raises(ValueError, match="unknown output"):
        kind_bits(["tokens"])


def test_sparse_vectors_are_a_csr_matrix() -> None:
    vectors = SparseVectors.of(sparse_rows([{1: 0.5, 7: 1.0}, {}, {3: 2.0}]), dim=8)
    dense = vectors.to_dense()
    assert dense.shape == (3, 8) and dense[0, 7] == 1.0 and dense[1].sum() == 0
    assert np.array_equal(vectors.to_scipy().toarray(), dense)
    assert vectors.to_dicts() == [{1: 0.5, 7: 1.0}, {}, {3: 2.0}]
    ids, weights = vectors[-1]
    assert ids.tolist() == [3] and weights.tolist() == [2.0]


def test_ragged_outputs_cross_every_wire_empty_parts_too() -> None:
    ragged = {"sparse": sparse_rows([{1: 0.5}, {}]), "colbert": colbert([0, 0])}  # no ColBERT row asked
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(to_parts(from_parts(to_parts(ragged))), to_parts(ragged)))
    # coordinator -> edge
    frames = link.answer_frames([(1, None, None, ragged), (2, np.ones((2, 4), np.float32), None, None)])
    (rid, result, error, got), (_, dense, _, none) = link.read_answers([bytes(memoryview(f)) for f in frames])
    assert rid == 1 and result is None and error is None and none is None and dense.shape == (2, 4)
    assert got["sparse"].columns["indices"].tolist() == [1] and got["colbert"].columns["vectors"].shape == (0, 3)
    # replica -> coordinator
    ok = replica.ok_frames(5, BatchOutput(np.zeros((2, 0), np.float32), ragged))
    import json
    vectors, back = replica.read_ok(json.loads(bytes(ok[1])), [bytes(memoryview(f)) for f in ok[2:]])
    assert vectors.shape == (2, 0) and back["sparse"].offsets.tolist() == [0, 1, 1]
    # server -> client (ZeroMQ)
    reply = protocol.parse_reply([bytes(memoryview(f)) if not isinstance(f, bytes) else f for f in
                                  protocol.result_frames(b"id", 9, np.zeros((2, 0), np.float32), None, ragged, 8)])
    assert reply.req_id == 9 and reply.sparse_dim == 8 and reply.embedding.shape == (2, 0)
    assert reply.ragged["sparse"].columns["values"].tolist() == [0.5]


def test_submissions_carry_what_each_request_asks_for() -> None:
    one = Features.from_lists([[1, 2, 3]], [[0, 0, 0]], [[True] * 3])
    frames = link.submission_frames([(1, one, 0.0, 0.1, 1), (2, one, 0.0, 0.2, SPARSE | COLBERT)])
    assert [outputs for *_, outputs in link.read_submission(frames)] == [1, SPARSE | COLBERT]
    features, kinds = replica.unpack(replica.pack(3, one, np.array([COLBERT], np.uint8))[2:])
    assert kinds.tolist() == [COLBERT] and replica.unpack(replica.pack(3, one)[2:])[1] is None


def make_request(lengths: list[int], outputs: int, answers: list) -> Request:
    features = Features.from_lists([[1] * n for n in lengths], [[0] * n for n in lengths], [[True] * n for n in lengths])
    return Request(features, reply=answers.append, client="t", outputs=outputs)


def test_the_sink_puts_ragged_rows_back_in_request_order() -> None:
    layout = OutputLayout(dim=2, dtype=np.dtype(np.float32), kinds=7, sparse_dim=10, colbert_dim=3)
    sink, answers = Sink(layout, Stats()), []
    request = make_request([3, 4, 5], DENSE_SPARSE | COLBERT, answers)
    dense_only = make_request([2], 1, answers)
    batch = Batch([(request, np.array([2, 0])), (dense_only, np.array([0]))])
    assert batch.kinds.tolist() == [7, 7, 1]
    sink.deliver(batch, np.array([[2, 2], [0, 0], [9, 9]], np.float32),
                 {"sparse": sparse_rows([{2: 2.0}, {0: 0.5}, {5: 1.0}]), "colbert": colbert([4, 2, 0])})
    assert len(answers) == 1 and answers[0].sparse is None and answers[0].result.tolist() == [[9, 9]]
    sink.deliver(Batch([(request, np.array([1]))]), np.array([[1, 1]], np.float32),
                 {"sparse": sparse_rows([{1: 1.5}]), "colbert": colbert([3], start=100)})
    outcome = answers[1]
    assert outcome.result[:, 0].tolist() == [0, 1, 2]
    assert SparseVectors.of(outcome.sparse, 10).to_dicts() == [{0: 0.5}, {1: 1.5}, {2: 2.0}]
    assert outcome.colbert.lengths.tolist() == [2, 3, 4] and outcome.colbert.columns["vectors"][2, 0] == 100
    assert Batch([(dense_only, np.array([0]))]).kinds is None  # dense alone: no kinds frame


def test_the_batcher_counts_what_outputs_take() -> None:
    layout = OutputLayout(dim=2, dtype=np.dtype(np.float32), kinds=2, sparse_dim=1000)  # a SPLADE row: 8 kB
    batcher = Batcher(max_batch_size=64, max_batch_tokens=4096, max_batch_bytes=20_000,
                      row_bytes=lambda length, kinds: layout.nbytes_of(kinds, 1, np.array([length])))
    batcher.submit(make_request([5] * 10, SPARSE, []), admitted=False)
    sizes = []
    while (batch := batcher.next_batch(timeout=0)) is not None:
        sizes.append(len(batch))
    assert sizes == [2, 2, 2, 2, 2]


def test_admission_bounds_each_output() -> None:
    splade = OutputLayout(dim=1000, dtype=np.dtype(np.float32), kinds=2, sparse_dim=1000)
    assert splade.default_kinds == SPARSE and splade.nbytes_of(SPARSE, 10) == 10 * 8000 + 88
    m3 = OutputLayout(dim=4, dtype=np.dtype(np.float32), kinds=7, sparse_dim=1000, sparse_per_token=True,
                      colbert_dim=4)
    lengths = np.array([5, 3])
    assert m3.nbytes_of(1, 2, lengths) == 2 * 4 * 4
    assert m3.nbytes_of(COLBERT, 2, lengths) == (4 + 2) * 4 * 4 + 24  # a vector per token but [CLS]
    assert m3.nbytes_of(SPARSE, 2, lengths) == 8 * 8 + 24  # at most a weight per token


def test_a_sparse_answer_too_large_is_refused_before_any_work() -> None:
    from bert_serving.model.tokenization import Tokenizer
    from bert_serving.server.pipeline.intake import Intake, LocalDownstream

    from ..conftest import TINY_BERT

    layout = OutputLayout(dim=30522, dtype=np.dtype(np.float32), kinds=2, sparse_dim=30522)
    tokenizer = Tokenizer.from_vocab(TINY_BERT / "google" / "vocab.txt", lowercase=True, max_length=16)
    intake = Intake(tokenizer, LocalDownstream(Batcher(), Sink(layout, Stats())), Stats(), outputs=layout,
                    max_result_bytes=1_000_000)
    answers = []
    intake.submit(["a text"] * 5, False, answers.append, "t", outputs=SPARSE)
    assert isinstance(answers[0].error, PayloadTooLargeError) and "(sparse) could be" in answers[0].error.message
    intake.close()


def test_what_a_request_may_ask_of_each_model() -> None:
    splade = ServedModel(name="splade", dim=800, vocab_size=800, outputs=("sparse",), sparse_dim=800)
    m3 = ServedModel(name="m3", dim=32, vocab_size=800, outputs=("dense", "sparse", "colbert"), sparse_dim=800)
    dense = ServedModel(name="minilm", dim=384, vocab_size=800)
    assert wanted_outputs(splade, None, None) == (SPARSE, True)  # the original's request: densified
    assert wanted_outputs(m3, None, None) == (1, False) and wanted_outputs(m3, "embed", ["colbert"]) == (COLBERT, False)
    with pytest.raises(UnsupportedTaskError, match="has no dense vectors: it gives sparse vectors .POST /embed_sparse"):
        wanted_outputs(splade, "embed", None)
    with pytest.raises(UnsupportedTaskError, match="has no ColBERT vectors"):
        wanted_outputs(dense, "embed", ["colbert"])
    with pytest.raises(InvalidRequestError, match="unknown output 'tokens'"):
        wanted_outputs(m3, "embed", ["tokens"])
    with pytest.raises(InvalidRequestError):
        protocol.decode_data(b'{"texts": ["a"], "outputs": ["sparse"], "precision": "int8"}')
    assert protocol.decode_data(b'{"texts": ["a"], "outputs": ["sparse"]}').outputs == ("sparse",)
