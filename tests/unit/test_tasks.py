"""Tasks on the wire and at the gateway: the ZeroMQ task objects, which task answers which
request, and a head's scores per request."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bert_serving import protocol
from bert_serving.errors import InvalidRequestError, UnsupportedTaskError
from bert_serving.server.pipeline.gateway import ServedModel
from bert_serving.server.pipeline.request import Outcome
from bert_serving.server.pipeline.stats import Stats
from bert_serving.server.pipeline.tasks import check_task, scored_reply

EMBEDDER = ServedModel("minilm", 384, 100)
CLASSIFIER = ServedModel("sst2", 2, 100, task="classify", labels=("neg", "pos"), activation="softmax")
RERANKER = ServedModel("marco", 1, 100, task="rerank", labels=("LABEL_0",), activation="sigmoid")


def test_the_original_payloads_decode_as_before() -> None:
    plain = protocol.decode_data(protocol.texts_payload(["a", "b ||| c"]))
    assert (plain.texts, plain.is_tokenized, plain.task, plain.raw_scores) == (["a", "b ||| c"], False, None, False)
    assert protocol.decode_data(protocol.texts_payload([["a", "b"]])).is_tokenized


def test_task_objects_decode_to_pairs() -> None:
    predict = protocol.decode_data(protocol.predict_payload(["a", ["b", "c"]], raw_scores=True))
    assert (predict.texts, predict.task, predict.raw_scores) == (["a", ["b", "c"]], "predict", True)
    rerank = protocol.decode_data(protocol.rerank_payload("q", ["d1", "d2"]))
    assert (rerank.texts, rerank.task) == ([["q", "d1"], ["q", "d2"]], "rerank")


@pytest.mark.parametrize(("payload", "says"), [
    ({"task": "rerank", "query": " ", "documents": ["d"]}, "query"),
    ({"task": "rerank", "query": "q", "documents": []}, "documents must be a non-empty list"),
    ({"task": "rerank", "query": "q", "documents": ["d", 3]}, "documents[1]"),
    ({"task": "rerank", "query": "q", "documents": "d"}, "documents must be"),
    ({"task": "predict", "texts": ["a"], "raw_scores": "yes"}, "raw_scores"),
    ({"task": "summarize", "texts": ["a"]}, "unknown task"),
    ("just a string", "JSON list"),
])
def test_malformed_task_objects_are_refused_with_a_reason(payload, says) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        protocol.decode_data(json.dumps(payload).encode())
    assert says in raised.value.message


@pytest.mark.parametrize(("model", "allowed"), [
    (EMBEDDER, {None, "embed"}), (CLASSIFIER, {None, "predict"}), (RERANKER, {None, "predict", "rerank"}),
])
def test_each_task_answers_its_requests_and_refuses_the_others_saying_how(model, allowed) -> None:
    for wanted in (None, "embed", "predict", "rerank"):
        if wanted in allowed:
            check_task(model, wanted)
            continue
        with pytest.raises(UnsupportedTaskError) as raised:
            check_task(model, wanted)
        assert model.name in raised.value.message and "bert-serving-start" in raised.value.message
        assert raised.value.http_status == 404


def test_a_heads_reply_gets_scores_unless_raw_and_is_counted() -> None:
    stats, answers = Stats(), []
    logits = np.array([[0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    scored_reply(answers.append, CLASSIFIER, "predict", False, stats)(Outcome(result=logits))
    scored_reply(answers.append, CLASSIFIER, "predict", True, stats)(Outcome(result=logits))
    scored_reply(answers.append, RERANKER, "rerank", False, stats)(Outcome(result=logits[:, :1]))
    scored_reply(answers.append, RERANKER, "rerank", False, stats)(Outcome(error=InvalidRequestError("x")))
    np.testing.assert_allclose(answers[0].result.sum(axis=1), 1, rtol=1e-6)
    assert answers[0].result[0, 1] > 0.8 and answers[1].result is logits
    np.testing.assert_allclose(answers[2].result[:, 0], [0.5, 1 / (1 + np.exp(-1))], rtol=1e-6)
    assert answers[3].error is not None
    assert (stats.num_predictions, stats.num_reranked_pairs) == (4, 2)
    assert stats.statistic()["num_reranked_pairs"] == 2
