"""``POST /predict`` and ``POST /rerank`` in text-embeddings-inference's shapes, for a served
classifier or cross-encoder (`model.heads`).

- ``/predict``: ``{"inputs": "text" | ["text a", "text b"] (a pair) | [["t"], ["q", "d"], ...]
  (a batch), "raw_scores": false, "truncate": ...}`` -> ``[{"score", "label"}, ...]`` sorted by
  score, or one such list per input of a batch;
- ``/rerank``: ``{"query", "texts", "raw_scores", "return_text", "truncate"}`` -> ``[{"index",
  "score", "text"?}, ...]`` sorted by score, for a one-output head.

Scores are the model's (softmax, sigmoid, or the raw value of a regressor: `model.scores`);
``raw_scores`` gives the logits. Inputs longer than ``-max_seq_len`` are always cut (``truncate``
is accepted and changes nothing). Errors are TEI's ``{"error", "error_type"}`` (`responses`).
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types (built per server).

from typing import Annotated, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model, field_validator

from ...model.scores import ranked
from ..pipeline.gateway import ServedModel
from ..pipeline.request import Outcome
from .fast_lane import Route
from .openai_api import Text, one_of
from .responses import TEI_ERROR_RESPONSES, client_of, error_response, json_response

__all__ = ["PredictRequest", "TeiRerankRequest", "mount_tei"]

Submit = Callable[..., Awaitable[Outcome]]  # (texts, is_tokenized, client, request=, task=, raw_scores=)

_SHAPES = "a string, a pair of strings [string, string] or a batch of mixed strings and pairs [[string], [string, " \
          "string], ...]"


class PredictRequest(BaseModel):
    """TEI's request; `predict_request_model` narrows it to a served model's limits."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [{"inputs": "I like you."}]})

    inputs: Text | list[Text] | list[list[Text]] = Field(description=f"Model input: {_SHAPES}")
    raw_scores: StrictBool = Field(False, description="The logits, without the model's softmax / sigmoid")
    truncate: StrictBool | None = Field(False, description="Accepted; inputs are always cut at -max_seq_len")

    @field_validator("inputs", mode="before")
    @classmethod
    def _shape(cls, value: object) -> object:
        problem = _inputs_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def _inputs_problem(value: object) -> str | None:
    if isinstance(value, str):
        return None
    if not isinstance(value, list) or not value:
        return f"must be {_SHAPES}"
    if all(isinstance(v, str) for v in value):
        return None if len(value) <= 2 else f"a pair holds two texts, not {len(value)}; a batch is [[text], ...]"
    for i, item in enumerate(value):
        if not isinstance(item, list) or not 1 <= len(item) <= 2 or not all(isinstance(t, str) for t in item):
            return f"inputs[{i}] must be [text] or a pair [text, text] in a batch, got {item!r:.80}"
    return None


def _inputs_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "inputs-text"
    if not isinstance(value, list):
        return None
    return "inputs-batch" if value and isinstance(value[0], list) else "inputs-pair"


def predict_request_model(max_texts: int) -> type[PredictRequest]:
    one = Annotated[list[Text], Field(min_length=1, max_length=2)]
    batch = Annotated[list[one], Field(min_length=1, max_length=max_texts)]
    inputs = one_of({"inputs-text": Text, "inputs-pair": one, "inputs-batch": batch}, _inputs_kind, _SHAPES)
    return create_model("PredictRequest", __base__=PredictRequest,
                        inputs=(inputs, Field(description=f"Model input: {_SHAPES}")))


class TeiRerankRequest(BaseModel):
    """TEI's rerank request; `tei_rerank_request_model` narrows it to a served model's limits."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"query": "What is Deep Learning?", "texts": ["Deep Learning is ...", "Cheese is ..."]}]})

    query: Text
    texts: list[Text] = Field(description="The documents to rank")
    raw_scores: StrictBool = Field(False, description="The logits, without the model's activation")
    return_text: StrictBool = Field(False, description="Echo each document in its answer")
    truncate: StrictBool | None = Field(False, description="Accepted; pairs are always cut at -max_seq_len")


def tei_rerank_request_model(max_texts: int) -> type[TeiRerankRequest]:
    return create_model("RerankRequest", __base__=TeiRerankRequest,
                        texts=(Annotated[list[Text], Field(min_length=1, max_length=max_texts)],
                               Field(description="The documents to rank")))


class Prediction(BaseModel):
    score: float
    label: str


class Rank(BaseModel):
    index: int
    score: float
    text: str | None = None


def predict_items(inputs: str | list) -> tuple[list[list[str]], bool]:
    """The inputs as explicit ``[text]`` / ``[A, B]`` items, and whether they were a batch."""
    if isinstance(inputs, str):
        return [[inputs]], False
    if all(isinstance(v, str) for v in inputs):
        return [list(inputs)], False
    return [list(item) for item in inputs], True


def predictions(scores: np.ndarray, labels: tuple[str, ...]) -> list[list[dict]]:
    """Per input, every label with its score, highest first."""
    return [[{"score": float(row[j]), "label": labels[j]} for j in ranked(row)] for row in scores]


def mount_tei(app: FastAPI, model: ServedModel, submit: Submit, guarded: list[Depends], max_texts: int,
              ) -> dict[str, Route]:
    """Add ``/predict`` and ``/rerank`` to ``app``; their `FastLane` routes."""
    PredictBody = predict_request_model(max_texts)  # noqa: N806
    RerankBody = tei_rerank_request_model(max_texts)  # noqa: N806

    # routes the served model cannot answer still answer (a 404 saying so), but stay out of the schema
    @app.post("/predict", response_model=list[Prediction] | list[list[Prediction]], responses=TEI_ERROR_RESPONSES,
              dependencies=guarded, tags=["text-embeddings-inference"], include_in_schema=model.task != "embed")
    async def predict(body: PredictBody, request: Request) -> Response:
        """A served classifier's (or cross-encoder's) scores for a text, a pair or a batch, as TEI."""
        items, batched = predict_items(body.inputs)
        outcome = await submit(items, False, client_of(request), request=request, task="predict",
                               raw_scores=body.raw_scores)
        if outcome.error is not None:
            return error_response(request.url.path, outcome.error)
        answers = predictions(outcome.result, model.labels)
        return json_response(answers if batched else answers[0])

    @app.post("/rerank", response_model=list[Rank], responses=TEI_ERROR_RESPONSES, dependencies=guarded,
              tags=["text-embeddings-inference"], include_in_schema=model.task == "rerank")
    async def rerank(body: RerankBody, request: Request) -> Response:
        """The texts by relevance to the query, most relevant first, as TEI (needs a cross-encoder)."""
        pairs = [[body.query, text] for text in body.texts]
        outcome = await submit(pairs, False, client_of(request), request=request, task="rerank",
                               raw_scores=body.raw_scores)
        if outcome.error is not None:
            return error_response(request.url.path, outcome.error)
        scores = outcome.result[:, 0]
        return json_response([{"index": i, "score": float(scores[i]), **({"text": body.texts[i]} if body.return_text
                                                                          else {})} for i in ranked(scores)])

    return {"/predict": (PredictBody, predict), "/rerank": (RerankBody, rerank)}
