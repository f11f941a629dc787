"""Sparse and multi-vector outputs over the packed hidden states (`outputs` names them):

- **SPLADE** (`MaskedLMHead`, `splade`): a masked-LM head's logits per token, ``log(1 +
  relu(logits))`` (``log1p_relu``: log1p once more), max- (or sum-) pooled over each text's tokens:
  a weight per vocabulary id, mostly zeros, as sentence-transformers' ``SpladePooling`` computes
  it. The head runs on the packed tokens a chunk at a time (`SPLADE_CHUNK_BYTES` of logits), each
  chunk pooled into a ``[texts, vocabulary]`` block at once: never a ``[tokens, vocabulary]``
  matrix of the whole batch (benchmarks/splade_memory.py measures the difference).
- **BGE-M3** (`M3Heads`): its two small heads, saved beside the weights as FlagEmbedding saves
  them (``colbert_linear.pt``, ``sparse_linear.pt``, each a ``torch.nn.Linear`` state dict):
  `lexical_weights` is ``relu(sparse_linear(h))`` per token, the max per vocabulary id of each
  text, its special tokens dropped; `colbert_vectors` is ``colbert_linear(h)`` of every token but
  the first ([CLS]), each normalised, as ``BGEM3FlagModel.encode`` gives them.

Each returns a `Ragged` (numpy) with one row per text: ``indices`` (int32) and ``values``
(float32) for sparse outputs, ``vectors`` for ColBERT's.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError
from ..outputs import Ragged
from .packing import Packing
from .strategies import SpladeOptions

# index_reduce_ (SPLADE's max pooling, a chunk of rows at a time) says once that it is "in beta"
warnings.filterwarnings("ignore", message="index_reduce", category=UserWarning)

__all__ = ["M3_HEAD_FILES", "SPLADE_CHUNK_BYTES", "M3Heads", "MaskedLMHead", "colbert_vectors", "lexical_weights",
           "mlm_name", "splade"]

M3_HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")
# Logits computed at once while pooling SPLADE: 32 MiB is 275 tokens of a 30,522-word vocabulary.
# On 2 cores a bigger chunk is no faster (the decoder's matmul is as efficient at 275 rows as at 4,096).
SPLADE_CHUNK_BYTES = 32 * 1024**2

# each family's masked-LM head under one set of names (BERT's transform, RoBERTa's, MPNet's and
# CamemBERT's lm_head, DistilBERT's vocab_*, ELECTRA's generator head): dense, activation, norm, decoder
_MLM_PREFIXES = (
    ("cls.predictions.transform.dense.", "mlm.dense."), ("cls.predictions.transform.LayerNorm.", "mlm.norm."),
    ("cls.predictions.decoder.", "mlm.decoder."), ("cls.predictions.bias", "mlm.decoder.bias"),
    ("lm_head.dense.", "mlm.dense."), ("lm_head.layer_norm.", "mlm.norm."), ("lm_head.decoder.", "mlm.decoder."),
    ("lm_head.bias", "mlm.decoder.bias"),
    ("vocab_transform.", "mlm.dense."), ("vocab_layer_norm.", "mlm.norm."), ("vocab_projector.", "mlm.decoder."),
    ("generator_predictions.dense.", "mlm.dense."), ("generator_predictions.LayerNorm.", "mlm.norm."),
    ("generator_lm_head.", "mlm.decoder."),
)
MLM_WEIGHTS = ("mlm.dense.weight", "mlm.dense.bias", "mlm.norm.weight", "mlm.norm.bias", "mlm.decoder.bias")
# the activation between the head's dense layer and its norm: BERT's and DistilBERT's follow the
# model's own (hidden_act); RoBERTa's family, MPNet's and ELECTRA's generator use gelu whatever it is
_FIXED_GELU = ("roberta", "xlm-roberta", "camembert", "mpnet", "electra")
_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
                "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "swish": F.silu}


def mlm_name(name: str) -> str:
    """A masked-LM head's weight under our ``mlm.*`` names (other names as they are)."""
    for theirs, ours in _MLM_PREFIXES:
        if name.startswith(theirs):
            return ours + name[len(theirs):]
    return name


