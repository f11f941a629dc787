"""DistilBERT as BERT: the same post-norm layer under other names, without token types.

`as_bert_config` renames its config keys, `bert_names` its weights, so `bert.BertModel` runs it
on the packed path.
"""

from __future__ import annotations

import re

import torch

__all__ = ["as_bert_config", "bert_names", "unsupported_option"]

_CONFIG = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
           "hidden_dim": "intermediate_size", "activation": "hidden_act"}

_LAYER = re.compile(r"^transformer\.layer\.(\d+)\.(.+)$")
_LAYER_NAMES = {
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def as_bert_config(raw: dict) -> dict:
    """DistilBERT's ``config.json`` in BERT's keys (its layer norms use BERT's epsilon)."""
    config = {_CONFIG.get(key, key): value for key, value in raw.items()}
    config.update(type_vocab_size=0, layer_norm_eps=1e-12)
    return config


def unsupported_option(raw: dict) -> str | None:
    if raw.get("activation", "gelu") not in ("gelu", "relu"):
        return f"activation {raw.get('activation')!r}"
    return None


def bert_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``transformer.layer.N.attention.q_lin.weight`` -> ``encoder.layer.N.attention.self.query.weight``, ..."""
    renamed = {}
    for name, tensor in weights.items():
        match = _LAYER.match(name)
        if match:
            index, rest = match.groups()
            module, _, kind = rest.rpartition(".")
            name = f"encoder.layer.{index}.{_LAYER_NAMES.get(module, module)}.{kind}"
        renamed[name] = tensor
    return renamed
