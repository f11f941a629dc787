"""Task heads over the backbone: a fine-tuned classifier, regressor or cross-encoder reranker
answers scores instead of a sentence vector.

One head fits them all, as its weights are named after Hugging Face's RoBERTa head, the most
general of the common ones::

    classifier.dense.{weight,bias}      optional: a dense layer and its activation first
    classifier.out_proj.{weight,bias}   [num_labels, hidden]: the logits

over either BERT's pooler output (tanh dense over the last layer's first token) or, for heads
with their own dense layer, the last layer's first token. Each family's head is one of these
(`FAMILY_HEADS`): BERT's on the pooler; RoBERTa's, XLM-R's, CamemBERT's and MPNet's dense +
tanh, ELECTRA's dense + gelu, DistilBERT's dense + relu, each on the first token. Each layout
maps its names onto these in `head_folder` (run_classifier.py's ``output_weights``, BERT's
``classifier.weight``, DistilBERT's ``pre_classifier``). On the generic path transformers'
own ``AutoModelForSequenceClassification`` runs the head (``HeadSpec.in_model``).

`HeadSpec` is what `encoder.resolve` decides (how many labels, their names, the activation,
what the head reads); `ClassifierHead` is the module the `Encoder` runs. The activation is not
part of the module: logits leave the model and `scores.activate` is applied per request, so
that a request may ask for raw scores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigurationError
from .head_folder import DeclaredHead
from .scores import ACTIVATIONS
from .strategies import PoolingStrategy

__all__ = ["FAMILY_HEADS", "HEAD_WEIGHTS", "ClassifierHead", "HeadSpec", "check_head_weights", "choose_head"]

DENSE_WEIGHT, DENSE_BIAS = "classifier.dense.weight", "classifier.dense.bias"
OUT_WEIGHT, OUT_BIAS = "classifier.out_proj.weight", "classifier.out_proj.bias"
HEAD_WEIGHTS = (DENSE_WEIGHT, DENSE_BIAS, OUT_WEIGHT, OUT_BIAS)

# model_type -> (the activation after the head's dense layer, or None: no dense layer; on BERT's pooler)
FAMILY_HEADS = {
    "bert": (None, True),
    "roberta": ("tanh", False),
    "xlm-roberta": ("tanh", False),
    "camembert": ("tanh", False),
    "mpnet": ("tanh", False),
    "electra": ("gelu", False),
    "distilbert": ("relu", False),
}
_DENSE_ACTIVATIONS = {"tanh": torch.tanh, "gelu": torch.nn.functional.gelu, "relu": torch.relu}


@dataclass(frozen=True)
class HeadSpec:
    """A head with every choice fixed; cheap, and sent to the workers with the `ModelSpec`."""

    num_labels: int
    activation: str  # one of scores.ACTIVATIONS, applied unless a request asks for raw scores
    labels: tuple[str, ...]  # one name per output, in output order
    origin: str  # "run_classifier", "sequence-classification" or "cross-encoder": for humans
    dense: str | None = None  # the activation of a dense layer before the output projection (RoBERTa: tanh)
    on_pooler: bool = True  # reads BERT's pooler output; else the last layer's first token
    in_model: bool = False  # transformers' *ForSequenceClassification runs it (the generic path)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if len(self.labels) != self.num_labels:
            raise ValueError(f"{self.num_labels} outputs but {len(self.labels)} label names")
        if self.dense is not None and self.dense not in _DENSE_ACTIVATIONS:
            raise ValueError(f"dense activation {self.dense!r} is not one of {tuple(_DENSE_ACTIVATIONS)}")

    @property
    def task(self) -> str:
        """``rerank`` for one output (a relevance score for a pair), else ``classify``."""
        return "rerank" if self.num_labels == 1 else "classify"


class ClassifierHead(nn.Module):
    def __init__(self, hidden_size: int, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.dense = nn.Linear(hidden_size, hidden_size) if spec.dense else None
        self._activation = _DENSE_ACTIVATIONS[spec.dense] if spec.dense else None
        self.out_proj = nn.Linear(hidden_size, spec.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, hidden]`` (pooler output or first token) -> logits ``[B, num_labels]``."""
        if self.dense is not None:
            x = self._activation(self.dense(x))
        return self.out_proj(x)

    def load(self, weights: Mapping[str, torch.Tensor], source: str) -> None:
        """Take the head's weights (`HEAD_WEIGHTS` names); shapes were checked at resolve."""
        names = {"out_proj.weight": OUT_WEIGHT, "out_proj.bias": OUT_BIAS}
        if self.dense is not None:
            names |= {"dense.weight": DENSE_WEIGHT, "dense.bias": DENSE_BIAS}
        missing = [theirs for theirs in names.values() if theirs not in weights]
        if missing:
            raise ConfigurationError(f"{source} lacks the head weight {missing[0]!r}")
        self.load_state_dict({ours: weights[theirs].float() for ours, theirs in names.items()})


# --- which head, decided at resolve ---------------------------------------------------------------

_DEFAULT_NUM_LABELS = 2  # the original's -num_labels default