def has_mlm_head(names: set[str]) -> bool:
    """True when weights named so (as stored) hold a masked-LM head."""
    return all(n in {mlm_name(name) for name in names} for n in ("mlm.dense.weight", "mlm.norm.weight"))


class MaskedLMHead(nn.Module):
    """dense -> activation -> layer norm -> decoder (tied to the word embeddings unless stored)."""

    def __init__(self, config) -> None:
        super().__init__()
        width = config.embedding_size or config.hidden_size
        act = "gelu" if config.model_type in _FIXED_GELU else config.hidden_act
        self.act = _ACTIVATIONS[act]
        self.dense = nn.Linear(config.hidden_size, width)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(width, config.vocab_size)
        self.vocab_size = config.vocab_size

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(hidden)))

    def load(self, weights: Mapping[str, torch.Tensor], source: str) -> None:
        missing = [name for name in MLM_WEIGHTS if name not in weights]
        if missing:
            raise ConfigurationError(f"{source} has no masked-LM head (weight {missing[0]!r} is missing): SPLADE needs "
                                     "one, as a *ForMaskedLM folder or a SparseEncoder saves it")
        decoder = weights.get("mlm.decoder.weight", weights.get("embeddings.word_embeddings.weight"))  # tied
        self.load_state_dict({"dense.weight": weights["mlm.dense.weight"], "dense.bias": weights["mlm.dense.bias"],
                              "norm.weight": weights["mlm.norm.weight"], "norm.bias": weights["mlm.norm.bias"],
                              "decoder.weight": decoder, "decoder.bias": weights["mlm.decoder.bias"]})


