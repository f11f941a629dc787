"""Quantized vectors (`bert_serving.quantization`): what vector databases store them for."""

from __future__ import annotations

import numpy as np
import pytest

from bert_serving.quantization import PRECISIONS, quantize


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(7)
    raw = rng.standard_normal((64, 384)).astype(np.float32) + rng.standard_normal(384).astype(np.float32)
    return raw / np.linalg.norm(raw, axis=1, keepdims=True)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_text_gets_the_same_bytes_in_any_batch(vectors, precision) -> None:
    whole = quantize(vectors, precision)
    for i in (0, 17, 63):
        alone = quantize(vectors[i : i + 1], precision)
        assert alone.tobytes() == whole[i : i + 1].tobytes()
    np.testing.assert_array_equal(quantize(vectors[::-1], precision), whole[::-1])


def test_int8_dot_products_are_cosines_times_127_squared(vectors) -> None:
    q = quantize(vectors, "int8")
    assert q.dtype == np.int8 and q.shape == vectors.shape
    exact = vectors @ vectors.T
    dots = q.astype(np.int64) @ q.T.astype(np.int64)
    np.testing.assert_allclose(dots / 127**2, exact, atol=0.01)
    assert cosine(q, vectors).min() > 0.998  # a 384-dimension unit vector: steps of 1/127 on components of ~0.05
    # a vector's length is not kept: a longer one gets the same bytes
    np.testing.assert_array_equal(quantize(vectors * 7.5, "int8"), q)
    assert np.abs(q).max() <= 127


def test_uint8_is_int8_shifted_by_128(vectors) -> None:
    q = quantize(vectors, "uint8")
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q.astype(np.int16) - 128, quantize(vectors, "int8"))


def test_binary_packs_the_sign_bits_eight_dimensions_a_byte(vectors) -> None:
    packed = quantize(vectors, "ubinary")
    assert packed.dtype == np.uint8 and packed.shape == (64, 48)
    np.testing.assert_array_equal(np.unpackbits(packed, axis=1).astype(bool), vectors > 0)
    first = int(packed[0, 0])
    assert first >> 7 == (vectors[0, 0] > 0)  # the first dimension in the highest bit
    signed = quantize(vectors, "binary")
    assert signed.dtype == np.int8
    np.testing.assert_array_equal(signed.astype(np.int16), packed.astype(np.int16) - 128)
    # a near neighbour (the same vector, nudged) is the nearest in Hamming distance too
    nudged = vectors + 0.01 * np.random.default_rng(8).standard_normal(vectors.shape).astype(np.float32)
    bits, near = np.unpackbits(packed, axis=1), np.unpackbits(quantize(nudged, "ubinary"), axis=1)
    hamming = (bits[:, None, :] != near[None, :, :]).sum(-1)
    assert (hamming.argmin(axis=1) == np.arange(64)).all()


def test_an_odd_width_pads_the_last_byte_with_zeros() -> None:
    packed = quantize(np.ones((2, 10), dtype=np.float32), "ubinary")
    assert packed.shape == (2, 2) and packed[0].tolist() == [0xFF, 0b11000000]


def test_token_vectors_are_quantized_token_by_token_and_padding_stays_zero(vectors) -> None:
    tokens = np.zeros((2, 5, 384), dtype=np.float16)  # -fp16 token vectors, padded
    tokens[0, :3], tokens[1, :5] = vectors[:3], vectors[3:8]
    q = quantize(tokens, "int8")
    assert q.shape == (2, 5, 384)
    np.testing.assert_array_equal(q[0, :3], quantize(vectors[:3].astype(np.float16), "int8"))
    assert not q[0, 3:].any()
    assert quantize(tokens, "ubinary").shape == (2, 5, 48)


def test_float_is_the_vectors_themselves_and_unknown_names_are_refused(vectors) -> None:
    assert quantize(vectors, "float") is vectors
    with pytest.raises(ValueError, match="one of float, int8, uint8, binary, ubinary"):
        quantize(vectors, "int4")
