"""Reassembly: results in request row order, one answer per request."""

from __future__ import annotations

import numpy as np

from bert_serving.errors import InferenceError
from bert_serving.model import EncoderSettings, PoolingStrategy, resolve
from bert_serving.model.features import Features
from bert_serving.server.pipeline.batcher import Batch
from bert_serving.server.pipeline.request import Request
from bert_serving.server.pipeline.sink import Sink
from bert_serving.server.pipeline.stats import Stats

from ..conftest import TINY_BERT


def make_request(lengths, answers):
    features = Features.from_lists([[1] * n for n in lengths], [[0] * n for n in lengths], [[True] * n for n in lengths])
    return Request(features, reply=lambda outcome: answers.append((outcome.result, outcome.error)), client="t")


def test_rows_land_in_request_order_whatever_the_batch_order() -> None:
    spec = resolve(EncoderSettings(model_dir=str(TINY_BERT / "google")))
    sink, answers = Sink(spec.outputs, Stats()), []
    req = make_request([3, 4, 5], answers)
    sink.deliver(Batch([(req, np.array([2, 0]))]), np.stack([np.full(32, 2.0), np.full(32, 0.0)]))
    assert not answers
    sink.deliver(Batch([(req, np.array([1]))]), np.full((1, 32), 1.0))
    (result, error), = answers
    assert error is None and result[:, 0].tolist() == [0.0, 1.0, 2.0] and result.dtype == np.float32


def test_token_output_is_padded_per_request() -> None:
    spec = resolve(EncoderSettings(model_dir=str(TINY_BERT / "google"), max_seq_len=None,
                                   pooling_strategy=PoolingStrategy.NONE))
    sink, answers = Sink(spec.outputs, Stats()), []
    req = make_request([2, 4], answers)
    block = np.ones((2, 6, 32), dtype=np.float32)  # a batch padded wider than this request needs
    sink.deliver(Batch([(req, np.array([0, 1]))]), block)
    result = answers[0][0]
    assert result.shape == (2, 4, 32)
    assert result[0, 2:].sum() == 0 and result[1].sum() == 4 * 32


def test_a_failed_request_is_answered_once() -> None:
    spec = resolve(EncoderSettings(model_dir=str(TINY_BERT / "google")))
    stats = Stats()
    sink, answers = Sink(spec.outputs, stats), []
    req = make_request([3, 3], answers)
    sink.fail(Batch([(req, np.array([0]))]), InferenceError("boom"))
    sink.deliver(Batch([(req, np.array([1]))]), np.zeros((1, 32)))
    sink.fail(Batch([(req, np.array([1]))]), InferenceError("again"))
    assert len(answers) == 1 and str(answers[0][1]) == "boom"
    assert stats.errors == {"inference_failed": 1}
