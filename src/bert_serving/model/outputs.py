"""`OutputLayout`: the shape of what a request gets back, and how a batch's rows land in it;
with the output kinds the model has (`bert_serving.outputs`), the bounds of its sparse and
ColBERT outputs, which admission counts (`nbytes_of`).

Numpy only: the server's sink reassembles results with it, without importing the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..outputs import COLBERT, DENSE, SPARSE, Ragged, kind_bits

__all__ = ["BatchOutput", "OutputLayout"]

_BITS = {name: kind_bits([name]) for name in (DENSE, SPARSE, COLBERT)}


@dataclass(frozen=True)
class OutputLayout:
    dim: int
    dtype: np.dtype
    per_token: bool = False  # NONE pooling: one vector per token, [N, T, D]
    max_seq_len: int | None = None  # T when fixed; None: dynamic
    fixed_length: int | None = None  # T when dynamic but -fixed_embed_length asks for a fixed T
    kinds: int = 1  # the outputs the model has (`bert_serving.outputs.kind_bits`): dense alone by default
    sparse_dim: int = 0  # the vocabulary sparse vectors index (0: none)
    sparse_per_token: bool = False  # at most one weight per token (BGE-M3); else up to sparse_dim (SPLADE)
    colbert_dim: int = 0  # width of a ColBERT vector (0: none)

    @property
    def default_kinds(self) -> int:
        """What a request that names no output gets: the dense vectors, or a SPLADE model's sparse ones."""
        return _BITS[DENSE] if self.kinds & _BITS[DENSE] else self.kinds

    def nbytes_of(self, kinds: int, count: int, lengths: np.ndarray | None = None) -> int:
        """At most the bytes of the outputs ``kinds`` of ``count`` texts of these token
        ``lengths`` (None: not tokenized yet, only what the count alone bounds)."""
        longest = 0 if lengths is None else int(lengths.max(initial=0))
        total = self.nbytes(count, longest) if kinds & _BITS[DENSE] else 0
        if kinds & _BITS[SPARSE]:  # an int32 id and a float32 weight per entry
            if not self.sparse_per_token:
                total += 8 * self.sparse_dim * count
            elif lengths is not None:
                total += 8 * int(lengths.sum())
        if kinds & _BITS[COLBERT] and lengths is not None:  # a vector per token but [CLS]
            total += 4 * self.colbert_dim * int(np.maximum(lengths - 1, 0).sum())
        return total + (8 * (count + 1) if kinds & ~_BITS[DENSE] else 0)

    def shape(self, count: int, longest: int = 0) -> tuple[int, ...]:
        """The result's shape for ``count`` sequences, the longest ``longest`` tokens: ``[N, D]``,
        or ``[N, T, D]`` per token (T = max_seq_len; when dynamic, the longest sequence, or
        max_position_embeddings with -fixed_embed_length)."""
        if not self.per_token:
            return (count, self.dim)
        if self.max_seq_len is not None:
            t = self.max_seq_len
        elif self.fixed_length is not None:
            t = self.fixed_length
        else:
            t = longest
        return (count, t, self.dim)

    def nbytes(self, count: int, longest: int = 0) -> int:
        """Bytes of that result (with the default ``longest``: at least that many)."""
        return math.prod(self.shape(count, longest)) * np.dtype(self.dtype).itemsize  # Python ints: no overflow

    def buffer(self, lengths: np.ndarray) -> np.ndarray:
        """Zeros shaped like the result for sequences of these lengths (see `shape`)."""
        return np.zeros(self.shape(len(lengths), int(lengths.max(initial=0))), dtype=self.dtype)

    @staticmethod
    def place(buffer: np.ndarray, rows: np.ndarray, block: np.ndarray, lengths: np.ndarray) -> None:
        """Write a batch's output ``block`` into ``buffer`` at ``rows``."""
        if buffer.ndim == 2:
            buffer[rows] = block
            return
        for row, vectors, length in zip(rows, block, lengths):
            buffer[row, :length] = vectors[:length]


@dataclass(frozen=True)
class BatchOutput:
    """What a replica answers for a batch with outputs besides dense vectors (`Encoder.embed_outputs`):
    ``dense`` ``[B, D]`` (``[B, 0]`` when no text of the batch asked for it) and the ragged outputs
    by kind (``sparse``, ``colbert``), one row per text of the batch."""

    dense: np.ndarray
    ragged: dict[str, Ragged]