def splade(hidden: torch.Tensor, head: MaskedLMHead, packing: Packing, pool_mask: torch.Tensor,
           options: SpladeOptions, chunk_bytes: int | None = None) -> Ragged:
    """SPLADE vectors of the batch's texts from their packed last hidden states ``[tokens, H]``,
    over the tokens of ``pool_mask``; one `Ragged` row of (id, weight) per text, ids ascending.
    ``chunk_bytes``: logits computed at once (default `SPLADE_CHUNK_BYTES`)."""
    rows = packing.row
    if not bool(pool_mask.all()):
        hidden, rows = hidden[pool_mask], rows[pool_mask]
    x = head.transform(hidden)
    pooled = torch.zeros(packing.batch_size, head.vocab_size, dtype=torch.float32, device=hidden.device)
    step = max(1, (chunk_bytes or SPLADE_CHUNK_BYTES) // (4 * head.vocab_size))
    for start in range(0, x.shape[0], step):
        weights = head.decoder(x[start : start + step]).float().relu_().log1p_()
        if options.activation == "log1p_relu":
            weights.log1p_()
        if options.pooling == "max":  # every weight is >= 0: zeros are max pooling's neutral start
            pooled.index_reduce_(0, rows[start : start + step], weights, "amax")
        else:
            pooled.index_add_(0, rows[start : start + step], weights)
        del weights  # before the next chunk's: one chunk alive at a time
    return _sparse_rows(pooled)


def _sparse_rows(block: torch.Tensor) -> Ragged:
    """The non-zero entries of ``[texts, vocabulary]``, row by row."""
    found = block.nonzero()
    values = block[found[:, 0], found[:, 1]]
    counts = torch.bincount(found[:, 0], minlength=block.shape[0])
    offsets = np.zeros(block.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts.cpu().numpy(), out=offsets[1:])
    return Ragged(offsets, {"indices": found[:, 1].to(torch.int32).cpu().numpy(),
                            "values": values.cpu().numpy()})


class M3Heads(nn.Module):
    """BGE-M3's ColBERT projection and its per-token sparse weight."""

    def __init__(self, hidden_size: int, colbert_dim: int) -> None:
        super().__init__()
        self.colbert = nn.Linear(hidden_size, colbert_dim)
        self.sparse = nn.Linear(hidden_size, 1)

    @staticmethod
    def read(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
        """The two heads' state dicts, as FlagEmbedding saves them."""
        heads = {}
        for name in M3_HEAD_FILES:
            try:
                state = torch.load(folder / name, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ConfigurationError(f"cannot read {folder / name}: {exc}") from None
            if not isinstance(state, dict) or not {"weight", "bias"} <= set(state):
                raise ConfigurationError(f"{folder / name} is not a torch.nn.Linear state dict (weight, bias)")
            heads[name] = state
        return heads

    @classmethod
    def shapes(cls, folder: Path, hidden_size: int) -> int:
        """The ColBERT vectors' width; `ConfigurationError` unless both heads fit ``hidden_size``."""
        heads = cls.read(folder)
        colbert, sparse = heads["colbert_linear.pt"]["weight"], heads["sparse_linear.pt"]["weight"]
        if colbert.ndim != 2 or colbert.shape[1] != hidden_size or tuple(sparse.shape) != (1, hidden_size):
            raise ConfigurationError(f"{folder}: colbert_linear.pt {list(colbert.shape)} and sparse_linear.pt "
                                     f"{list(sparse.shape)} do not fit a hidden size of {hidden_size} (BGE-M3's are "
                                     "[dim, hidden] and [1, hidden])")
        return int(colbert.shape[0])

    @classmethod
    def load(cls, folder: Path, hidden_size: int) -> M3Heads:
        heads = cls.read(folder)
        module = cls(hidden_size, cls.shapes(folder, hidden_size))
        module.colbert.load_state_dict({k: v.float() for k, v in heads["colbert_linear.pt"].items()})
        module.sparse.load_state_dict({k: v.float() for k, v in heads["sparse_linear.pt"].items()})
        return module.eval().requires_grad_(False)


def lexical_weights(hidden: torch.Tensor, input_ids: torch.Tensor, packing: Packing, heads: M3Heads,
                    dropped: torch.Tensor) -> Ragged:
    """BGE-M3's sparse vectors: per text, each vocabulary id's largest ``relu(sparse(h))`` over
    its tokens, ids in ``dropped`` (its special tokens) and zero weights left out."""
    weights = torch.relu(heads.sparse(hidden)).squeeze(-1).float()
    ids = input_ids.long()
    keep = (weights > 0) & ~torch.isin(ids, dropped)
    vocab = int(ids.max()) + 1 if ids.numel() else 1
    keys = packing.row[keep] * vocab + ids[keep]
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    values = torch.zeros(len(unique), dtype=torch.float32, device=hidden.device).scatter_reduce_(
        0, inverse, weights[keep], "amax", include_self=False)
    counts = torch.bincount(unique // vocab, minlength=packing.batch_size)
    offsets = np.zeros(packing.batch_size + 1, dtype=np.int64)
    np.cumsum(counts.cpu().numpy(), out=offsets[1:])
    return Ragged(offsets, {"indices": (unique % vocab).to(torch.int32).cpu().numpy(), "values": values.cpu().numpy()})


def colbert_vectors(hidden: torch.Tensor, packing: Packing, heads: M3Heads, wanted: torch.Tensor) -> Ragged:
    """BGE-M3's ColBERT vectors of the texts whose ``wanted`` (bool ``[texts]``) is set: every
    token's but the first ([CLS]), each normalised; the other texts get none."""
    keep = wanted[packing.row] & (packing.positions > 0)
    vectors = F.normalize(heads.colbert(hidden[keep]).float(), dim=-1)
    counts = torch.where(wanted, packing.lengths - 1, torch.zeros_like(packing.lengths))
    offsets = np.zeros(packing.batch_size + 1, dtype=np.int64)
    np.cumsum(counts.cpu().numpy(), out=offsets[1:])
    return Ragged(offsets, {"vectors": vectors.cpu().numpy()})
