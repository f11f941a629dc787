"""Every other architecture transformers can load from a local folder (ModernBERT, DeBERTa-v2,
Qwen2/Qwen3, Gemma3, ALBERT, ...): ``transformers.AutoModel`` with SDPA attention where the
architecture has it, on padded batches (the batcher sorts rows by length and cuts batches under
the same token budget as the packed path).

`GenericModel` speaks `bert.BertModel`'s interface (packed token ids in, packed hidden states of
the asked layers and the pooler output out), so tokenization, batching and pooling are shared.
A folder that declares a sequence-classification head is loaded with
``AutoModelForSequenceClassification`` instead, whose own head gives the logits (`classify`);
a head whose weights the folder lacks is a startup error, never a random one.
Nothing is downloaded (``local_files_only``), and a model's own code runs only when the user
allows it (``-trust_remote_code``).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigurationError
from ..packing import Packing

__all__ = ["GenericConfig", "GenericModel"]

logger = logging.getLogger(__name__)

_UNBOUNDED = 1_000_000  # configs without max_position_embeddings (relative positions only)


@dataclass(frozen=True)
class GenericConfig:
    """What the server needs to know of an architecture it runs through transformers."""

    model_type: str
    folder: Path
    hidden_size: int
    num_hidden_layers: int
    max_position_embeddings: int
    pad_token_id: int
    trust_remote_code: bool = False

    path = "generic"

    @property
    def max_tokens(self) -> int:
        return self.max_position_embeddings

    @classmethod
    def from_folder(cls, folder: Path, *, trust_remote_code: bool = False) -> GenericConfig:
        """Read with transformers' ``AutoConfig`` (the source of truth for attribute names)."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code, local_files_only=True)
        except Exception as exc:  # transformers raises ValueError, OSError, ImportError, KeyError...
            raise ConfigurationError(f"transformers cannot read {folder / 'config.json'}: {exc}") from None
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        missing = [name for name in ("hidden_size", "num_hidden_layers") if not isinstance(getattr(text, name, None),
                                                                                              int)]
        if missing:
            raise ConfigurationError(f"{folder / 'config.json'} ({config.model_type}) has no {', '.join(missing)}; "
                                     "is it a text encoder?")
        max_positions = getattr(text, "max_position_embeddings", None)
        if not isinstance(max_positions, int) or max_positions <= 0:
            max_positions = _UNBOUNDED
        pad = getattr(text, "pad_token_id", None)
        return cls(
            model_type=config.model_type,
            folder=Path(folder),
            hidden_size=text.hidden_size,
            num_hidden_layers=text.num_hidden_layers,
            max_position_embeddings=max_positions,
            pad_token_id=pad if isinstance(pad, int) and pad >= 0 else 0,
            trust_remote_code=trust_remote_code,
        )


class GenericModel(nn.Module):
    """A transformers ``AutoModel`` behind `bert.BertModel`'s interface."""

    def __init__(self, config: GenericConfig, *, dtype: torch.dtype, with_pooler: bool = False,
                 classifier: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel, AutoModelForSequenceClassification

        self.config = config
        auto = AutoModelForSequenceClassification if classifier else AutoModel
        options = dict(dtype=dtype, trust_remote_code=config.trust_remote_code, local_files_only=True,
                       output_loading_info=True)
        try:
            model, info = auto.from_pretrained(str(config.folder), attn_implementation="sdpa", **options)
        except ValueError:  # this architecture has no SDPA implementation in transformers
            logger.info("%s has no SDPA attention in transformers: it runs its own (eager)", config.model_type)
            try:
                model, info = auto.from_pretrained(str(config.folder), **options)
            except Exception as exc:
                raise ConfigurationError(f"transformers cannot load the model in {config.folder}: {exc}") from None
        missing = list(info.get("missing_keys") or ()) if classifier else []
        if missing:
            raise ConfigurationError(f"{config.folder}: the {type(model).__name__} lacks weight {sorted(missing)[0]!r}; "
                                     "is this folder a fine-tuned sequence classifier?")
        self.model = model.eval()
        self.attention = model.config._attn_implementation
        parameters = inspect.signature(model.forward).parameters
        self._token_types = "token_type_ids" in parameters
        self._no_cache = {"use_cache": False} if "use_cache" in parameters else {}
        self._with_pooler = with_pooler

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        packing: Packing,
        output_layers: tuple[int, ...],
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """As `bert.BertModel.forward`: the batch runs padded on the right, and its hidden states
        come back packed."""
        ids = packing.pad(input_ids, self.config.pad_token_id)
        extra = dict(self._no_cache)
        if self._token_types:
            extra["token_type_ids"] = packing.pad(token_type_ids)
        last = self.config.num_hidden_layers
        inner = any(n != last for n in output_layers)
        out = self.model(input_ids=ids, attention_mask=packing.key_mask.long(), output_hidden_states=inner,
                         return_dict=True, **extra)
        # the last layer as the model returns it (after a final norm, where it has one)
        layers = [packing.unpad(out.last_hidden_state if n == last else out.hidden_states[n]) for n in output_layers]
        pooled = getattr(out, "pooler_output", None) if self._with_pooler else None
        if self._with_pooler and pooled is None:
            raise ConfigurationError(f"this {self.config.model_type} model returns no pooler output (CLS_POOLED)")
        return layers, pooled

    def classify(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, packing: Packing) -> torch.Tensor:
        """The logits ``[B, num_labels]`` of a sequence classifier, the batch padded on the right."""
        ids = packing.pad(input_ids, self.config.pad_token_id)
        extra = dict(self._no_cache)
        if self._token_types:
            extra["token_type_ids"] = packing.pad(token_type_ids)
        return self.model(input_ids=ids, attention_mask=packing.key_mask.long(), return_dict=True, **extra).logits
