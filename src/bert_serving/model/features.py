"""`Features`: token ids of many sequences, packed flat. What tokenization produces, what the
batcher slices and merges across requests, and what the model consumes, all in one shape.

Sequence ``i`` occupies ``input_ids[offsets[i]:offsets[i + 1]]``; no padding is stored.
Numpy only, so it crosses process boundaries as a few raw buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Sequence

import numpy as np

__all__ = ["Features", "plan_batches"]


@dataclass(frozen=True)
class Features:
    input_ids: np.ndarray  # int32 [total]
    type_ids: np.ndarray  # int8 [total], 0 for segment A (with [CLS] and its [SEP]), 1 for B
    pool_mask: np.ndarray  # bool [total], the positions pooling sees (-mask_cls_sep clears [CLS]/[SEP])
    offsets: np.ndarray  # int64 [n + 1]
    tokens: tuple[tuple[str, ...], ...] | None = None  # word pieces, kept for -show_tokens_to_client

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @cached_property  # asked for several times on a request's way through the server
    def lengths(self) -> np.ndarray:
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def from_lists(
        cls,
        ids: Sequence[Sequence[int]],
        type_ids: Sequence[Sequence[int]],
        pool_mask: Sequence[Sequence[bool]],
        tokens: Sequence[Sequence[str]] | None = None,
    ) -> Features:
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in ids], out=offsets[1:])
        flat = lambda rows, dtype: np.fromiter(chain.from_iterable(rows), dtype=dtype, count=int(offsets[-1]))  # noqa: E731
        return cls(
            input_ids=flat(ids, np.int32),
            type_ids=flat(type_ids, np.int8),
            pool_mask=flat(pool_mask, np.bool_),
            offsets=offsets,
            tokens=None if tokens is None else tuple(tuple(t) for t in tokens),
        )

    def rows(self, start: int, stop: int) -> Features:
        """Sequences ``start`` to ``stop`` (not included): views of this one's arrays."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return Features(self.input_ids[a:b], self.type_ids[a:b], self.pool_mask[a:b],
                        self.offsets[start : stop + 1] - a, None if self.tokens is None else self.tokens[start:stop])

    def take(self, rows: Sequence[int] | np.ndarray) -> Features:
        """The sequences at ``rows``, in that order."""
        return Features.concat([self], [rows])

    @staticmethod
    def concat(parts: Sequence[Features], rows: Sequence[Sequence[int] | np.ndarray] | None = None) -> Features:
        """Rows of several `Features` (all rows when ``rows`` is None) as one `Features`."""
        if rows is None or all(_all_rows(part, picked) for part, picked in zip(parts, rows)):
            return _joined(parts)
        starts, ends, sources = [], [], []
        for index, part in enumerate(parts):
            picked = np.arange(len(part)) if rows is None else np.asarray(rows[index], dtype=np.int64)
            starts.append(part.offsets[picked])
            ends.append(part.offsets[picked + 1])
            sources.append(np.full(len(picked), index))
        start, end, source = np.concatenate(starts), np.concatenate(ends), np.concatenate(sources)
        lengths = end - start
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])

        def gather(name: str) -> np.ndarray:
            arrays = [getattr(p, name) for p in parts]
            if len(parts) == 1:
                base, shift = arrays[0], np.zeros(1, dtype=np.int64)
            else:
                base = np.concatenate(arrays)
                shift = np.zeros(len(parts), dtype=np.int64)
                np.cumsum([len(a) for a in arrays[:-1]], out=shift[1:])
            index = np.repeat(start + shift[source] - offsets[:-1], lengths) + np.arange(offsets[-1])
            return base[index]

        tokens = None
        if all(p.tokens is not None for p in parts):
            tokens = tuple(parts[s].tokens[r] for s, r in zip(source, _row_ids(parts, rows)))
        return Features(gather("input_ids"), gather("type_ids"), gather("pool_mask"), offsets, tokens)


def _all_rows(part: Features, picked: Sequence[int] | np.ndarray) -> bool:
    """``picked`` is every row of ``part``, in order (a batch of small requests takes them whole)."""
    n = len(part)
    if len(picked) != n:
        return False
    return n == 0 or (int(picked[0]) == 0 and (n == 1 or bool(np.array_equal(picked, np.arange(n)))))


def _joined(parts: Sequence[Features]) -> Features:
    """Whole `Features` end to end: their arrays concatenated, the offsets shifted."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.zeros(sum(len(p) for p in parts) + 1, dtype=np.int64)
    np.cumsum(np.concatenate([p.lengths for p in parts]), out=offsets[1:])
    tokens = None
    if all(p.tokens is not None for p in parts):
        tokens = tuple(t for p in parts for t in p.tokens)
    return Features(np.concatenate([p.input_ids for p in parts]), np.concatenate([p.type_ids for p in parts]),
                    np.concatenate([p.pool_mask for p in parts]), offsets, tokens)


def _row_ids(parts: Sequence[Features], rows) -> list[int]:
    if rows is None:
        return [r for p in parts for r in range(len(p))]
    return [int(r) for picked in rows for r in picked]


def plan_batches(lengths: np.ndarray, max_batch_tokens: int, max_batch_size: int) -> list[np.ndarray]:
    """Row indices cut into batches, longest first, each within ``max_batch_tokens`` padded
    tokens (rows x longest row) and ``max_batch_size`` rows; a row longer than the budget
    still gets a batch of its own."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch_size, max_batch_tokens // longest))
        batches.append(order[start : start + size])
        start += size
    return batches
