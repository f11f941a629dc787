"""The in-process encoder: texts -> vectors, with no server. The server's workers run it too.

    from bert_serving.model import Encoder
    encoder = Encoder.load("/models/uncased_L-12_H-768_A-12")   # or Encoder.load() for MiniLM
    vectors = encoder.encode(["First do it", "then do it right"])

`EncoderSettings` holds what a user chooses (``None``/``"auto"``: the model decides);
`resolve` turns it into a `ModelSpec`, every choice fixed and checked, without loading weights,
and picks the network from the model's ``model_type`` (`architectures`: packed for BERT and its
kin, generic transformers for the rest); `Encoder` loads the weights and runs `embed` on `Features`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigurationError
from .architectures import ModelConfig, read_config
from .architectures.bert import BertModel
from .features import Features, plan_batches
from .loading import ModelSource, load_weights, locate_model, weight_names
from .outputs import OutputLayout
from .packing import Packing
from .pooling import PoolingStrategy, pool
from .prompts import Prompts
from .tokenization import Tokenizer

__all__ = ["Encoder", "EncoderSettings", "ModelSpec", "resolve"]

logger = logging.getLogger(__name__)

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


DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelSpec:
    """A model with every encoding choice fixed; cheap to build and to send to a worker."""

    source: ModelSource
    config: ModelConfig  # `BertConfig` (the packed path) or `GenericConfig` (transformers)
    max_seq_len: int | None  # None: dynamic, capped by max_position_embeddings
    do_lower_case: bool
    pooling_strategy: PoolingStrategy
    pooling_layer: tuple[int, ...]
    mask_cls_sep: bool
    no_special_token: bool
    no_position_embeddings: bool
    normalize: bool
    fixed_embed_length: bool
    show_tokens: bool
    fp16: bool  # float16 vectors on the wire, as the original's -fp16
    dtype: str  # what the model computes in
    prompts: Prompts = Prompts()
    output_layers: tuple[int, ...] = field(init=False)  # 1-based hidden-state indices

    def __post_init__(self) -> None:
        n = self.config.num_hidden_layers
        layers = []
        for index in self.pooling_layer:
            if not -n <= index < n:
                raise ConfigurationError(
                    f"-pooling_layer {index} is out of range: this model has {n} layers, "
                    f"so use -{n}..-1 (counting from the last) or 0..{n - 1}"
                )
            layers.append(index + n + 1 if index < 0 else index + 1)
        object.__setattr__(self, "output_layers", tuple(layers))

    @property
    def num_layers_needed(self) -> int:
        """Layers past the deepest pooled one are never computed."""
        if self.pooling_strategy is PoolingStrategy.CLS_POOLED:
            return self.config.num_hidden_layers
        return max(self.output_layers)

    @property
    def max_length(self) -> int:
        """Longest sequence the model sees, special tokens included."""
        return self.config.max_tokens if self.max_seq_len is None else self.max_seq_len

    @property
    def dim(self) -> int:
        if self.pooling_strategy is PoolingStrategy.CLS_POOLED:
            return self.config.hidden_size
        width = self.config.hidden_size * len(self.pooling_layer)
        return 2 * width if self.pooling_strategy is PoolingStrategy.REDUCE_MEAN_MAX else width

    @property
    def output_dtype(self) -> np.dtype:
        """The vectors' dtype on the wire: float16 with -fp16 (as the original), else float32."""
        return np.dtype(np.float16 if self.fp16 else np.float32)

    def tokenizer(self) -> Tokenizer:
        options = dict(
            max_length=self.max_length,
            mask_cls_sep=self.mask_cls_sep,
            no_special_token=self.no_special_token,
            pool_prompt=self.source.defaults.include_prompt,
        )
        if self.source.tokenizer_path is not None:
            return Tokenizer.from_file(self.source.tokenizer_path, force_cased=not self.do_lower_case,
                                       lowercase=self.source.defaults.lowercase, **options)
        return Tokenizer.from_vocab(self.source.vocab_path, lowercase=self.do_lower_case, **options)

    @property
    def outputs(self) -> OutputLayout:
        """The shape of a request's result, for whoever reassembles it (the server's sink)."""
        return OutputLayout(
            dim=self.dim,
            dtype=self.output_dtype,
            per_token=self.pooling_strategy.per_token,
            max_seq_len=self.max_seq_len,
            fixed_length=self.config.max_tokens if self.fixed_embed_length else None,
        )

    def describe(self) -> dict[str, object]:
        """The effective settings, as SHOW_CONFIG and the startup log report them."""
        return {
            "model_name": self.source.name,
            "model_layout": self.source.layout,
            "model_type": self.config.model_type,
            "architecture_path": self.config.path,
            "checkpoint": str(self.source.weights_path),
            "max_seq_len": self.max_seq_len,
            "do_lower_case": self.do_lower_case,
            "pooling_strategy": self.pooling_strategy.value,
            "pooling_strategy_name": self.pooling_strategy.name,
            "pooling_layer": list(self.pooling_layer),
            "mask_cls_sep": self.mask_cls_sep,
            "no_special_token": self.no_special_token,
            "no_position_embeddings": self.no_position_embeddings,
            "normalize": self.normalize,
            "fixed_embed_length": self.fixed_embed_length,
            "show_tokens_to_client": self.show_tokens,
            "fp16": self.fp16,
            "dtype": self.dtype,
            "output_dim": self.dim,
            "num_layers_computed": self.num_layers_needed,
            "max_position_embeddings": self.config.max_position_embeddings,
            "prompts": self.prompts.as_dict(),
            "default_prompt_name": self.prompts.default_name,
            "include_prompt_in_pooling": self.source.defaults.include_prompt,
        }


