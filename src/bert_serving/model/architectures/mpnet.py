"""MPNet as BERT: the same post-norm layer under other names, no token types, positions past
the padding index (as RoBERTa's), plus one thing BERT lacks: a relative position bias, shared
by all layers, added to the attention scores (T5's bidirectional buckets).

`as_bert_config` and `bert_names` translate its config and weights; `position_bias` is the
bias over a padded batch's positions, which `bert.BertModel` adds to its attention mask.
"""

from __future__ import annotations

import math
import re

import torch

__all__ = ["BUCKETS", "as_bert_config", "bert_names", "position_bias"]

BUCKETS = 32  # transformers' MPNet always buckets into 32, whatever its config says
_MAX_DISTANCE = 128
_PADDING_INDEX = 1  # fixed in MPNet's embeddings: positions start at 2

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.attention\.(attn\.[qkvo]|LayerNorm)\.(weight|bias)$")
_LAYER_NAMES = {"attn.q": "attention.self.query", "attn.k": "attention.self.key", "attn.v": "attention.self.value",
                "attn.o": "attention.output.dense", "LayerNorm": "attention.output.LayerNorm"}


def as_bert_config(raw: dict) -> dict:
    return {**raw, "type_vocab_size": 0, "pad_token_id": _PADDING_INDEX,
            "relative_attention_buckets": int(raw.get("relative_attention_num_buckets", BUCKETS))}


def bert_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``encoder.layer.N.attention.attn.q.weight`` -> ``encoder.layer.N.attention.self.query.weight``, ..."""
    renamed = {}
    for name, tensor in weights.items():
        match = _LAYER.match(name)
        if match:
            index, module, kind = match.groups()
            name = f"encoder.layer.{index}.{_LAYER_NAMES[module]}.{kind}"
        renamed[name] = tensor
    return renamed


def position_bias(table: torch.nn.Embedding, length: int) -> torch.Tensor:
    """``[1, heads, length, length]``: the bias of each key position relative to each query's."""
    positions = torch.arange(length, device=table.weight.device)
    relative = positions[None, :] - positions[:, None]  # key - query
    return table(_bucket(relative)).permute(2, 0, 1).unsqueeze(0)


def _bucket(relative: torch.Tensor) -> torch.Tensor:
    """T5's bidirectional bucketing: half the buckets per direction, exact up to a quarter of
    them, logarithmic beyond, the farthest all in the last."""
    half = BUCKETS // 2
    exact = half // 2
    distance = relative.abs()
    far = exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(_MAX_DISTANCE / exact)
                   * (half - exact)).to(torch.long)
    far = far.clamp(max=half - 1)
    return (relative > 0).long() * half + torch.where(distance < exact, distance, far)
