"""Fine-tuned heads in process: the original's CLASSIFICATION / REGRESSION on run_classifier.py
checkpoints (against what 1.10.0 answers), Hugging Face sequence classifiers (against
transformers' pipeline) and CrossEncoders (against sentence-transformers), and the startup
errors for heads that do not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bert_serving.errors import ConfigurationError
from bert_serving.model import Encoder, PoolingStrategy
from bert_serving.model.scores import activate, ranked

from ..classifiers import cross_encoder, hf_classifier
from ..conftest import TINY_BERT

GOOGLE = TINY_BERT / "google"
CLASSIFIER = dict(tuned_model_dir=str(TINY_BERT / "google-classifier"), ckpt_name="model.ckpt-55")
REGRESSOR = dict(tuned_model_dir=str(TINY_BERT / "google-regression"), ckpt_name="model.ckpt-21")
TEXTS = ["the cat sat on the mat", "hello world", "first do it right", "the quick brown fox jumps over the lazy dog"]


@pytest.fixture(scope="module")
def expected_heads() -> dict:
    return dict(np.load(TINY_BERT / "expected_heads.npz"))


def test_classification_equals_what_1_10_0_answers(expected, expected_heads) -> None:
    encoder = Encoder.load(str(GOOGLE), device="cpu", max_seq_len=16, pooling_strategy=PoolingStrategy.CLASSIFICATION,
                           num_labels=3, **CLASSIFIER)
    probabilities = encoder.encode(expected["sentences"])
    np.testing.assert_allclose(probabilities, expected_heads["classification"], atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(encoder.predict(expected["sentences"], raw_scores=True),
                               expected_heads["classification_logits"], atol=1e-5)
    assert encoder.spec.task == "classify" and encoder.spec.describe()["pooling_strategy"] == 7


def test_regression_equals_what_1_10_0_answers(expected, expected_heads) -> None:
    encoder = Encoder.load(str(GOOGLE), device="cpu", max_seq_len=16, pooling_strategy=PoolingStrategy.REGRESSION,
                           **REGRESSOR)
    np.testing.assert_allclose(encoder.encode(expected["sentences"]), expected_heads["regression"], atol=1e-5)
    assert encoder.spec.task == "rerank" and encoder.spec.dim == 1


@pytest.mark.parametrize(("settings", "says"), [
    (dict(pooling_strategy=PoolingStrategy.CLASSIFICATION), ["'output_weights' [2, 32] is missing",
                                                             "-tuned_model_dir"]),
    (dict(pooling_strategy=PoolingStrategy.CLASSIFICATION, **CLASSIFIER), ["[3, 32]", "-num_labels 3"]),
    (dict(pooling_strategy=PoolingStrategy.CLASSIFICATION, num_labels=3, **REGRESSOR), ["[1, 32]", "REGRESSION"]),
    (dict(pooling_strategy=PoolingStrategy.REGRESSION, **CLASSIFIER), ["[3, 32]", "CLASSIFICATION"]),
    (dict(pooling_strategy=PoolingStrategy.REGRESSION, num_labels=3, **REGRESSOR), ["one output", "-num_labels 3"]),
    (dict(pooling_strategy=PoolingStrategy.CLASSIFICATION, num_labels=0, **CLASSIFIER),
     ["-num_labels must be at least 1", "got 0"]),
])
def test_a_head_that_does_not_fit_is_a_startup_error_naming_weight_shape_and_flag(settings, says) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Encoder.load(str(GOOGLE), device="cpu", **settings)
    for words in says:
        assert words in str(raised.value)


def test_an_embedding_strategy_serves_the_backbone_of_a_fine_tuned_checkpoint(expected) -> None:
    encoder = Encoder.load(str(GOOGLE), device="cpu", max_seq_len=16, pooling_strategy=PoolingStrategy.CLS_POOLED,
                           **CLASSIFIER)
    assert encoder.spec.task == "embed" and encoder.dim == 32
    np.testing.assert_allclose(encoder.encode(expected["sentences"]), expected["finetuned_pooled_output"], atol=1e-5)


@pytest.mark.parametrize(("problem_type", "num_labels", "activation"), [
    (None, 3, "softmax"), ("multi_label_classification", 3, "sigmoid"), ("regression", 1, "identity"), (None, 1, "sigmoid"),
])
def test_hf_classifiers_score_as_transformers_pipeline(tmp_path: Path, problem_type, num_labels, activation) -> None:
    from transformers import pipeline

    labels = ["negative", "neutral", "positive"][:num_labels] if num_labels > 1 else None
    folder = hf_classifier(tmp_path / "classifier", num_labels=num_labels, problem_type=problem_type, labels=labels)
    encoder = Encoder.load(str(folder), device="cpu")
    head = encoder.spec.head
    assert (head.activation, encoder.spec.task) == (activation, "classify" if num_labels > 1 else "rerank")
    want = pipeline("text-classification", model=str(folder), top_k=None, device="cpu")(TEXTS)
    scores = encoder.predict(TEXTS)
    for row, answer in zip(scores, want):
        assert [head.labels[j] for j in ranked(row)] == [a["label"] for a in answer]
        np.testing.assert_allclose([row[j] for j in ranked(row)], [a["score"] for a in answer], atol=1e-5)


@pytest.mark.parametrize(("modern", "activation", "ours"), [
    (True, None, "sigmoid"),  # config_sentence_transformers.json, the default for one label
    (True, "torch.nn.modules.activation.Tanh", "tanh"),  # config_sentence_transformers.json names it
    (False, "torch.nn.modules.linear.Identity", "identity"),  # config.json's sentence_transformers.activation_fn
    (False, None, "sigmoid"),  # a plain one-label classifier
])
def test_cross_encoders_score_as_sentence_transformers(tmp_path: Path, modern, activation, ours) -> None:
    from sentence_transformers import CrossEncoder

    folder = cross_encoder(tmp_path / "reranker", activation=activation, modern=modern)
    encoder = Encoder.load(str(folder), device="cpu")
    assert encoder.spec.head.activation == ours and encoder.spec.task == "rerank"
    query, documents = "the cat", TEXTS + ["fox", "a " * 80]  # the last is cut as the CrossEncoder cuts it
    want = CrossEncoder(str(folder), device="cpu").predict([(query, d) for d in documents], batch_size=32)
    np.testing.assert_allclose(encoder.rerank(query, documents), want, atol=1e-5)
    pairs = encoder.predict([[query, d] for d in documents], raw_scores=True)[:, 0]
    np.testing.assert_allclose(activate(pairs[:, None], ours)[:, 0], want, atol=1e-5)


def test_an_unknown_cross_encoder_activation_is_a_startup_error(tmp_path: Path) -> None:
    folder = cross_encoder(tmp_path / "reranker", activation="torch.nn.modules.activation.Softmax", modern=False)
    with pytest.raises(ConfigurationError, match="Softmax.*not supported"):
        Encoder.load(str(folder), device="cpu")


def test_explicit_pairs_are_never_split_and_equal_the_original_pair_syntax() -> None:
    encoder = Encoder.load(str(GOOGLE), device="cpu", max_seq_len=16, pooling_strategy=PoolingStrategy.CLASSIFICATION,
                           num_labels=3, **CLASSIFIER)
    pair = encoder.predict([["the cat sat", "on the mat"]])
    np.testing.assert_allclose(pair, encoder.encode(["the cat sat ||| on the mat"]), atol=1e-6)
    literal = encoder.predict([["the cat ||| sat"]])  # a text holding the separator stays one text
    assert not np.allclose(literal, encoder.predict(["the cat ||| sat"]))  # which the original's syntax splits
    features = encoder.tokenizer.encode_pairs([["the cat ||| sat"]])
    assert set(features.type_ids.tolist()) == {0}


def test_activations_and_ranking() -> None:
    logits = np.array([[1.0, 2.0, 3.0], [-1000.0, 0.0, 1000.0]], dtype=np.float32)
    probabilities = activate(logits, "softmax")
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-6)
    assert np.isfinite(activate(logits, "sigmoid")).all() and activate(logits, "sigmoid")[1].tolist() == [0, 0.5, 1]
    assert activate(logits, "identity") is logits and activate(logits.astype(np.float16), "tanh").dtype == np.float16
    assert ranked(np.array([0.1, 0.9, 0.5, 0.9])) == [1, 3, 2, 0]  # ties keep input order
    assert ranked(np.array([0.1, 0.9, 0.5]), top_n=2) == [1, 2]
    with pytest.raises(ValueError):
        activate(logits, "relu")
