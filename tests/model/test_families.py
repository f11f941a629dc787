"""Every family the server runs (`tests.families`: tiny random models with tokenizers of their
real kind), in process, against sentence-transformers, the reference its users compare with,
and against the family's own transformers tokenizer for sentence pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bert_serving.model import Encoder

from ..families import FAMILIES, MAX_SEQ_LEN, pairs, sample_texts


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def loaded(family_model):
    """``loaded(name)``: (our Encoder, the SentenceTransformer) on that family's folder, once."""
    from sentence_transformers import SentenceTransformer

    cache = {}

    def get(name: str):
        if name not in cache:
            folder = str(family_model(name))
            cache[name] = Encoder.load(folder, device="cpu"), SentenceTransformer(folder, device="cpu")
        return cache[name]

    return get


@pytest.mark.parametrize("name", FAMILIES)
def test_vectors_equal_sentence_transformers_with_and_without_a_prompt(name, loaded) -> None:
    family = FAMILIES[name]
    encoder, reference = loaded(name)
    assert (encoder.spec.config.model_type, encoder.spec.config.path) == (name, family.path)
    texts = sample_texts()
    assert encoder.tokenizer.encode(texts).lengths.max() == MAX_SEQ_LEN  # some texts are cut, as the model's are
    prompt_name = next(iter(family.prompts))
    plain = encoder.encode(texts)
    prompted = encoder.encode(texts, prompt_name=prompt_name)
    assert cosine(plain, reference.encode(texts)).min() >= 0.99999
    assert cosine(prompted, reference.encode(texts, prompt_name=prompt_name)).min() >= 0.99999
    assert cosine(prompted, plain).min() < 0.9999  # the prompt made a difference the comparison could see
    assert cosine(plain[:-1], plain[1:]).min() < 0.9999  # and so do the texts


@pytest.mark.parametrize("name", FAMILIES)
def test_pairs_go_through_the_models_own_template(name, family_model, loaded) -> None:
    from transformers import AutoTokenizer

    encoder, reference = loaded(name)
    tokenizer = AutoTokenizer.from_pretrained(str(family_model(name)))
    both = pairs()
    features = encoder.tokenizer.encode([f"{a} ||| {b}" for a, b in both])  # no prompt given
    for row, (a, b) in enumerate(both):
        want = tokenizer(a, b, truncation=True, max_length=MAX_SEQ_LEN)
        start, end = features.offsets[row], features.offsets[row + 1]
        assert features.input_ids[start:end].tolist() == want["input_ids"]
        if "token_type_ids" in want:
            assert features.type_ids[start:end].tolist() == want["token_type_ids"]
    batch = tokenizer([a for a, _ in both], [b for _, b in both], padding=True, truncation=True,
                      max_length=MAX_SEQ_LEN, return_tensors="pt")
    with torch.no_grad():
        want = reference.forward(dict(batch))["sentence_embedding"].numpy()
    got = encoder.encode([f"{a} ||| {b}" for a, b in both], prompt="")  # no default prompt: as the reference
    assert cosine(got, want).min() >= 0.99999


def test_the_default_prompt_applies_unless_a_request_names_another_or_none(loaded) -> None:
    encoder, reference = loaded("xlm-roberta")  # default_prompt_name: passage
    texts = sample_texts()[:8]
    default = encoder.encode(texts)
    np.testing.assert_allclose(default, encoder.encode(texts, prompt_name="passage"), atol=1e-6)
    np.testing.assert_allclose(encoder.encode(texts, prompt="passage: "), default, atol=1e-6)
    assert cosine(encoder.encode(texts, prompt=""), reference.encode(texts, prompt="")).min() >= 0.99999
    assert cosine(encoder.encode(texts, prompt=""), default).min() < 0.9999


def test_prompt_tokens_left_out_of_pooling_as_the_folder_says(loaded) -> None:
    encoder, _ = loaded("electra")  # include_prompt: false
    features = encoder.tokenizer.encode(["the cat sat"], prompt="Represent the question for retrieval: ")
    hidden = encoder.tokenizer.prompt_length("Represent the question for retrieval: ")
    assert hidden > 1 and not features.pool_mask[:hidden].any() and features.pool_mask[hidden:].all()
