"""`PoolingStrategy`: what a request's vectors are made of (``-pooling_strategy``), the
original's values and names. Plain Python: the CLI and the server's configuration read it
without importing torch (`pooling` computes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["PoolingStrategy", "SpladeOptions"]


class PoolingStrategy(Enum):
    # values are the original's: SHOW_CONFIG reports them as ints
    NONE = 0
    REDUCE_MAX = 1
    REDUCE_MEAN = 2
    REDUCE_MEAN_MAX = 3
    FIRST_TOKEN = 4
    LAST_TOKEN = 5
    CLS_TOKEN = 4  # alias of FIRST_TOKEN
    SEP_TOKEN = 5  # alias of LAST_TOKEN
    CLS_POOLED = 6
    CLASSIFICATION = 7  # softmax over a fine-tuned classifier head (`heads`), -num_labels outputs
    REGRESSION = 8  # sigmoid of a fine-tuned one-output head (`heads`)
    REDUCE_WEIGHTED_MEAN = 9  # sentence-transformers' weightedmean: token i weighs i + 1
    REDUCE_MEAN_SQRT_LEN = 10  # sentence-transformers' mean_sqrt_len_tokens: sum / sqrt(count)
    SPLADE = 11  # sparse: log(1 + relu(masked-LM logits)) pooled over the tokens (`lexical`)

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_string(cls, value: str) -> PoolingStrategy:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(cls.__members__)
            raise ValueError(f"unknown pooling strategy {value!r}; choose one of {names}") from None

    @property
    def per_token(self) -> bool:
        """True when the output keeps one vector per token (``[N, T, D]``)."""
        return self is PoolingStrategy.NONE

    @property
    def is_sparse(self) -> bool:
        """True for SPLADE: a weight per vocabulary id, mostly zeros, instead of a dense vector."""
        return self is PoolingStrategy.SPLADE

    @property
    def is_head(self) -> bool:
        """True for the strategies that answer a fine-tuned head's scores instead of a vector."""
        return self in (PoolingStrategy.CLASSIFICATION, PoolingStrategy.REGRESSION)


@dataclass(frozen=True)
class SpladeOptions:
    """How SPLADE pools (sentence-transformers' ``SpladePooling``): the activation before the
    ``log1p`` (``relu``; ``log1p_relu`` applies log1p twice, OpenSearch's models) and ``max``
    (SPLADE v2 and later) or ``sum`` over the tokens."""

    pooling: str = "max"
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "sum"):
            raise ValueError(f"SPLADE pools by max or sum, not {self.pooling!r}")
        if self.activation not in ("relu", "log1p_relu"):
            raise ValueError(f"SPLADE's activation is relu or log1p_relu, not {self.activation!r}")
