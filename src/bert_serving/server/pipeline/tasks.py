"""What a request asks of the model, checked against what the server serves, and the scores a
head's requests get back. Numpy only.

A server serves one task, decided by its model (`model.heads`): ``embed`` (sentence vectors),
``classify`` (a classifier head: one score per label) or ``rerank`` (a one-output head: one
relevance score per pair). A request may name what it wants (`REQUESTS`); the original's
requests name nothing and get whatever the model answers, as 1.10.0's CLASSIFICATION did.
"""

from __future__ import annotations

from dataclasses import replace

from ...errors import UnsupportedTaskError
from ...model.scores import activate
from .gateway import ServedModel
from .request import Outcome, ReplyFn
from .stats import Stats

__all__ = ["REQUESTS", "check_task", "scored_reply"]

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