def resolve(settings: EncoderSettings) -> ModelSpec:
    """Find the model and fix every choice; raises `ConfigurationError` on any conflict."""
    source = locate_model(
        settings.model_dir,
        tuned_model_dir=settings.tuned_model_dir,
        ckpt_name=settings.ckpt_name,
        config_name=settings.config_name,
    )
    config = read_config(source.config_path, trust_remote_code=settings.trust_remote_code)
    logger.info("%s (%s): the %s path", source.name, config.model_type, config.path)
    defaults = source.defaults
    max_seq_len = defaults.max_seq_len if settings.max_seq_len == AUTO else settings.max_seq_len
    if max_seq_len is not None:
        if settings.max_seq_len == AUTO:
            max_seq_len = min(max_seq_len, config.max_tokens)
        elif max_seq_len > config.max_tokens:
            offset = "" if config.max_tokens == config.max_position_embeddings else \
                f": {config.max_tokens} tokens, its positions start past the padding index"
            raise ConfigurationError(
                f"-max_seq_len {max_seq_len} exceeds this model's max_position_embeddings "
                f"({config.max_position_embeddings}{offset}); use at most {config.max_tokens} or NONE"
            )
        if max_seq_len <= 3:
            raise ConfigurationError(f"-max_seq_len must be > 3 (room for [CLS] and [SEP]), got {max_seq_len}")
    if settings.pooling_strategy is None and defaults.pooling_problem:
        raise ConfigurationError(defaults.pooling_problem)
    strategy = settings.pooling_strategy or defaults.pooling_strategy
    normalize = defaults.normalize if settings.normalize is None else settings.normalize
    if strategy.per_token and normalize:
        if settings.normalize:
            raise ConfigurationError("-normalize applies to sentence vectors; it cannot be combined with NONE pooling")
        normalize = False
    if strategy is PoolingStrategy.CLS_POOLED and not any(n.endswith("pooler.dense.weight")
                                                          for n in weight_names(source)):
        raise ConfigurationError(f"-pooling_strategy CLS_POOLED needs the model's pooler, and {source.name} has none "
                                 "(no pooler.dense weights); use CLS_TOKEN for its first token's hidden state")
    if settings.no_position_embeddings and config.path != "packed":
        raise ConfigurationError(f"-no_position_embeddings applies to BERT and its kin, not to {config.model_type}")
    return ModelSpec(
        source=source,
        config=config,
        max_seq_len=max_seq_len,
        do_lower_case=defaults.do_lower_case if settings.do_lower_case is None else settings.do_lower_case,
        pooling_strategy=strategy,
        pooling_layer=tuple(settings.pooling_layer or defaults.pooling_layer),
        mask_cls_sep=settings.mask_cls_sep,
        no_special_token=settings.no_special_token,
        no_position_embeddings=settings.no_position_embeddings,
        normalize=normalize,
        fixed_embed_length=settings.fixed_embed_length,
        show_tokens=settings.show_tokens,
        fp16=settings.fp16,
        dtype=_dtype(settings),
        prompts=_prompts(defaults, settings.default_prompt_name),
    )


def _prompts(defaults, default_name: str | None) -> Prompts:
    prompts = Prompts(defaults.prompts, defaults.default_prompt_name)
    if default_name is None:
        return prompts
    if default_name not in prompts.names:
        known = ", ".join(prompts.names) or "none: it has no config_sentence_transformers.json prompts"
        raise ConfigurationError(f"-default_prompt_name {default_name!r} is not one of this model's prompts ({known})")
    return Prompts(defaults.prompts, default_name)


def _dtype(settings: EncoderSettings) -> str:
    if settings.dtype not in DTYPES:
        raise ConfigurationError(f"-dtype {settings.dtype!r} is not one of {', '.join(DTYPES)}")
    if settings.fp16 and settings.dtype not in ("float32", "float16"):
        raise ConfigurationError(f"-fp16 and -dtype {settings.dtype} disagree; give one of them")
    return "float16" if settings.fp16 else settings.dtype


