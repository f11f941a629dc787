"""BERT's encoder in plain PyTorch: embeddings, transformer layers, pooler.

Written for serving, not training: no dropout; sequences packed without padding (`Packing`),
padded only around attention; query/key/value fused into one matmul; attention through
`torch.nn.functional.scaled_dot_product_attention`; and only as many layers as the deepest
pooled layer needs. Weights use Hugging Face's names (the lingua franca every loader in
`loading.py` converts to); `BertModel.load_hf_state_dict` fuses them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigurationError
from ..packing import Packing

__all__ = ["PADDED_UP_TO", "BertConfig", "BertModel"]

# Padded slots per real token up to which a batch runs padded rather than packed; measured on
# CPU with benchmarks/packing_ab.py (packed wins clearly from about 1.2 on).
PADDED_UP_TO = 1.15

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


@dataclass(frozen=True)
class BertConfig:
    """The hyper-parameters of a BERT, as in ``bert_config.json`` or HF's ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"model config {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"model config {path} is not readable JSON: {exc}") from None
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            raise ConfigurationError(
                f"{path} describes a {model_type!r} model; bert-serving serves BERT models (model_type 'bert')"
            )
        known = {f.name for f in fields(cls)}
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        missing = [name for name in required if name not in raw]
        if missing:
            raise ConfigurationError(f"model config {path} lacks {', '.join(missing)}")
        config = cls(**{k: v for k, v in raw.items() if k in known})
        if config.hidden_act not in _ACTIVATIONS:
            raise ConfigurationError(f"{path}: hidden_act {config.hidden_act!r} is not supported")
        if config.hidden_size % config.num_attention_heads:
            raise ConfigurationError(
                f"{path}: hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        return config


class _Embeddings(nn.Module):
    def __init__(self, config: BertConfig, use_position_embeddings: bool) -> None:
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.use_position_embeddings = use_position_embeddings

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, packing: Packing) -> torch.Tensor:
        x = self.word(input_ids) + self.token_type(token_type_ids)
        if self.use_position_embeddings:
            x = x + self.position(packing.positions)
        return self.norm(x)


class _Layer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(h, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """``x``: packed ``[tokens, hidden]``; only attention sees the padded layout."""
        h = x.shape[-1]
        qkv = packing.pad(self.qkv(x))  # [B, T, 3H]
        b, t = qkv.shape[:2]
        q, k, v = qkv.view(b, t, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=packing.attn_mask)
        ctx = packing.unpad(ctx.transpose(1, 2).reshape(b, t, h))
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.ffn_norm(x + self.ffn_out(self.act(self.ffn_in(x))))


class BertModel(nn.Module):
    """BERT truncated to ``num_layers`` transformer layers, with or without the pooler."""

    def __init__(
        self,
        config: BertConfig,
        *,
        num_layers: int | None = None,
        with_pooler: bool = False,
        use_position_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_layers = config.num_hidden_layers if num_layers is None else num_layers
        self.embeddings = _Embeddings(config, use_position_embeddings)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(self.num_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if with_pooler else None

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        packing: Packing,
        output_layers: tuple[int, ...],
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Packed hidden states ``[tokens, hidden]`` of the layers in ``output_layers`` (1-based;
        0 is the embeddings), in the order asked, and the pooler output (tanh dense over each
        sequence's first token in the last layer) when the model has a pooler.

        ``input_ids`` and ``token_type_ids`` are packed ``[tokens]``, laid out by ``packing``.
        """
        layout = packing
        if packing.index is not None and packing.padding_ratio <= PADDED_UP_TO:
            # little padding (a length-sorted batch): padding once costs less than the
            # pad/unpad around every layer's attention
            layout = packing.as_padded()
            input_ids, token_type_ids = packing.pad(input_ids).flatten(), packing.pad(token_type_ids).flatten()
        x = self.embeddings(input_ids, token_type_ids, layout)
        wanted = {n: None for n in output_layers}
        if 0 in wanted:
            wanted[0] = x
        for index, layer in enumerate(self.layers, start=1):
            x = layer(x, layout)
            if index in wanted:
                wanted[index] = x
        pooled = torch.tanh(self.pooler(x[layout.offsets[:-1]])) if self.pooler is not None else None
        if layout is not packing:
            b, t = packing.batch_size, packing.max_len
            wanted = {n: packing.unpad(h.view(b, t, -1)) for n, h in wanted.items()}
        return [wanted[n] for n in output_layers], pooled

    def load_hf_state_dict(self, weights: dict[str, torch.Tensor], source: str) -> None:
        """Load weights named as Hugging Face's ``BertModel`` names them (no ``bert.`` prefix).

        Raises `ConfigurationError` naming the first missing weight or mismatched shape.
        """
        c = self.config
        h, i = c.hidden_size, c.intermediate_size
        shapes = {
            "embeddings.word_embeddings.weight": (c.vocab_size, h),
            "embeddings.position_embeddings.weight": (c.max_position_embeddings, h),
            "embeddings.token_type_embeddings.weight": (c.type_vocab_size, h),
            "intermediate.dense.weight": (i, h),
            "intermediate.dense.bias": (i,),
            "output.dense.weight": (h, i),
        }

        def take(name: str) -> torch.Tensor:
            try:
                tensor = weights[name]
            except KeyError:
                raise ConfigurationError(f"{source} lacks weight {name!r}") from None
            suffix = name.split(".", 3)[-1] if name.startswith("encoder.layer.") else name
            expected = shapes.get(suffix, (h, h) if name.endswith("weight") and "LayerNorm" not in name else (h,))
            if tuple(tensor.shape) != expected:
                raise ConfigurationError(
                    f"{source}: weight {name!r} has shape {tuple(tensor.shape)}, but the model config "
                    f"implies {expected}; do the config and the weights belong to the same model?"
                )
            return tensor

        own: dict[str, torch.Tensor] = {
            "embeddings.word.weight": take("embeddings.word_embeddings.weight"),
            "embeddings.position.weight": take("embeddings.position_embeddings.weight"),
            "embeddings.token_type.weight": take("embeddings.token_type_embeddings.weight"),
            "embeddings.norm.weight": take("embeddings.LayerNorm.weight"),
            "embeddings.norm.bias": take("embeddings.LayerNorm.bias"),
        }
        for i in range(self.num_layers):
            p = f"encoder.layer.{i}."
            for kind in ("weight", "bias"):
                own[f"layers.{i}.qkv.{kind}"] = torch.cat(
                    [take(f"{p}attention.self.{part}.{kind}") for part in ("query", "key", "value")]
                )
                own[f"layers.{i}.attn_out.{kind}"] = take(f"{p}attention.output.dense.{kind}")
                own[f"layers.{i}.attn_norm.{kind}"] = take(f"{p}attention.output.LayerNorm.{kind}")
                own[f"layers.{i}.ffn_in.{kind}"] = take(f"{p}intermediate.dense.{kind}")
                own[f"layers.{i}.ffn_out.{kind}"] = take(f"{p}output.dense.{kind}")
                own[f"layers.{i}.ffn_norm.{kind}"] = take(f"{p}output.LayerNorm.{kind}")
        if self.pooler is not None:
            own["pooler.weight"] = take("pooler.dense.weight")
            own["pooler.bias"] = take("pooler.dense.bias")

        self.load_state_dict(own)
