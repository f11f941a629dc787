"""Quantized vectors, computed from the float ones after the model has answered: Cohere's
``embedding_types`` on HTTP, ``BertClient.encode(..., precision=...)`` over ZeroMQ. Numpy only.

Each vector is quantized on its own, from nothing but its float values, so the same text gives
the same bytes whatever else shares its batch (sentence-transformers' ``quantize_embeddings``
calibrates int8 on the batch it is given; a server cannot):

- ``int8``: ``round(127 * v / ‖v‖)``, the unit vector's components times 127. A unit vector's
  components lie in [-1, 1], so nothing is ever clipped, and one scale serves every vector of
  every model: dot products of int8 vectors are 127² times the cosine similarity (to about 0.01;
  MiniLM's vectors keep a cosine of 0.999 to their floats), so dot product, cosine and L2 rank
  nearly as the float vectors do (97% of MiniLM's 10 nearest neighbours are the same).
  The vector's length is not kept (a normalised model's is 1 anyway);
- ``uint8``: ``int8 + 128``, in 0..255 (L2 distances equal int8's);
- ``ubinary``: the sign bits (1 where ``v > 0``), 8 dimensions a byte, the first in the highest
  bit (``numpy.packbits``); D/8 bytes, the last byte zero-padded when D is not a multiple of 8.
  Compare with the Hamming distance;
- ``binary``: ``ubinary - 128`` as int8 (sentence-transformers' and Cohere's signed form);
- ``float``: the vectors as they are.

A ``[N, T, D]`` array of token vectors (``-pooling_strategy NONE``) is quantized token by
token; padding (a zero vector) stays zeros.
"""

from __future__ import annotations

import numpy as np

__all__ = ["INT8_SCALE", "PRECISIONS", "check_precision", "quantize"]

PRECISIONS = ("float", "int8", "uint8", "binary", "ubinary")
INT8_SCALE = 127


def check_precision(precision: object) -> str:
    """``precision`` if it names one of `PRECISIONS`; else a `ValueError` that lists them."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r:.40}")
    return precision


def quantize(vectors: np.ndarray, precision: str) -> np.ndarray:
    """``vectors`` (``[..., D]`` floats) as ``precision`` (module docstring), along the last axis."""
    check_precision(precision)
    if precision == "float":
        return vectors
    values = np.asarray(vectors, dtype=np.float32)
    if precision in ("binary", "ubinary"):
        bits = np.packbits(values > 0, axis=-1)
        return bits if precision == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    unit = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    signed = np.rint(unit * INT8_SCALE).astype(np.int8)
    return signed if precision == "int8" else (signed.astype(np.int16) + 128).astype(np.uint8)
