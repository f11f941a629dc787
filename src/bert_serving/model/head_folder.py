"""What a model folder says about a task head: the head it declares (`declared_head`) and the
shapes of the head weights its checkpoint holds (`head_shapes`), read without loading a tensor.

A folder declares a head by ``config.json`` naming a ``*ForSequenceClassification``
architecture, or by being a sentence-transformers CrossEncoder (its activation in
``config_sentence_transformers.json`` or ``config.json``). Each family's head weights are read
under the names of `heads.HEAD_WEIGHTS` (RoBERTa's, the most general)::

    BERT           classifier.{weight,bias}                  -> classifier.out_proj.*
    DistilBERT     pre_classifier.*, classifier.*            -> classifier.dense.*, classifier.out_proj.*
    RoBERTa, XLM-R, CamemBERT, ELECTRA, MPNet: classifier.dense.*, classifier.out_proj.* as they are
    run_classifier.py  output_weights, output_bias           -> classifier.out_proj.*
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigurationError
from .checkpoint import CheckpointReader
from .sentence_folder import read_json

__all__ = ["HF_HEAD_NAMES", "TF_HEAD_NAMES", "DeclaredHead", "declared_head", "head_shapes"]


@dataclass(frozen=True)
class DeclaredHead:
    """The task head a folder declares: a Hugging Face sequence classifier, or a CrossEncoder."""

    architecture: str  # e.g. BertForSequenceClassification
    num_labels: int
    labels: tuple[str, ...]  # id2label, in id order
    problem_type: str | None  # single_label_classification, multi_label_classification, regression
    cross_encoder: bool = False  # a sentence-transformers CrossEncoder
    activation: str | None = None  # the CrossEncoder's own (scores.ACTIVATIONS), when it names one


# the heads of BERT and DistilBERT under RoBERTa's names (BERT's is RoBERTa's without its dense layer)
HF_HEAD_NAMES = {"classifier.weight": "classifier.out_proj.weight", "classifier.bias": "classifier.out_proj.bias",
                 "pre_classifier.weight": "classifier.dense.weight", "pre_classifier.bias": "classifier.dense.bias"}
# what run_classifier.py names its head (create_model: output_weights [num_labels, hidden], not transposed)
TF_HEAD_NAMES = {"output_weights": "classifier.out_proj.weight", "output_bias": "classifier.out_proj.bias"}
# sentence-transformers' CrossEncoder names its activation as a class path
_CE_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Tanh": "tanh"}


def declared_head(root: Path, config_path: Path) -> DeclaredHead | None:
    """The head the folder at ``root`` declares, or None for an embedder."""
    config = read_json(config_path)
    st_config = read_json(root / "config_sentence_transformers.json", missing_ok=True)
    architecture = next((a for a in config.get("architectures") or () if str(a).endswith("ForSequenceClassification")),
                        None)
    activation_path = (st_config.get("activation_fn") or (config.get("sentence_transformers") or {}).get("activation_fn")
                       or config.get("sbert_ce_default_activation_function"))
    cross_encoder = st_config.get("model_type") == "CrossEncoder" or activation_path is not None
    if architecture is None:
        if cross_encoder:
            raise ConfigurationError(f"{root} is a CrossEncoder, but {config_path} names no *ForSequenceClassification "
                                     "architecture; bert-serving serves sequence classifiers")
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


def head_shapes(layout: str, weights_path: Path) -> dict[str, tuple[int, ...]]:
    """The shapes of the head weights a model's checkpoint holds (`heads.HEAD_WEIGHTS` names),
    read without loading any tensor."""
    if layout == "google":
        shapes = CheckpointReader(weights_path).get_variable_to_shape_map()
        return {TF_HEAD_NAMES[n]: tuple(s) for n, s in shapes.items() if n in TF_HEAD_NAMES}
    files = [weights_path]
    if weights_path.name.endswith(".index.json"):
        files = sorted({weights_path.parent / f for n, f in read_json(weights_path).get("weight_map", {}).items()
                        if "classifier" in n})
    found: dict[str, tuple[int, ...]] = {}
    for file in files:
        for name, shape in _file_shapes(file).items():
            name = HF_HEAD_NAMES.get(name, name)
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