def choose_head(
    strategy: PoolingStrategy | None,
    num_labels: int | None,
    declared: DeclaredHead | None,
    layout: str,
    model_type: str = "bert",
    generic: bool = False,
) -> HeadSpec | None:
    """The head to serve, or None for an embedder; its layers are those of ``model_type``'s
    sequence classifier (`FAMILY_HEADS`), or, ``generic``, transformers' own.

    - CLASSIFICATION / REGRESSION: the original's, on any layout: softmax over ``-num_labels``
      outputs (default 2), or sigmoid of one output;
    - no ``-pooling_strategy`` on a folder that declares a head (a Hugging Face sequence
      classifier, a CrossEncoder): that head, scored as transformers' text-classification
      pipeline scores it, or as the CrossEncoder's own activation says;
    - an embedding ``-pooling_strategy`` serves the backbone as an embedder.
    """
    spec = _choose(strategy, num_labels, declared, layout)
    if spec is None:
        return None
    if generic:
        if declared is None:
            raise ConfigurationError(
                f"-pooling_strategy {strategy} on a {model_type!r} model needs a folder that declares its head "
                "(config.json naming a *ForSequenceClassification architecture): transformers runs it")
        if spec.num_labels != declared.num_labels:
            raise ConfigurationError(f"-num_labels {spec.num_labels} disagrees with the model's "
                                     f"{declared.num_labels} labels (config.json id2label); leave -num_labels out")
        return replace(spec, on_pooler=False, in_model=True)
    if model_type not in FAMILY_HEADS:
        raise ConfigurationError(f"a {model_type!r} model has no sequence-classification head bert-serving runs")
    dense, on_pooler = FAMILY_HEADS[model_type]
    return replace(spec, dense=dense, on_pooler=on_pooler)


def _choose(
    strategy: PoolingStrategy | None, num_labels: int | None, declared: DeclaredHead | None, layout: str
) -> HeadSpec | None:
    if strategy is not None and not strategy.is_head:
        return None
    if strategy is PoolingStrategy.REGRESSION:
        if num_labels not in (None, 1):
            raise ConfigurationError(f"-pooling_strategy REGRESSION has one output; -num_labels {num_labels} "
                                     "disagrees (leave it out, or use CLASSIFICATION)")
        labels = declared.labels if declared is not None and declared.num_labels == 1 else ("LABEL_0",)
        return HeadSpec(1, "sigmoid", labels, _origin(declared, layout))
    if strategy is PoolingStrategy.CLASSIFICATION:
        if num_labels is not None and num_labels < 1:
            raise ConfigurationError(f"-num_labels must be at least 1 (outputs of the classifier), got {num_labels}")
        n = num_labels or (declared.num_labels if declared is not None else _DEFAULT_NUM_LABELS)
        labels = declared.labels if declared is not None and declared.num_labels == n else _default_labels(n)
        return HeadSpec(n, "softmax", labels, _origin(declared, layout))
    if declared is None:
        return None
    if num_labels is not None and num_labels != declared.num_labels:
        raise ConfigurationError(f"-num_labels {num_labels} disagrees with the model's {declared.num_labels} labels "
                                 "(config.json id2label); leave -num_labels out")
    return HeadSpec(declared.num_labels, _declared_activation(declared), declared.labels, _origin(declared, layout))


def _declared_activation(declared: DeclaredHead) -> str:
    if declared.cross_encoder:  # sentence-transformers' CrossEncoder: its own, else sigmoid for one output
        return declared.activation or ("sigmoid" if declared.num_labels == 1 else "identity")
    # transformers' text-classification pipeline
    if declared.problem_type == "regression":
        return "identity"
    if declared.problem_type == "multi_label_classification" or declared.num_labels == 1:
        return "sigmoid"
    return "softmax"


def _origin(declared: DeclaredHead | None, layout: str) -> str:
    if declared is None:
        return "run_classifier" if layout == "google" else "sequence-classification"
    return "cross-encoder" if declared.cross_encoder else "sequence-classification"


def _default_labels(n: int) -> tuple[str, ...]:
    return tuple(f"LABEL_{i}" for i in range(n))


def check_head_weights(
    spec: HeadSpec, shapes: Mapping[str, tuple[int, ...]], hidden_size: int, source: str, layout: str
) -> None:
    """Raise `ConfigurationError` naming the missing weight, its shape and the flag to change,
    unless ``shapes`` (the checkpoint's head weights) fit ``spec``."""
    google = layout == "google"
    name = {OUT_WEIGHT: "output_weights", OUT_BIAS: "output_bias"} if google else {}
    wanted = {OUT_WEIGHT: (spec.num_labels, hidden_size), OUT_BIAS: (spec.num_labels,)}
    if spec.dense:
        wanted = {DENSE_WEIGHT: (hidden_size, hidden_size), DENSE_BIAS: (hidden_size,), **wanted}
    for weight, shape in wanted.items():
        shown = name.get(weight, weight)
        if weight not in shapes:
            where = ("a run_classifier.py checkpoint has it: pass the fine-tuned one with -tuned_model_dir and "
                     "-ckpt_name" if google else "is this folder a fine-tuned sequence classifier?")
            raise ConfigurationError(
                f"{source} has no classifier head: weight {shown!r} {list(shape)} is missing ({where}); "
                "or serve the model as an embedder with another -pooling_strategy")
        found = tuple(shapes[weight])
        if found != shape:
            if found[1:] == shape[1:] or (len(found) == 1 and len(shape) == 1):
                fix = f"start with -num_labels {found[0]}" + (" and -pooling_strategy CLASSIFICATION"
                                                              if found[0] > 1 and spec.num_labels == 1 else "")
                if found[0] == 1 and spec.num_labels > 1:
                    fix = "a one-output head is served with -pooling_strategy REGRESSION"
            else:
                fix = "do the model config and the checkpoint belong together?"
            labels = f"{spec.num_labels} label{'s' if spec.num_labels != 1 else ''}"
            raise ConfigurationError(
                f"{source}: head weight {shown!r} has shape {list(found)}, but {labels} over a hidden size of "
                f"{hidden_size} need {list(shape)}; {fix}")