def _compute_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "float16" and device.type != "cuda":
        logger.warning("half precision computes on GPUs only; on %s the model computes in float32 (and sends "
                       "float16 vectors, as -fp16 asks)", device)
        return torch.float32
    if name == "bfloat16" and device.type == "cpu" and not _cpu_has_bf16():
        logger.warning("this CPU has no bfloat16 instructions (AMX or AVX512-BF16): -dtype bfloat16 will be "
                       "slower than float32 here")
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _cpu_has_bf16() -> bool:
    try:
        flags = open("/proc/cpuinfo", encoding="ascii", errors="replace").read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class Encoder:
    """A loaded model: `embed` for batches of `Features`, `encode` for lists of texts."""

    def __init__(self, spec: ModelSpec, *, device: str | None = None) -> None:
        self.spec = spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigurationError(f"device {device} requested but CUDA is not available; use -cpu")
        self.compute_dtype = _compute_dtype(spec.dtype, self.device)
        self.tokenizer = spec.tokenizer()
        self.model = self._build_model()

    @classmethod
    def load(cls, model_dir: str | None = None, *, device: str | None = None, **settings) -> Encoder:
        """Resolve and load a model in one call; ``settings`` are `EncoderSettings` fields."""
        return cls(resolve(EncoderSettings(model_dir=model_dir, **settings)), device=device)

    def _build_model(self) -> torch.nn.Module:
        spec = self.spec
        override = " (override by fine-tuned model)" if spec.source.fine_tuned else ""
        logger.info("checkpoint%s: %s", override, spec.source.weights_path)
        with_pooler = spec.pooling_strategy is PoolingStrategy.CLS_POOLED
        if spec.config.path == "generic":
            from .architectures.generic import GenericModel

            model = GenericModel(spec.config, dtype=self.compute_dtype, with_pooler=with_pooler)
            logger.info("loaded %s (%s, %s through transformers, %s attention) on %s", spec.source.name,
                        spec.source.layout, spec.config.model_type, model.attention, self.device)
            return model.to(self.device)
        weights = load_weights(spec.source)
        model = BertModel(
            spec.config,
            num_layers=spec.num_layers_needed,
            with_pooler=with_pooler,
            use_position_embeddings=not spec.no_position_embeddings,
        )
        model.load_hf_state_dict(weights, str(spec.source.weights_path))
        model.eval().requires_grad_(False)
        if self.compute_dtype != torch.float32:
            model.to(self.compute_dtype)
        logger.info("loaded %s (%s, %s on the packed path, %d of %d layers) on %s", spec.source.name,
                    spec.source.layout, spec.config.model_type, spec.num_layers_needed,
                    spec.config.num_hidden_layers, self.device)
        return model.to(self.device)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def release_memory(self) -> None:
        """Give cached GPU memory back after a failed batch (an out-of-memory one, say)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def embed(self, features: Features) -> np.ndarray:
        """One forward pass: ``[B, D]`` vectors, or ``[B, T, D]`` (T: longest in the batch) for NONE."""
        device = self.device
        ids = torch.from_numpy(features.input_ids).to(device, torch.long)
        types = torch.from_numpy(features.type_ids).to(device, torch.long)
        pool_mask = torch.from_numpy(features.pool_mask).to(device)
        with torch.inference_mode():
            packing = Packing.from_lengths(features.lengths, device)
            layers, pooled = self.model(ids, types, packing, self.spec.output_layers)
            if self.compute_dtype != torch.float32:  # pool and normalise in fp32
                layers, pooled = [h.float() for h in layers], None if pooled is None else pooled.float()
            out = pool(layers, pool_mask, packing, self.spec.pooling_strategy, pooled)
            if self.spec.normalize:
                out = torch.nn.functional.normalize(out.float(), dim=-1)
            return out.to(torch.float16 if self.spec.fp16 else torch.float32).cpu().numpy()

    def encode(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        *,
        is_tokenized: bool | None = None,
        show_tokens: bool = False,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ) -> np.ndarray | tuple[np.ndarray, list[list[str]]]:
        """Vectors for ``texts`` in order, batched by length; as a 1.10.0 server would answer.
        ``prompt_name`` (one of the model's prompts) or ``prompt`` (a text) goes before each
        text; neither: the model's default prompt, if it has one."""
        if is_tokenized is None:
            is_tokenized = isinstance(texts, list) and bool(texts) and all(isinstance(t, list) for t in texts)
        chosen = self.spec.prompts.choose(prompt_name, prompt)
        features = self.tokenizer.encode(list(texts), is_tokenized, keep_tokens=show_tokens, prompt=chosen)
        lengths = features.lengths
        outputs = self.spec.outputs
        result = outputs.buffer(lengths)
        for rows in plan_batches(lengths, max_batch_tokens, max_batch_size):
            outputs.place(result, rows, self.embed(features.take(rows)), lengths[rows])
        if show_tokens:
            return result, [list(t) for t in features.tokens]
        return result
