"""`EncoderSettings`: the model-side flags of ``bert-serving-start`` as the user gave them
(`spec.resolve` turns them into a checked `ModelSpec`). Plain Python, so the CLI and the
server's configuration read them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError
from .strategies import PoolingStrategy

__all__ = ["AUTO", "DTYPES", "EncoderSettings", "parse_max_seq_len"]

AUTO = "auto"


@dataclass(frozen=True)
class EncoderSettings:
    """The model-side flags of ``bert-serving-start``; ``None`` or ``"auto"`` = the model's default."""

    model_dir: str | None = None
    tuned_model_dir: str | None = None
    ckpt_name: str = "bert_model.ckpt"
    config_name: str = "bert_config.json"
    max_seq_len: int | None | str = AUTO  # a number, None for dynamic, or "auto"
    do_lower_case: bool | None = None
    pooling_strategy: PoolingStrategy | None = None
    pooling_layer: tuple[int, ...] | None = None
    mask_cls_sep: bool = False
    no_special_token: bool = False
    no_position_embeddings: bool = False
    normalize: bool | None = None
    fixed_embed_length: bool = False
    show_tokens: bool = False
    fp16: bool = False  # the original's flag: half precision on GPU, float16 vectors
    dtype: str = "float32"  # compute precision: float32, bfloat16 (fast on CPUs with AMX), float16 (GPU)
    default_prompt_name: str | None = None  # one of the model's prompts, applied when a request names none
    trust_remote_code: bool = False  # run a model's own Python code (config.json auto_map)
    num_labels: int | None = None  # the original's -num_labels: outputs of a CLASSIFICATION head (default 2)

    def __post_init__(self) -> None:
        """Values as a program would write them take the flags' forms: ``max_seq_len="NONE"`` or
        ``"16"``, ``pooling_layer=-1``, ``pooling_strategy="REDUCE_MAX"``."""
        if isinstance(self.max_seq_len, str):
            try:
                object.__setattr__(self, "max_seq_len", parse_max_seq_len(self.max_seq_len))
            except ValueError:
                raise ConfigurationError(
                    f"max_seq_len must be a number, NONE or auto, got {self.max_seq_len!r}") from None
        if isinstance(self.pooling_layer, int):
            object.__setattr__(self, "pooling_layer", (self.pooling_layer,))
        elif self.pooling_layer is not None:
            object.__setattr__(self, "pooling_layer", tuple(self.pooling_layer))
        if isinstance(self.pooling_strategy, str):
            try:
                object.__setattr__(self, "pooling_strategy", PoolingStrategy.from_string(self.pooling_strategy))
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None


DTYPES = ("float32", "bfloat16", "float16")


def parse_max_seq_len(value: str) -> int | str | None:
    """``-max_seq_len`` as written: a number, NONE (any case: a length chosen per request) or
    auto (the model's default); `ValueError` otherwise."""
    word = value.strip().lower()
    if word == "none":
        return None
    if word == AUTO:
        return AUTO
    return int(word)
