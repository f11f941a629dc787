"""What a model can give for a text besides one dense vector, and how those outputs are held.
Numpy only: the client, the server's pipeline and the model share it.

Three kinds of output (`KINDS`), which a request picks among what the served model has:

- ``dense``: one vector per text (``[N, D]``), what every embedder gives;
- ``sparse``: lexical weights, a few (vocabulary id, weight) pairs per text: SPLADE's
  ``log(1 + relu(logits))`` pooled over the tokens, BGE-M3's per-token weights;
- ``colbert``: multi-vectors, one vector per token of each text (BGE-M3's ColBERT vectors).

Variable-size outputs travel as `Ragged`: every text's entries end to end in flat arrays (its
columns), plus offsets; never a padded ``[N, T, ...]`` block. On a wire they are named flat
arrays (`to_parts` / `from_parts`). What users get: `SparseVectors` (which is a CSR matrix:
``to_scipy``), a list of ``[tokens, dim]`` arrays for ColBERT, and `Embeddings` for several at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["COLBERT", "DENSE", "KINDS", "SPARSE", "Embeddings", "Ragged", "SparseVectors", "colbert_rows",
           "from_parts", "kind_bits", "kind_names", "to_parts"]

DENSE, SPARSE, COLBERT = "dense", "sparse", "colbert"
KINDS = (DENSE, SPARSE, COLBERT)
_BIT = {DENSE: 1, SPARSE: 2, COLBERT: 4}


def kind_bits(names: Iterable[str]) -> int:
    """Output kinds as one small int (a bit each), as requests and batches carry them; a name
    not in `KINDS` raises `ValueError`."""
    bits = 0
    for name in names:
        if name not in _BIT:
            raise ValueError(f"unknown output {name!r}; one of {', '.join(KINDS)}")
        bits |= _BIT[name]
    return bits


def kind_names(bits: int) -> tuple[str, ...]:
    """The names of the kinds in ``bits``, in `KINDS` order."""
    return tuple(name for name in KINDS if bits & _BIT[name])


@dataclass(frozen=True)
class Ragged:
    """Rows of different lengths laid end to end: row ``i``'s entries are
    ``column[offsets[i]:offsets[i + 1]]`` of every column (all columns have one entry per item)."""

    offsets: np.ndarray  # int64 [rows + 1]
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + sum(c.nbytes for c in self.columns.values()))

    def row(self, i: int) -> dict[str, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {name: column[a:b] for name, column in self.columns.items()}

    def rows(self, start: int, stop: int) -> Ragged:
        """Rows ``start`` to ``stop`` (not included): views of this one's columns."""
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return Ragged(self.offsets[start : stop + 1] - a, {n: c[a:b] for n, c in self.columns.items()})

    def take(self, rows: Sequence[int] | np.ndarray) -> Ragged:
        """The rows at ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == len(self) and np.array_equal(rows, np.arange(len(self))):
            return self
        starts, lengths = self.offsets[rows], self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Ragged(offsets, {n: c[index] for n, c in self.columns.items()})

    @staticmethod
    def concat(parts: Sequence[Ragged]) -> Ragged:
        """Parts end to end (all with the same columns)."""
        if len(parts) == 1:
            return parts[0]
        offsets = np.zeros(sum(len(p) for p in parts) + 1, dtype=np.int64)
        np.cumsum(np.concatenate([p.lengths for p in parts]), out=offsets[1:])
        names = parts[0].columns
        return Ragged(offsets, {n: np.concatenate([p.columns[n] for p in parts]) for n in names})

    @staticmethod
    def empty(rows: int, like: Ragged) -> Ragged:
        """``rows`` rows of no entries, with ``like``'s columns."""
        return Ragged(np.zeros(rows + 1, dtype=np.int64),
                      {n: c[:0] for n, c in like.columns.items()})


def to_parts(outputs: dict[str, Ragged]) -> list[tuple[str, np.ndarray]]:
    """Ragged outputs as named flat arrays (``sparse.offsets``, ``sparse.indices``...), for a wire."""
    parts = []
    for kind, ragged in outputs.items():
        parts.append((f"{kind}.offsets", ragged.offsets))
        parts.extend((f"{kind}.{name}", column) for name, column in ragged.columns.items())
    return parts


def from_parts(parts: Iterable[tuple[str, np.ndarray]]) -> dict[str, Ragged]:
    """The inverse of `to_parts`."""
    offsets: dict[str, np.ndarray] = {}
    columns: dict[str, dict[str, np.ndarray]] = {}
    for name, array in parts:
        kind, _, column = name.partition(".")
        if column == "offsets":
            offsets[kind] = array
        else:
            columns.setdefault(kind, {})[column] = array
    return {kind: Ragged(offsets[kind], columns.get(kind, {})) for kind in offsets}


class SparseVectors:
    """Sparse vectors of ``N`` texts over a vocabulary of ``dim`` ids: text ``i``'s non-zero
    weights are ``values[offsets[i]:offsets[i + 1]]`` at ids ``indices[...]``, ids ascending.

    That is a CSR matrix's layout: `to_scipy` gives one without copying; `to_dense` the
    ``[N, dim]`` array, `to_dicts` ``{id: weight}`` per text; ``vectors[i]`` is ``(ids, weights)``."""

    def __init__(self, offsets: np.ndarray, indices: np.ndarray, values: np.ndarray, dim: int) -> None:
        self.offsets, self.indices, self.values, self.dim = offsets, indices, values, int(dim)

    @classmethod
    def of(cls, ragged: Ragged, dim: int) -> SparseVectors:
        return cls(ragged.offsets, ragged.columns["indices"], ragged.columns["values"], dim)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"text {i} of {len(self)}")
        i %= len(self)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.indices[a:b], self.values[a:b]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"SparseVectors({len(self)} texts, dim {self.dim}, {len(self.values)} non-zero weights)"

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.dim

    def to_dense(self) -> np.ndarray:
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        dense[np.repeat(np.arange(len(self)), np.diff(self.offsets)), self.indices] = self.values
        return dense

    def to_dicts(self) -> list[dict[int, float]]:
        return [dict(zip(ids.tolist(), weights.tolist())) for ids, weights in self]

    def to_scipy(self):
        """A ``scipy.sparse.csr_matrix`` ``[N, dim]`` (scipy is needed for this alone)."""
        try:
            from scipy.sparse import csr_matrix
        except ImportError:
            raise ImportError("SparseVectors.to_scipy needs scipy: pip install scipy") from None
        return csr_matrix((self.values, self.indices, self.offsets), shape=self.shape)

    @classmethod
    def concat(cls, parts: Sequence[SparseVectors]) -> SparseVectors:
        ragged = Ragged.concat([Ragged(p.offsets, {"indices": p.indices, "values": p.values}) for p in parts])
        return cls.of(ragged, parts[0].dim)


@dataclass(frozen=True)
class Embeddings:
    """Several outputs of the same texts from one forward pass; those not asked for are None."""

    dense: np.ndarray | None = None  # [N, D]
    sparse: SparseVectors | None = None
    colbert: list[np.ndarray] | None = None  # per text, [tokens, dim]


def colbert_rows(ragged: Ragged) -> list[np.ndarray]:
    """ColBERT vectors as a list of ``[tokens, dim]`` arrays (views of the flat block)."""
    vectors = ragged.columns["vectors"]
    return [vectors[a:b] for a, b in zip(ragged.offsets[:-1].tolist(), ragged.offsets[1:].tolist())]
