"""A head's logits -> the scores a user gets: the activations, and ranking. Numpy only, so
the server's pipeline applies them per request (``raw_scores`` skips them) without torch.

Which activation a model gets is decided once, when it is resolved (`heads.HeadSpec`):

- ``softmax``: single-label classification (and the original's CLASSIFICATION);
- ``sigmoid``: multi-label classification, one-output classifiers and cross-encoders, and the
  original's REGRESSION;
- ``identity``: regression (Hugging Face ``problem_type``), or a cross-encoder that says so;
- ``tanh``: a cross-encoder that says so.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATIONS", "activate", "ranked"]

ACTIVATIONS = ("softmax", "sigmoid", "identity", "tanh")


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """``activation`` over the last axis of ``logits`` (``[N, L]``), computed in float32 and
    returned in the logits' dtype."""
    x = logits.astype(np.float32, copy=False)
    if activation == "softmax":
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        out = e / e.sum(axis=-1, keepdims=True)
    elif activation == "sigmoid":
        out = 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function, without overflow
    elif activation == "tanh":
        out = np.tanh(x)
    elif activation == "identity":
        return logits
    else:
        raise ValueError(f"unknown activation {activation!r}; one of {', '.join(ACTIVATIONS)}")
    return out.astype(logits.dtype, copy=False)


def ranked(scores: np.ndarray, top_n: int | None = None) -> list[int]:
    """Indices of ``scores`` (``[N]``), highest first, ties in input order; the first ``top_n``."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [int(i) for i in order[:top_n]]
