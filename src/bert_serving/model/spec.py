"""What a user chooses (`EncoderSettings`) -> a `ModelSpec`, every encoding choice fixed and
checked without loading a weight (`resolve`): the model's folder and layout, the network path
its ``model_type`` takes (`architectures`), length, pooling, normalisation, prompts, the task
head (`heads`) and the outputs it has besides dense vectors (`lexical`: SPLADE's sparse vectors,
BGE-M3's sparse and ColBERT ones). A `ModelSpec` is cheap, and is what the server sends its workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigurationError
from ..outputs import COLBERT, DENSE, SPARSE, kind_bits
from .architectures import ModelConfig, read_config
from .heads import HeadSpec, check_head_weights, choose_head
from .lexical import M3Heads, has_mlm_head
from .loading import ModelSource, head_shapes, locate_model, weight_names
from .outputs import OutputLayout
from .prompts import Prompts
from .settings import AUTO, DTYPES, EncoderSettings
from .strategies import PoolingStrategy, SpladeOptions
from .tokenization import Tokenizer

__all__ = ["AUTO", "DTYPES", "EncoderSettings", "ModelSpec", "resolve"]

logger = logging.getLogger(__name__)

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
    head: HeadSpec | None = None  # a fine-tuned head answers scores; None: an embedder
    splade: SpladeOptions | None = None  # -pooling_strategy SPLADE: how it pools
    colbert_dim: int = 0  # BGE-M3 (source.m3_heads): its ColBERT vectors' width; 0: not BGE-M3
    output_layers: tuple[int, ...] = field(init=False)  # 1-based hidden-state indices

    def __post_init__(self) -> None:
        n = self.config.num_hidden_layers
        if self.head is not None or self.splade is not None:  # these read the last layer
            object.__setattr__(self, "output_layers", (n,))
            return
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
        if self.pooling_strategy is PoolingStrategy.CLS_POOLED or self.head is not None or self.colbert_dim:
            return self.config.num_hidden_layers
        return max(self.output_layers)

    @property
    def m3(self) -> bool:
        """BGE-M3's heads are served: sparse and ColBERT outputs besides the dense vector."""
        return self.colbert_dim > 0

    @property
    def output_kinds(self) -> tuple[str, ...]:
        """What the model gives (`bert_serving.outputs`): dense vectors; a SPLADE model sparse
        vectors alone; BGE-M3 all three."""
        if self.splade is not None:
            return (SPARSE,)
        return (DENSE, SPARSE, COLBERT) if self.m3 else (DENSE,)

    @property
    def with_pooler(self) -> bool:
        return self.pooling_strategy is PoolingStrategy.CLS_POOLED or (self.head is not None and self.head.on_pooler)

    @property
    def task(self) -> str:
        """``embed``, or with a head ``classify`` (several labels) or ``rerank`` (one score)."""
        return "embed" if self.head is None else self.head.task

    @property
    def max_length(self) -> int:
        """Longest sequence the model sees, special tokens included."""
        return self.config.max_tokens if self.max_seq_len is None else self.max_seq_len

    @property
    def dim(self) -> int:
        if self.head is not None:
            return self.head.num_labels
        if self.pooling_strategy is PoolingStrategy.CLS_POOLED:
            return self.config.hidden_size
        if self.splade is not None:  # as a dense vector: a weight per vocabulary id
            return self.config.vocab_size
        width = self.config.hidden_size * len(self.pooling_layer)
        return 2 * width if self.pooling_strategy is PoolingStrategy.REDUCE_MEAN_MAX else width

    @property
    def output_dtype(self) -> np.dtype:
        """The vectors' dtype on the wire: float16 with -fp16 (as the original), else float32."""
        return np.dtype(np.float16 if self.fp16 else np.float32)

    def compute_dtype(self, device: str) -> str:
        """What the model computes in on ``device`` (``cpu``, ``cuda:0``...): half precision only
        on a GPU (elsewhere float32, the vectors still float16 with -fp16), else `dtype`."""
        return "float32" if self.dtype == "float16" and not device.startswith("cuda") else self.dtype

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_recipe(self.tokenizer_recipe())

    def tokenizer_recipe(self) -> dict[str, object]:
        """How to build this model's tokenizer, as JSON values (`Tokenizer.from_recipe`): what the
        server's edge processes, which load no model, build theirs from."""
        options = dict(
            max_length=self.max_length,
            mask_cls_sep=self.mask_cls_sep,
            no_special_token=self.no_special_token,
            pool_prompt=self.source.defaults.include_prompt,
        )
        if self.source.tokenizer_path is not None:
            return {"file": str(self.source.tokenizer_path), "force_cased": not self.do_lower_case,
                    "lowercase": self.source.defaults.lowercase, **options}
        return {"vocab": str(self.source.vocab_path), "lowercase": self.do_lower_case, **options}

    @property
    def outputs(self) -> OutputLayout:
        """The shape of a request's result, for whoever reassembles it (the server's sink)."""
        return OutputLayout(
            dim=self.dim,
            dtype=self.output_dtype,
            per_token=self.pooling_strategy.per_token,
            max_seq_len=self.max_seq_len,
            fixed_length=self.config.max_tokens if self.fixed_embed_length else None,
            kinds=kind_bits(self.output_kinds),
            sparse_dim=self.config.vocab_size if SPARSE in self.output_kinds else 0,
            sparse_per_token=self.m3,
            colbert_dim=self.colbert_dim,
        )

    def describe(self, device: str | None = None) -> dict[str, object]:
        """The effective settings, as SHOW_CONFIG and the startup log report them; ``dtype`` is
        what the model computes in on ``device`` (without one: what was asked for), ``output_dtype``
        what the vectors are."""
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
            "dtype": self.dtype if device is None else self.compute_dtype(device),
            "output_dtype": str(self.output_dtype),
            "output_dim": self.dim,
            "num_layers_computed": self.num_layers_needed,
            "max_position_embeddings": self.config.max_position_embeddings,
            "prompts": self.prompts.as_dict(),
            "default_prompt_name": self.prompts.default_name,
            "include_prompt_in_pooling": self.source.defaults.include_prompt,
            "task": self.task,
            "num_labels": None if self.head is None else self.head.num_labels,
            "labels": None if self.head is None else list(self.head.labels),
            "activation": None if self.head is None else self.head.activation,
            "head": None if self.head is None else self.head.origin,
            "outputs": list(self.output_kinds),
            "sparse": "splade" if self.splade is not None else "bge-m3" if self.m3 else None,
            "splade": None if self.splade is None else {"pooling": self.splade.pooling,
                                                        "activation": self.splade.activation},
            "colbert_dim": self.colbert_dim or None,
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
    head = _head(settings, source, config)
    if head is None and settings.pooling_strategy is None and defaults.pooling_problem:
        raise ConfigurationError(defaults.pooling_problem)
    strategy = settings.pooling_strategy or defaults.pooling_strategy
    normalize = defaults.normalize if settings.normalize is None else settings.normalize
    if head is not None:
        strategy = settings.pooling_strategy or (
            PoolingStrategy.REGRESSION if head.num_labels == 1 else PoolingStrategy.CLASSIFICATION)
    if (strategy.per_token or head is not None) and normalize:
        if settings.normalize:
            raise ConfigurationError(f"-normalize applies to sentence vectors; it cannot be combined with {strategy}")
        normalize = False
    if strategy is PoolingStrategy.CLS_POOLED and not any(n.endswith("pooler.dense.weight")
                                                          for n in weight_names(source)):
        raise ConfigurationError(f"-pooling_strategy CLS_POOLED needs the model's pooler, and {source.name} has none "
                                 "(no pooler.dense weights); use CLS_TOKEN for its first token's hidden state")
    if settings.no_position_embeddings and config.path != "packed":
        raise ConfigurationError(f"-no_position_embeddings applies to BERT and its kin, not to {config.model_type}")
    splade = _splade(strategy, source, config, settings.normalize) if strategy.is_sparse else None
    if splade is not None:
        normalize = False
    colbert_dim = _m3(source, config) if source.m3_heads is not None and head is None and splade is None else 0
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
        head=head,
        splade=splade,
        colbert_dim=colbert_dim,
    )


