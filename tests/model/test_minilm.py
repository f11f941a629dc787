"""The embedded default model against sentence-transformers, the reference it must match."""

from __future__ import annotations

import numpy as np
import pytest

from bert_serving.model import Encoder
from bert_serving.model.loading import default_model_dir

WORDS = ("the quick brown fox jumps over lazy dog while a server maps sentences to vectors "
         "Café naïve résumé 東京 北京 emoji 🙂 numbers 3.14 and URLs https://example.org/x?y=1 "
         "don't stop BELIEVING extraordinarily-long-hyphenated-compound").split()


def sentences(n: int) -> list[str]:
    rng = np.random.default_rng(7)
    return [" ".join(rng.choice(WORDS, size=rng.integers(1, 90))) for _ in range(n)]


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder.load(device="cpu")


def test_default_model_matches_sentence_transformers(minilm) -> None:
    from sentence_transformers import SentenceTransformer

    texts = sentences(100) + ["a", "Hello, World!", "x " * 400]  # the last one is truncated at 256
    reference = SentenceTransformer(str(default_model_dir()), device="cpu").encode(texts, batch_size=32)
    ours = minilm.encode(texts)
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # the Normalize module


def test_bfloat16_mode_stays_at_cosine_0_999_on_the_default_model(minilm) -> None:
    texts = sentences(100)
    fast = Encoder.load(device="cpu", dtype="bfloat16").encode(texts)
    cosine = (minilm.encode(texts) * fast).sum(1)  # both L2-normalised
    assert cosine.min() >= 0.999
