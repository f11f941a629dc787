"""Admission at the pipeline's door: by count, by bytes held, by result size; abandoned
tickets; every request answered once, or never if abandoned. Real tokenizer, no model."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bert_serving.errors import InvalidRequestError, OverloadedError, PayloadTooLargeError, ServerError
from bert_serving.model import EncoderSettings, PoolingStrategy, resolve
from bert_serving.server.pipeline.batcher import Batcher
from bert_serving.server.pipeline.budget import MemoryBudget, size_of_texts
from bert_serving.server.pipeline.intake import Intake, LocalDownstream
from bert_serving.server.pipeline.sink import Sink
from bert_serving.server.pipeline.stats import Stats

from ..conftest import TINY_BERT


class Answers:
    def __init__(self) -> None:
        self.outcomes: list = []
        self.event = threading.Event()

    def __call__(self, outcome) -> None:
        self.outcomes.append(outcome)
        self.event.set()

    def wait(self):
        assert self.event.wait(10), "never answered"
        self.event.clear()
        return self.outcomes[-1]


def pipeline(max_queued_bytes: int = 1 << 30, max_result_bytes: int = 1 << 30, **settings):
    spec = resolve(EncoderSettings(model_dir=str(TINY_BERT / "google"), **settings))
    stats, budget = Stats(), MemoryBudget(max_queued_bytes)
    batcher = Batcher(max_batch_size=4, max_batch_tokens=1000, priority_batch_size=0)
    sink = Sink(spec.outputs, stats, budget=budget)
    intake = Intake(spec.tokenizer(), LocalDownstream(batcher, sink), stats, outputs=spec.outputs, budget=budget,
                    max_result_bytes=max_result_bytes)
    return intake, batcher, sink, stats, budget, spec


def run_all(batcher: Batcher, sink: Sink, dim: int = 32) -> int:
    """Play the workers: answer every queued batch with zeros; the rows run."""
    rows = 0
    while (batch := batcher.next_batch(timeout=0.5)) is not None:
        block = np.zeros((len(batch), int(batch.features.lengths.max()), dim), np.float32) \
            if sink._outputs.per_token else np.zeros((len(batch), dim), np.float32)
        sink.deliver(batch, block)
        rows += len(batch)
    return rows


def test_a_result_too_large_is_refused_before_it_is_allocated() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline(max_result_bytes=1024 * 1024, max_seq_len=16,
                                                          pooling_strategy=PoolingStrategy.NONE)
    answers = Answers()
    intake.submit(["a few words"] * 1000, False, answers, "t")  # [1000, 16, 32] float32: 2 MiB
    error = answers.wait().error
    assert isinstance(error, PayloadTooLargeError)
    assert "[1000, 16, 32] float32 (2.0 MiB)" in error.message and "-max_result_bytes" in error.message
    assert batcher.queued_rows == 0 and budget.used_bytes == 0
    intake.submit(["a few words"] * 100, False, answers, "t")  # 200 KiB: fine
    assert run_all(batcher, sink) == 100 and answers.wait().result.shape == (100, 16, 32)
    assert budget.used_bytes == 0  # given back once answered


def test_with_a_dynamic_length_the_result_is_checked_once_tokenized() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline(max_result_bytes=64 * 1024, max_seq_len=None,
                                                          pooling_strategy=PoolingStrategy.NONE)
    answers = Answers()
    intake.submit(["short"] * 100, False, answers, "t")  # [100, 3, 32]: 37.5 KiB
    assert run_all(batcher, sink) == 100 and answers.wait().error is None
    intake.submit(["a much longer sentence with many more words in it"] * 100, False, answers, "t")
    error = answers.wait().error
    assert isinstance(error, PayloadTooLargeError) and ", 32] float32" in error.message
    assert batcher.queued_rows == 0 and budget.used_bytes == 0 and stats.errors["payload_too_large"] == 1


def test_the_backlog_is_bounded_in_bytes() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline(max_queued_bytes=250 * 1024)
    gate = threading.Event()
    original = intake._tokenizer.encode
    intake._tokenizer.encode = lambda *a, **k: (gate.wait(10), original(*a, **k))[1]
    first, second, third = Answers(), Answers(), Answers()
    texts = ["word " * 200] * 100  # ~100 KiB of text, a 12.5 KiB result
    intake.submit(texts, False, first, "t")
    intake.submit(texts, False, second, "t")
    intake.submit(texts, False, third, "t")  # the texts of the two before are still held
    assert isinstance(third.wait().error, OverloadedError) and "retry later" in third.outcomes[0].error.message
    gate.set()
    assert run_all(batcher, sink) == 200
    assert first.wait().error is None and second.wait().error is None and budget.used_bytes == 0
    intake.submit(texts, False, third, "t")  # room again
    assert run_all(batcher, sink) == 100 and third.wait().error is None


def test_an_abandoned_request_is_never_run_nor_answered() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline()
    answers = Answers()
    ticket = intake.submit([f"text {i}" for i in range(40)], False, answers, "t")
    for _ in range(100):
        if batcher.queued_rows:
            break
        threading.Event().wait(0.01)
    ticket.abandon()
    ticket.abandon()  # twice is harmless
    assert run_all(batcher, sink) == 0 and not answers.outcomes
    assert stats.errors == {"abandoned": 1} and sink.outstanding == 0 and budget.used_bytes == 0


def test_a_ticket_abandoned_before_tokenization_is_not_queued() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline()
    gate = threading.Event()
    original = intake._tokenizer.encode
    intake._tokenizer.encode = lambda *a, **k: (gate.wait(10), original(*a, **k))[1]
    answers = Answers()
    texts = [f"held up {i}" for i in range(20)]  # too many to be tokenized on the caller's thread
    tickets = [intake.submit(texts, False, answers, "t") for _ in range(3)]  # 2 tokenize threads
    tickets[2].abandon()  # still waiting for a thread
    gate.set()
    assert run_all(batcher, sink) == 40 and len(answers.outcomes) == 2
    intake.close()
    assert stats.errors == {"abandoned": 1} and budget.used_bytes == 0 and batcher.queued_rows == 0


def test_a_tokenizer_bug_is_answered_and_gives_its_admission_back() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline()
    intake._tokenizer.encode = lambda *a, **k: 1 / 0
    answers = Answers()
    intake.submit(["anything"], False, answers, "t")
    error = answers.wait().error
    assert isinstance(error, ServerError) and "tokenization failed: division by zero" in error.message
    assert budget.used_bytes == 0
    batcher.admit(batcher.max_queued_rows)  # the whole backlog is free again


@pytest.mark.parametrize("texts, at_least", [(["abc"] * 10, 30), ([["a", "b"]] * 3, 6), ("not a list", 0)])
def test_size_of_texts_counts_characters(texts, at_least) -> None:
    assert size_of_texts(texts) >= at_least


def test_an_empty_budget_takes_any_size_and_a_full_one_refuses() -> None:
    budget = MemoryBudget(100)
    budget.reserve(500)
    with pytest.raises(OverloadedError, match="full"):
        budget.reserve(1)
    budget.release(500)
    budget.reserve(60)
    budget.reserve(40)
    with pytest.raises(OverloadedError):
        budget.reserve(1)


def test_a_requests_prompt_is_checked_at_the_door_and_the_pipeline_goes_on(family_model) -> None:
    spec = resolve(EncoderSettings(model_dir=str(family_model("bert"))))
    stats, budget = Stats(), MemoryBudget(1 << 30)
    batcher = Batcher(max_batch_size=4, max_batch_tokens=1000, priority_batch_size=0)
    sink = Sink(spec.outputs, stats, budget=budget)
    intake = Intake(spec.tokenizer(), LocalDownstream(batcher, sink), stats, outputs=spec.outputs, budget=budget, prompts=spec.prompts)
    answers = Answers()
    for options, says in [(dict(prompt_name="nope"), "'nope' is not one of this model's prompts ('query', 'passage')"),
                          (dict(prompt_name=7), "prompt_name must be a string"),
                          (dict(prompt=["q: "]), "prompt must be a string"),
                          (dict(prompt_name="query", pairs=True), "prompts are for embeddings")]:
        intake.submit(["a text"], False, answers, "t", **options)
        error = answers.wait().error
        assert error is not None and says in error.message and error.http_status == 400
        assert batcher.queued_rows == 0 and budget.used_bytes == 0  # nothing admitted, nothing held
    plain, prompted = Answers(), Answers()
    intake.submit(["a text"], False, plain, "t")
    intake.submit(["a text"], False, prompted, "t", prompt_name="query")
    assert run_all(batcher, sink) == 2 and plain.wait().error is None and prompted.wait().error is None
    assert prompted.outcomes[-1].num_tokens > plain.outcomes[-1].num_tokens  # the prompt's tokens are counted
    intake.close()


def test_requests_read_together_are_tokenized_in_one_call_each_as_if_alone() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline()
    alone = spec.tokenizer()
    calls = []
    encode = intake._tokenizer.encode
    intake._tokenizer.encode = lambda texts, *a, **kw: calls.append(len(texts)) or encode(texts, *a, **kw)
    requests = [["the cat sat"], ["on the mat", "hello"], [["the", "cat"]], ["one ||| two"], [["mat"]], ["x" * 3]]
    answers = [Answers() for _ in requests]
    with intake.together():
        for texts, answer in zip(requests, answers):
            intake.submit(texts, isinstance(texts[0], list), answer, "t")
        assert batcher.queued_rows == 0  # nothing tokenized yet
    assert sorted(calls) == [2, 5]  # one call for the texts, one for the token lists
    queued = {}
    while (batch := batcher.next_batch(timeout=0)) is not None:
        for request, rows in batch.segments:
            queued[id(request.reply)] = request.features
    for texts, answer in zip(requests, answers):
        got, want = queued[id(answer)], alone.encode(texts, isinstance(texts[0], list))
        for field in ("input_ids", "type_ids", "pool_mask", "offsets"):
            assert getattr(got, field).tolist() == getattr(want, field).tolist()


def test_a_malformed_request_read_together_with_others_fails_alone() -> None:
    intake, batcher, sink, stats, budget, spec = pipeline()
    good, bad, also_good = Answers(), Answers(), Answers()
    with intake.together():
        intake.submit(["the cat sat"], False, good, "t")
        intake.submit(["fine", 42], False, bad, "t")  # not a text
        intake.submit(["on the mat"], False, also_good, "t")
    error = bad.wait().error
    assert isinstance(error, InvalidRequestError) and error.message == "texts[1] must be a string, got int"
    assert run_all(batcher, sink) == 2
    assert good.wait().error is None and also_good.wait().error is None
    assert budget.used_bytes == 0 and batcher.queued_rows == 0
