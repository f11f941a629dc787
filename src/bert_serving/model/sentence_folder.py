"""A sentence-transformers folder (``modules.json``) -> the model's own defaults: its pooling,
normalisation, maximum length, lower-casing and prompts (`ModelDefaults`), and where its
Transformer module lives.

Every layout sentence-transformers versions write is read: the ``pooling_mode_*_tokens``
booleans and 6.x's ``"pooling_mode": "mean"`` (or a list), ``word_embedding_dimension`` and
``embedding_dimension``, module types under ``sentence_transformers.models`` or 6.x's
``sentence_transformers.base.modules`` and ``sentence_transformers.sentence_transformer.modules``,
the Transformer in a subfolder or at the root, its settings in ``sentence_bert_config.json`` (or
the older per-family names), its maximum length there or, from 6.x on, as the tokenizer's
``model_max_length``; prompts in ``config_sentence_transformers.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError
from .strategies import PoolingStrategy, SpladeOptions

__all__ = ["NO_LIMIT", "ModelDefaults", "read_json", "read_sentence_transformers"]


@dataclass(frozen=True)
class ModelDefaults:
    """What a model itself asks for when no flag says otherwise."""

    pooling_strategy: PoolingStrategy = PoolingStrategy.REDUCE_MEAN
    pooling_layer: tuple[int, ...] = (-2,)
    max_seq_len: int | None = 25
    normalize: bool = False
    do_lower_case: bool = True
    # sentence-transformers' own: lower-case before the tokenizer (sentence_bert_config.json)
    lowercase: bool = False
    # the Pooling module's include_prompt: prompt tokens count in pooling
    include_prompt: bool = True
    # why no strategy here does what the Pooling module asks (then -pooling_strategy must choose)
    pooling_problem: str | None = None
    # config_sentence_transformers.json: named prompts, and the one applied when a request names none
    prompts: tuple[tuple[str, str], ...] = ()
    default_prompt_name: str | None = None
    # a SparseEncoder's SpladePooling (its strategy is then SPLADE)
    splade: SpladeOptions | None = None



_ST_POOLING = {
    "mean": PoolingStrategy.REDUCE_MEAN,
    "cls": PoolingStrategy.FIRST_TOKEN,
    "max": PoolingStrategy.REDUCE_MAX,
    "lasttoken": PoolingStrategy.LAST_TOKEN,
    "weightedmean": PoolingStrategy.REDUCE_WEIGHTED_MEAN,
    "mean_sqrt_len_tokens": PoolingStrategy.REDUCE_MEAN_SQRT_LEN,
    ("mean", "max"): PoolingStrategy.REDUCE_MEAN_MAX,
}
# the booleans of sentence-transformers before 6.0, in the order it concatenates their outputs
_ST_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# where sentence-transformers versions kept the Transformer module's settings
_ST_TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json",
                           "sentence_distilbert_config.json", "sentence_camembert_config.json",
                           "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
                           "sentence_xlnet_config.json")
NO_LIMIT = 1_000_000  # tokenizers without a real model_max_length say 1e30


def read_sentence_transformers(root: Path) -> tuple[Path, ModelDefaults]:
    modules = read_json(root / "modules.json")
    if not isinstance(modules, list):
        raise ConfigurationError(f"{root / 'modules.json'} is not a list of modules")
    transformer_dir, pooling, normalize = None, (PoolingStrategy.REDUCE_MEAN, True, None), False
    splade, masked_lm = None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = root / module.get("path", "")
        if kind in ("Transformer", "MLMTransformer"):  # MLMTransformer: a SparseEncoder's, before 5.4
            transformer_dir, masked_lm = path, kind == "MLMTransformer"
        elif kind == "Pooling":
            pooling = _st_pooling(path / "config.json")
        elif kind == "SpladePooling":
            splade = _st_splade(path / "config.json")
            pooling = (PoolingStrategy.SPLADE, True, None)
        elif kind == "Normalize":
            normalize = True
        else:
            raise ConfigurationError(
                f"{root / 'modules.json'}: module {module.get('type')!r} is not supported "
                "(bert-serving runs Transformer, Pooling and Normalize modules, and a SparseEncoder's "
                "Transformer (fill-mask) or MLMTransformer with SpladePooling)"
            )
    if transformer_dir is None:
        raise ConfigurationError(f"{root / 'modules.json'} has no Transformer module")
    st_config = next((read_json(transformer_dir / name) for name in _ST_TRANSFORMER_CONFIGS
                      if (transformer_dir / name).is_file()), {})
    modalities = st_config.get("modality_config") or {"text": {}}
    task = st_config.get("transformer_task", "fill-mask" if masked_lm else "feature-extraction")
    if "text" not in modalities or task not in ("feature-extraction", "sequence-classification", "fill-mask"):
        raise ConfigurationError(
            f"{transformer_dir}: a {task} Transformer for {', '.join(modalities)} input; bert-serving serves text "
            "embedders (feature-extraction of text), text classifiers (a CrossEncoder's sequence-classification) "
            "and SPLADE models (a SparseEncoder's fill-mask)")
    if (task == "fill-mask") != (splade is not None):
        raise ConfigurationError(f"{root / 'modules.json'}: a fill-mask Transformer goes with SpladePooling, and "
                                 "SpladePooling with a fill-mask Transformer (a SparseEncoder); this folder has one "
                                 "without the other")
    tokenizer_options = st_config.get("tokenizer_args") or st_config.get("processor_kwargs") or {}
    max_len = st_config.get("max_seq_length") or tokenizer_options.get("model_max_length")
    prompts, default_prompt = _st_prompts(root / "config_sentence_transformers.json")
    defaults = ModelDefaults(
        pooling_strategy=pooling[0] or PoolingStrategy.REDUCE_MEAN,
        pooling_problem=pooling[2],
        pooling_layer=(-1,),
        max_seq_len=int(max_len) if max_len else None,
        normalize=normalize,
        lowercase=bool(st_config.get("do_lower_case")),
        include_prompt=pooling[1],
        prompts=prompts,
        default_prompt_name=default_prompt,
        splade=splade,
    )
    return transformer_dir, defaults


def _st_splade(config_path: Path) -> SpladeOptions:
    config = read_json(config_path)
    try:
        return SpladeOptions(str(config.get("pooling_strategy", "max")), str(config.get("activation_function", "relu")))
    except ValueError as exc:
        raise ConfigurationError(f"{config_path}: {exc}") from None


def _st_pooling(config_path: Path) -> tuple[PoolingStrategy | None, bool, str | None]:
    """The Pooling module's strategy, whether prompt tokens are pooled, and what is wrong
    when no strategy does what it asks."""
    config = read_json(config_path)
    modes = config.get("pooling_mode")
    if modes is None:  # before 6.0: booleans, mean when none is set
        modes = tuple(mode for flag, mode in _ST_POOLING_FLAGS.items() if config.get(flag)) or "mean"
    if isinstance(modes, list):
        modes = tuple(modes)
    if isinstance(modes, tuple) and len(modes) == 1:
        modes = modes[0]
    strategy = _ST_POOLING.get(modes)
    problem = None if strategy else f"{config_path}: pooling {modes!r} is not supported; pass -pooling_strategy " \
                                    "to choose one"
    return strategy, bool(config.get("include_prompt", True)), problem


def _st_prompts(path: Path) -> tuple[tuple[tuple[str, str], ...], str | None]:
    config = read_json(path, missing_ok=True)
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ConfigurationError(f"{path}: prompts must map names to strings")
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ConfigurationError(f"{path}: default_prompt_name {default!r} is not one of its prompts "
                                 f"({', '.join(prompts) or 'none'})")
    return tuple(prompts.items()), default


def read_json(path: Path, missing_ok: bool = False):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ConfigurationError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path} is not readable JSON: {exc}") from None
