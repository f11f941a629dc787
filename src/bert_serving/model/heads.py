"""Task heads over the backbone: a fine-tuned classifier, regressor or cross-encoder reranker
answers scores instead of a sentence vector.

One head fits them all, as its weights are named after Hugging Face's RoBERTa head, the most
general of the common ones::

    classifier.dense.{weight,bias}      optional: dense + tanh first (RoBERTa-style heads)
    classifier.out_proj.{weight,bias}   [num_labels, hidden]: the logits

over either BERT's pooler output (tanh dense over the last layer's first token) or, for heads
with their own dense layer, the last layer's first token. Each layout maps its names onto
these in `loading` (run_classifier.py's ``output_weights``/``output_bias``, BERT's
``classifier.weight``/``bias``); a model family with another head maps its own the same way.

`HeadSpec` is what `encoder.resolve` decides (how many labels, their names, the activation,
what the head reads); `ClassifierHead` is the module the `Encoder` runs. The activation is not
part of the module: logits leave the model and `scores.activate` is applied per request, so
that a request may ask for raw scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from ..errors import ConfigurationError
from .loading import DeclaredHead
from .pooling import PoolingStrategy
from .scores import ACTIVATIONS

__all__ = ["HEAD_WEIGHTS", "ClassifierHead", "HeadSpec", "choose_head", "check_head_weights"]

DENSE_WEIGHT, DENSE_BIAS = "classifier.dense.weight", "classifier.dense.bias"
OUT_WEIGHT, OUT_BIAS = "classifier.out_proj.weight", "classifier.out_proj.bias"
HEAD_WEIGHTS = (DENSE_WEIGHT, DENSE_BIAS, OUT_WEIGHT, OUT_BIAS)


@dataclass(frozen=True)
class HeadSpec:
    """A head with every choice fixed; cheap, and sent to the workers with the `ModelSpec`."""

    num_labels: int
    activation: str  # one of scores.ACTIVATIONS, applied unless a request asks for raw scores
    labels: tuple[str, ...]  # one name per output, in output order
    origin: str  # "run_classifier", "sequence-classification" or "cross-encoder": for humans
    dense: bool = False  # a dense + tanh layer before the output projection (RoBERTa-style)
    on_pooler: bool = True  # reads BERT's pooler output; else the last layer's first token

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {ACTIVATIONS}")
        if len(self.labels) != self.num_labels:
            raise ValueError(f"{self.num_labels} outputs but {len(self.labels)} label names")

    @property
    def task(self) -> str:
        """``rerank`` for one output (a relevance score for a pair), else ``classify``."""
        return "rerank" if self.num_labels == 1 else "classify"


class ClassifierHead(nn.Module):
    def __init__(self, hidden_size: int, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.dense = nn.Linear(hidden_size, hidden_size) if spec.dense else None
        self.out_proj = nn.Linear(hidden_size, spec.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, hidden]`` (pooler output or first token) -> logits ``[B, num_labels]``."""
        if self.dense is not None:
            x = torch.tanh(self.dense(x))
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
    strategy: PoolingStrategy | None, num_labels: int | None, declared: DeclaredHead | None, layout: str
) -> HeadSpec | None:
    """The head to serve, or None for an embedder.

    - CLASSIFICATION / REGRESSION: the original's, on any layout: softmax over ``-num_labels``
      outputs (default 2), or sigmoid of one output;
    - no ``-pooling_strategy`` on a folder that declares a head (a Hugging Face sequence
      classifier, a CrossEncoder): that head, scored as transformers' text-classification
      pipeline scores it, or as the CrossEncoder's own activation says;
    - an embedding ``-pooling_strategy`` serves the backbone as an embedder.
    """
    if strategy is not None and not strategy.is_head:
        return None
    if strategy is PoolingStrategy.REGRESSION:
        if num_labels not in (None, 1):
            raise ConfigurationError(f"-pooling_strategy REGRESSION has one output; -num_labels {num_labels} "
                                     "disagrees (leave it out, or use CLASSIFICATION)")
        labels = declared.labels if declared is not None and declared.num_labels == 1 else ("LABEL_0",)
        return HeadSpec(1, "sigmoid", labels, _origin(declared, layout))
    if strategy is PoolingStrategy.CLASSIFICATION:
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
