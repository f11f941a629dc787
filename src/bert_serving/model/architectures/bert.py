"""BERT and its kin in plain PyTorch: embeddings, transformer layers, pooler.

One network serves the families that share BERT's post-norm layer: BERT itself, RoBERTa,
XLM-RoBERTa and CamemBERT (positions counted past the padding index, usually one token type),
ELECTRA (embeddings narrower than the hidden size, projected up), DistilBERT (no token types;
its weight names are translated in `distilbert`) and MPNet (as RoBERTa, plus a relative position
bias on the attention scores; `mpnet`).

Written for serving, not training: no dropout; sequences packed without padding (`Packing`),
padded only around attention; query/key/value fused into one matmul; attention through
`torch.nn.functional.scaled_dot_product_attention`; and only as many layers as the deepest
pooled layer needs. Weights use Hugging Face's names (the lingua franca every loader in
`loading.py` converts to); `BertModel.load_hf_state_dict` fuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigurationError
from ..packing import Packing
from . import distilbert, mpnet

__all__ = ["FAMILIES", "PADDED_UP_TO", "BertConfig", "BertModel", "unsupported_option"]

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

# model_type -> what differs from BERT (see the module docstring)
FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet")
_POSITIONS_PAST_PADDING = ("roberta", "xlm-roberta", "camembert", "mpnet")


@dataclass(frozen=True)
class BertConfig:
    """The hyper-parameters of a BERT (or kin), as in ``bert_config.json`` or HF's ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0: the family has no token types (DistilBERT)
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    model_type: str = "bert"
    position_offset: int = 0  # RoBERTa's family: position ids start at pad_token_id + 1
    embedding_size: int | None = None  # ELECTRA: embedding width, projected up to hidden_size
    relative_attention_buckets: int = 0  # MPNet: rows of its relative position bias table

    path = "packed"  # which kind of network runs it (see `architectures`)

    @property
    def max_tokens(self) -> int:
        """The longest sequence the position embeddings cover."""
        return self.max_position_embeddings - self.position_offset

    @classmethod
    def from_dict(cls, raw: dict, path: Path | str) -> BertConfig:
        """From a parsed config (Google's ``bert_config.json`` has no ``model_type``: BERT)."""
        model_type = raw.get("model_type", "bert")
        if model_type not in FAMILIES:
            raise ConfigurationError(f"{path} describes a {model_type!r} model, not one of {', '.join(FAMILIES)}")
        if model_type == "distilbert":
            raw = distilbert.as_bert_config(raw)
        elif model_type == "mpnet":
            raw = mpnet.as_bert_config(raw)
        known = {f.name for f in fields(cls)}
        required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        missing = [name for name in required if name not in raw]
        if missing:
            raise ConfigurationError(f"model config {path} lacks {', '.join(missing)}")
        values = {k: v for k, v in raw.items() if k in known}
        values["model_type"] = model_type
        if model_type in _POSITIONS_PAST_PADDING:
            values["position_offset"] = int(raw.get("pad_token_id", 1)) + 1
        embedding_size = raw.get("embedding_size")
        if model_type == "electra" and embedding_size and embedding_size != raw["hidden_size"]:
            values["embedding_size"] = int(embedding_size)
        else:
            values.pop("embedding_size", None)
        config = cls(**values)
        if config.hidden_act not in _ACTIVATIONS:
            raise ConfigurationError(f"{path}: hidden_act {config.hidden_act!r} is not supported")
        if config.hidden_size % config.num_attention_heads:
            raise ConfigurationError(
                f"{path}: hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        if config.max_tokens < 4:
            raise ConfigurationError(f"{path}: max_position_embeddings {config.max_position_embeddings} leaves no room "
                                     "for a sequence")
        return config


def unsupported_option(raw: dict) -> str | None:
    """Why this network cannot run a config of one of its families exactly (the generic path
    then runs it), or None."""
    if raw.get("model_type") == "distilbert":
        return distilbert.unsupported_option(raw)
    position = raw.get("position_embedding_type", "absolute")
    if position != "absolute":
        return f"position_embedding_type {position!r}"
    if raw.get("is_decoder") or raw.get("add_cross_attention"):
        return "a decoder configuration"
    if raw.get("hidden_act", "gelu") not in _ACTIVATIONS:
        return f"hidden_act {raw.get('hidden_act')!r}"
    return None


class _Embeddings(nn.Module):
    def __init__(self, config: BertConfig, use_position_embeddings: bool) -> None:
        super().__init__()
        width = config.embedding_size or config.hidden_size
        self.word = nn.Embedding(config.vocab_size, width)
        self.position = nn.Embedding(config.max_position_embeddings, width)
        self.token_type = nn.Embedding(config.type_vocab_size, width) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.project = nn.Linear(width, config.hidden_size) if config.embedding_size else None
        self.use_position_embeddings = use_position_embeddings
        self.position_offset = config.position_offset

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, packing: Packing) -> torch.Tensor:
        x = self.word(input_ids)
        if self.token_type is not None:
            x = x + self.token_type(token_type_ids)
        if self.use_position_embeddings and packing.index is None:  # rows of one length: add the table's first rows
            b, t = packing.batch_size, packing.max_len
            table = self.position.weight[self.position_offset : self.position_offset + t]
            x = (x.view(b, t, -1) + table).view(b * t, -1)
        elif self.use_position_embeddings:
            positions = packing.positions
            x = x + self.position(positions + self.position_offset if self.position_offset else positions)
        x = self.norm(x)
        return x if self.project is None else self.project(x)


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

    def forward(self, x: torch.Tensor, packing: Packing, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: packed ``[tokens, hidden]``; only attention sees the padded layout."""
        h = x.shape[-1]
        qkv = packing.pad(self.qkv(x))  # [B, T, 3H]
        b, t = qkv.shape[:2]
        q, k, v = qkv.view(b, t, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        ctx = packing.unpad(ctx.transpose(1, 2).reshape(b, t, h))
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.ffn_norm(x + self.ffn_out(self.act(self.ffn_in(x))))


class BertModel(nn.Module):
    """BERT (or kin) truncated to ``num_layers`` transformer layers, with or without the pooler."""

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
        buckets = config.relative_attention_buckets
        self.relative_bias = nn.Embedding(buckets, config.num_attention_heads) if buckets else None

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
        mask = layout.attn_mask  # [B, 1, 1, T] bool, or None
        if self.relative_bias is not None:  # one bias for every layer, hidden where keys are padding
            bias = mpnet.position_bias(self.relative_bias, layout.max_len).to(x.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        wanted = {n: None for n in output_layers}
        if 0 in wanted:
            wanted[0] = x
        for index, layer in enumerate(self.layers, start=1):
            x = layer(x, layout, mask)
            if index in wanted:
                wanted[index] = x
        pooled = torch.tanh(self.pooler(x[layout.offsets[:-1]])) if self.pooler is not None else None
        if layout is not packing:
            b, t = packing.batch_size, packing.max_len
            wanted = {n: packing.unpad(h.view(b, t, -1)) for n, h in wanted.items()}
        return [wanted[n] for n in output_layers], pooled

    def load_hf_state_dict(self, weights: dict[str, torch.Tensor], source: str) -> None:
        """Load weights named as Hugging Face's ``BertModel`` (``RobertaModel``, ``ElectraModel``,
        ``DistilBertModel``) names them, without the task model's prefix.

        Raises `ConfigurationError` naming the first missing weight or mismatched shape.
        """
        c = self.config
        if c.model_type == "distilbert":
            weights = distilbert.bert_names(weights)
        elif c.model_type == "mpnet":
            weights = mpnet.bert_names(weights)
        h, i = c.hidden_size, c.intermediate_size
        e = c.embedding_size or h

        def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            try:
                tensor = weights[name]
            except KeyError:
                raise ConfigurationError(f"{source} lacks weight {name!r}") from None
            if tuple(tensor.shape) != shape:
                raise ConfigurationError(
                    f"{source}: weight {name!r} has shape {tuple(tensor.shape)}, but the model config "
                    f"implies {shape}; do the config and the weights belong to the same model?"
                )
            return tensor

        own: dict[str, torch.Tensor] = {
            "embeddings.word.weight": take("embeddings.word_embeddings.weight", (c.vocab_size, e)),
            "embeddings.position.weight": take("embeddings.position_embeddings.weight", (c.max_position_embeddings, e)),
            "embeddings.norm.weight": take("embeddings.LayerNorm.weight", (e,)),
            "embeddings.norm.bias": take("embeddings.LayerNorm.bias", (e,)),
        }
        if c.type_vocab_size:
            own["embeddings.token_type.weight"] = take("embeddings.token_type_embeddings.weight",
                                                       (c.type_vocab_size, e))
        if c.embedding_size:
            own["embeddings.project.weight"] = take("embeddings_project.weight", (h, e))
            own["embeddings.project.bias"] = take("embeddings_project.bias", (h,))
        for n in range(self.num_layers):
            p = f"encoder.layer.{n}."
            for kind in ("weight", "bias"):
                matrix = kind == "weight"
                own[f"layers.{n}.qkv.{kind}"] = torch.cat(
                    [take(f"{p}attention.self.{part}.{kind}", (h, h) if matrix else (h,))
                     for part in ("query", "key", "value")]
                )
                own[f"layers.{n}.attn_out.{kind}"] = take(f"{p}attention.output.dense.{kind}", (h, h) if matrix else (h,))
                own[f"layers.{n}.attn_norm.{kind}"] = take(f"{p}attention.output.LayerNorm.{kind}", (h,))
                own[f"layers.{n}.ffn_in.{kind}"] = take(f"{p}intermediate.dense.{kind}", (i, h) if matrix else (i,))
                own[f"layers.{n}.ffn_out.{kind}"] = take(f"{p}output.dense.{kind}", (h, i) if matrix else (h,))
                own[f"layers.{n}.ffn_norm.{kind}"] = take(f"{p}output.LayerNorm.{kind}", (h,))
        if self.relative_bias is not None:
            own["relative_bias.weight"] = take("encoder.relative_attention_bias.weight",
                                               (c.relative_attention_buckets, c.num_attention_heads))
        if self.pooler is not None:
            own["pooler.weight"] = take("pooler.dense.weight", (h, h))
            own["pooler.bias"] = take("pooler.dense.bias", (h,))

        self.load_state_dict(own)
