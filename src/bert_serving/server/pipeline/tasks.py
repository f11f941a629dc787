"""What a request asks of the model, checked against what the server serves, and the scores a
head's requests get back. Numpy only.

A server serves one task, decided by its model (`model.heads`): ``embed`` (sentence vectors),
``classify`` (a classifier head: one score per label) or ``rerank`` (a one-output head: one
relevance score per pair). A request may name what it wants (`REQUESTS`); the original's
requests name nothing and get whatever the model answers, as 1.10.0's CLASSIFICATION did.

An embedder has one or more outputs (`bert_serving.outputs`): dense vectors; a SPLADE model's
sparse vectors alone; BGE-M3's dense, sparse and ColBERT vectors. An embedding request picks
among them (`wanted_outputs`); the original's request to a SPLADE model gets its sparse vectors
as dense ``[N, vocabulary]`` arrays (`densified_reply`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from ...errors import InvalidRequestError, UnsupportedTaskError
from ...model.scores import activate
from ...outputs import DENSE, KINDS, SPARSE, SparseVectors, kind_bits
from .gateway import ServedModel
from .request import Outcome, ReplyFn
from .stats import Stats

__all__ = ["REQUESTS", "check_task", "densified_reply", "describe_outputs", "scored_reply", "wanted_outputs"]

# what a request may ask for, and the served tasks that can answer it
REQUESTS = {"embed": ("embed",), "predict": ("classify", "rerank"), "rerank": ("rerank",)}

_SERVES = {"embed": "embeds (sentence vectors)", "classify": "classifies (a fine-tuned classifier head)",
           "rerank": "reranks (a one-output cross-encoder head)"}
_HOW = {
    "embed": "To serve the same model's backbone as an embedder, start bert-serving-start with an embedding "
             "-pooling_strategy (e.g. -pooling_strategy REDUCE_MEAN)",
    "predict": "For predictions, start bert-serving-start on a fine-tuned classifier: -model_dir with a Hugging Face "
               "*ForSequenceClassification folder or a CrossEncoder, or a run_classifier.py checkpoint with "
               "-tuned_model_dir DIR -ckpt_name model.ckpt-N -pooling_strategy CLASSIFICATION -num_labels N",
    "rerank": "For reranking, start bert-serving-start -model_dir with a cross-encoder (a sentence-transformers "
              "CrossEncoder, or a sequence classifier with one label)",
}


def check_task(model: ServedModel, wanted: str | None) -> None:
    """Raise `UnsupportedTaskError`, saying what this server serves and how to start one for
    ``wanted``, unless the served model can answer it (None: the original's request)."""
    if wanted is None:
        return
    if wanted not in REQUESTS:
        raise UnsupportedTaskError(f"unknown task {wanted!r}; one of {', '.join(REQUESTS)}")
    if model.task not in REQUESTS[wanted]:
        raise UnsupportedTaskError(f"this server {_SERVES.get(model.task, model.task)} with model {model.name}; "
                                   f"it cannot {wanted}. {_HOW[wanted]}", param="task")


def scored_reply(reply: ReplyFn, model: ServedModel, task: str | None, raw_scores: bool, stats: Stats) -> ReplyFn:
    """``reply`` for a request to a head: its logits turned into scores (unless ``raw_scores``)
    and counted as predictions or reranked pairs."""

    def answer(outcome: Outcome) -> None:
        if outcome.error is None and outcome.result is not None:
            stats.scored(task, len(outcome.result))
            if not raw_scores and model.activation is not None:
                outcome = replace(outcome, result=activate(outcome.result, model.activation))
        reply(outcome)

    return answer


_OUTPUT_WORDS = {DENSE: "dense vectors", SPARSE: "sparse vectors", "colbert": "ColBERT vectors"}
_OUTPUT_WHERE = {DENSE: "POST /embed, /v1/embeddings, /encode; BertClient.encode",
                 SPARSE: "POST /embed_sparse; BertClient.encode_sparse",
                 "colbert": "POST /embed_all; BertClient.encode_colbert"}


def describe_outputs(model: ServedModel) -> str:
    """What the model gives and where, for messages: ``sparse vectors (POST /embed_sparse; ...)``."""
    return "; ".join(f"{_OUTPUT_WORDS[k]} ({_OUTPUT_WHERE[k]})" for k in model.outputs)


def wanted_outputs(model: ServedModel, task: str | None, outputs: Sequence[str] | None) -> tuple[int, bool]:
    """What a request gets (`bert_serving.outputs` bits), and whether its sparse vectors are to be
    answered as dense ones (the original's request to a SPLADE model). `UnsupportedTaskError`
    naming what the model has, when it has not what is asked for; `InvalidRequestError` for an
    unknown output."""
    named = outputs is not None
    if outputs is None:
        if DENSE in model.outputs or model.task != "embed":  # the dense vectors (or a head's scores)
            return 1, False
        if task is None:  # the original's request to a SPLADE model
            return kind_bits([SPARSE]), True
        outputs = (DENSE,)  # refused below, naming what it has
    if not outputs or not isinstance(outputs, (list, tuple)) or not all(isinstance(o, str) for o in outputs):
        raise InvalidRequestError(f"outputs must be a non-empty list of {', '.join(KINDS)}", param="outputs")
    unknown = [name for name in outputs if name not in KINDS]
    if unknown:
        raise InvalidRequestError(f"unknown output {unknown[0]!r:.40}; one of {', '.join(KINDS)}", param="outputs")
    if task not in (None, "embed"):
        raise InvalidRequestError(f"outputs are for embeddings; the {task} task takes none", param="outputs")
    missing = [name for name in outputs if name not in model.outputs]
    if missing:
        raise UnsupportedTaskError(f"model {model.name} has no {_OUTPUT_WORDS[missing[0]]}: it gives "
                                   f"{describe_outputs(model)}", param="outputs" if named else None)
    return kind_bits(outputs), False


def densified_reply(reply: ReplyFn, dim: int) -> ReplyFn:
    """``reply`` for the original's request to a SPLADE model: its sparse vectors as a dense
    ``[N, dim]`` float32 array."""

    def answer(outcome: Outcome) -> None:
        if outcome.error is None and outcome.sparse is not None:
            outcome = replace(outcome, result=SparseVectors.of(outcome.sparse, dim).to_dense(), sparse=None)
        reply(outcome)

    return answer
