"""The networks that turn token ids into hidden states, and which one runs a model.

Two paths, chosen from ``config.json``'s ``model_type`` by `read_config`:

- **packed** (`bert.BertModel`): BERT, RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA, DistilBERT and
  MPNet run on our own PyTorch network over packed (unpadded) sequences;
- **generic** (`generic.GenericModel`): every other architecture transformers can load from a
  local folder, through ``AutoModel`` on padded batches.

Both take packed token ids and return packed hidden states of the asked layers plus the
pooler output where the model has one, so tokenization, batching, pooling (and heads on top)
are the same for every family. Folders that are not text encoders (encoder-decoders, vision or
audio models) and folders that need the model's own code (without ``-trust_remote_code``) are
refused here, with one error that says so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Union

from ...errors import ConfigurationError
from .bert import FAMILIES, BertConfig, unsupported_option
from .generic import GenericConfig

__all__ = ["PACKED_FAMILIES", "ModelConfig", "check_text_model", "read_config"]

logger = logging.getLogger(__name__)

PACKED_FAMILIES = FAMILIES
ModelConfig = Union[BertConfig, GenericConfig]

_VISION_KEYS = ("vision_config", "image_size", "num_channels", "patch_size")
_AUDIO_KEYS = ("audio_config", "num_mel_bins", "conv_dim", "sampling_rate")


def read_config(path: Path, *, trust_remote_code: bool = False) -> ModelConfig:
    """The config of the model at ``path`` (``config.json`` or Google's ``bert_config.json``),
    as the network that will run it reads it; raises `ConfigurationError` for a folder this
    server cannot serve, naming why."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"model config {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"model config {path} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigurationError(f"model config {path} is not a JSON object")
    model_type = raw.get("model_type", "bert")  # Google's bert_config.json has none
    check_text_model(raw, Path(path))
    if "auto_map" in raw and not trust_remote_code:
        code = ", ".join(sorted({str(v).split(".")[0] for v in raw["auto_map"].values() if v}))
        raise ConfigurationError(
            f"{path}: {model_type!r} is a model that needs its own Python code ({code}), which bert-serving does "
            "not run unless told to: if you trust that code, start with -trust_remote_code"
        )
    if "auto_map" in raw:  # the model's own code, allowed by -trust_remote_code
        logger.warning("%s: running the model's own code from %s (-trust_remote_code)", model_type, path.parent)
        return GenericConfig.from_folder(path.parent, trust_remote_code=True)
    if model_type in FAMILIES:
        reason = unsupported_option(raw)
        if reason is None:
            return BertConfig.from_dict(raw, path)
        logger.info("%s with %s: the generic path runs it", model_type, reason)
    return GenericConfig.from_folder(path.parent)


def check_text_model(raw: dict, path: Path) -> None:
    """Raise `ConfigurationError` if the config at ``path`` describes no text encoder or decoder
    (an encoder-decoder, a vision or audio model)."""
    if not isinstance(raw, dict):
        return  # read_config says what is wrong with it
    model_type = raw.get("model_type", "bert")
    kind = f"{path}: {model_type!r} is"
    if raw.get("is_encoder_decoder") or "decoder" in raw and "encoder" in raw:
        raise ConfigurationError(f"{kind} an encoder-decoder model; bert-serving serves text encoders and "
                                 "decoder-only embedders (a sentence-transformers folder of its encoder works)")
    for keys, what in ((_VISION_KEYS, "a vision model"), (_AUDIO_KEYS, "an audio model")):
        if any(key in raw for key in keys):
            raise ConfigurationError(f"{kind} {what}; bert-serving serves text models")
