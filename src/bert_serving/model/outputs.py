"""`OutputLayout`: the shape of what a request gets back, and how a batch's rows land in it.

Numpy only: the server's sink reassembles results with it, without importing the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OutputLayout"]


@dataclass(frozen=True)
class OutputLayout:
    dim: int
    dtype: np.dtype
    per_token: bool = False  # NONE pooling: one vector per token, [N, T, D]
    max_seq_len: int | None = None  # T when fixed; None: dynamic
    fixed_length: int | None = None  # T when dynamic but -fixed_embed_length asks for a fixed T

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
        return int(np.prod(self.shape(count, longest), dtype=np.int64)) * np.dtype(self.dtype).itemsize

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