def _splade(strategy: PoolingStrategy, source: ModelSource, config: ModelConfig,
            normalize: bool | None) -> SpladeOptions:
    """SPLADE's options, checked: a packed family with a masked-LM head; not normalised."""
    if config.path != "packed":
        raise ConfigurationError(f"-pooling_strategy SPLADE runs on the packed path (BERT, RoBERTa, XLM-R, DistilBERT, "
                                 f"ELECTRA, MPNet), not on a {config.model_type!r} model")
    if not has_mlm_head(weight_names(source)):
        raise ConfigurationError(f"-pooling_strategy {strategy} needs a masked-LM head, and {source.weights_path} has "
                                 "none: serve a *ForMaskedLM folder or a SparseEncoder (SPLADE) folder")
    if normalize:
        raise ConfigurationError("-normalize applies to dense vectors; SPLADE's sparse vectors are not normalised")
    return source.defaults.splade or SpladeOptions()


def _m3(source: ModelSource, config: ModelConfig) -> int:
    """BGE-M3's ColBERT width, its heads checked against the model."""
    if config.path != "packed":
        raise ConfigurationError(f"{source.m3_heads}: BGE-M3's heads run on the packed path (an XLM-RoBERTa, as "
                                 f"BGE-M3's), not on a {config.model_type!r} model")
    return M3Heads.shapes(source.m3_heads, config.hidden_size)


def _prompts(defaults, default_name: str | None) -> Prompts:
    prompts = Prompts(defaults.prompts, defaults.default_prompt_name)
    if default_name is None:
        return prompts
    if default_name not in prompts.names:
        known = ", ".join(prompts.names) or "none: it has no config_sentence_transformers.json prompts"
        raise ConfigurationError(f"-default_prompt_name {default_name!r} is not one of this model's prompts ({known})")
    return Prompts(defaults.prompts, default_name)


def _head(settings: EncoderSettings, source: ModelSource, config: ModelConfig) -> HeadSpec | None:
    """The task: a fine-tuned head (checked against the checkpoint's weights), or None to embed."""
    head = choose_head(settings.pooling_strategy, settings.num_labels, source.head, source.layout,
                       config.model_type, generic=config.path == "generic")
    if head is None:
        if settings.num_labels is not None:
            logger.warning("-num_labels %d is ignored: it applies to -pooling_strategy CLASSIFICATION",
                           settings.num_labels)
        return None
    if not head.in_model:  # transformers checks its own when it loads them
        check_head_weights(head, head_shapes(source), config.hidden_size, str(source.weights_path), source.layout)
    return head


def _dtype(settings: EncoderSettings) -> str:
    if settings.dtype not in DTYPES:
        raise ConfigurationError(f"-dtype {settings.dtype!r} is not one of {', '.join(DTYPES)}")
    if settings.fp16 and settings.dtype not in ("float32", "float16"):
        raise ConfigurationError(f"-fp16 and -dtype {settings.dtype} disagree; give one of them")
    return "float16" if settings.fp16 else settings.dtype
