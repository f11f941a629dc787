"""``POST /v1/rerank`` and ``POST /v2/rerank`` in the shape Cohere's and Jina's clients speak,
so the ``cohere`` SDK (its v1 ``Client`` and v2 ``ClientV2``), LangChain's and LlamaIndex's
Cohere/Jina rerankers work against a served cross-encoder unchanged.

- request: ``query``, ``documents`` (strings, or objects with a ``text``), ``top_n``,
  ``return_documents`` (default false), ``model`` (accepted; the served model answers),
  ``raw_scores`` (ours: the logits), and Cohere's other fields, accepted and ignored;
- response: ``{"id", "results": [{"index", "relevance_score", "document": {"text"}?}],
  "model", "usage": {"total_tokens"}}``, most relevant first.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types (built per server).

import uuid
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, create_model

from ...errors import InvalidRequestError
from ...model.scores import ranked
from ..pipeline.gateway import ServedModel
from .fast_lane import Route
from .openai_api import Text, integer, one_of
from .responses import RERANK_ERROR_RESPONSES, RERANK_PATHS, client_of, error_response, json_response
from .tei_api import Submit

__all__ = ["RerankRequest", "RerankResponse", "mount_rerank"]


class Document(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: Text


class RerankRequest(BaseModel):
    """The request; `rerank_request_model` narrows it to a served model's limits."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [
        {"query": "What is Deep Learning?", "documents": ["Deep Learning is ...", "Cheese is ..."], "top_n": 1}]})

    query: Text
    documents: list[Text | Document] = Field(description="Texts, or objects with a text, to rank")
    top_n: integer(ge=1) | None = Field(None, description="Return only the most relevant N; default: all")
    return_documents: StrictBool = Field(False, description="Include each document's text")
    model: str | None = Field(None, description="Accepted for compatibility; the served model answers")
    raw_scores: StrictBool = Field(False, description="The logits, without the model's activation")
    rank_fields: list[str] | None = Field(None, description="Only [\"text\"] is supported")


def _document_kind(value: object) -> str | None:
    return "document-text" if isinstance(value, str) else "document-object" if isinstance(value, dict) else None


def rerank_request_model(max_texts: int) -> type[RerankRequest]:
    document = one_of({"document-text": Text, "document-object": Document}, _document_kind,
                      'a string or an object {"text": string}')
    return create_model("CohereRerankRequest", __base__=RerankRequest,
                        documents=(Annotated[list[document], Field(min_length=1, max_length=max_texts)],
                                   Field(description="Texts, or objects with a text, to rank")))


class RerankedDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankedDocument | None = None


class Usage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    usage: Usage


def mount_rerank(app: FastAPI, model: ServedModel, submit: Submit, guarded: list[Depends], max_texts: int,
                 ) -> dict[str, Route]:
    """Add ``/v1/rerank`` and ``/v2/rerank`` to ``app``; their `FastLane` routes."""
    Body = rerank_request_model(max_texts)  # noqa: N806
    fast: dict[str, Route] = {}

    for path in RERANK_PATHS:
        @app.post(path, response_model=RerankResponse, responses=RERANK_ERROR_RESPONSES, dependencies=guarded,
                  tags=["Cohere / Jina"], name=f"rerank{path.replace('/', '_')}",
                  include_in_schema=model.task == "rerank")
        async def rerank(body: Body, request: Request) -> Response:
            """Documents by relevance to the query, most relevant first (needs a cross-encoder)."""
            if body.rank_fields not in (None, ["text"]):
                raise InvalidRequestError("rank_fields: only [\"text\"] is supported; put what to rank in each "
                                          "document's text", param="rank_fields")
            texts = [d if isinstance(d, str) else d.text for d in body.documents]
            outcome = await submit([[body.query, t] for t in texts], False, client_of(request), request=request,
                                   task="rerank", raw_scores=body.raw_scores)
            if outcome.error is not None:
                return error_response(request.url.path, outcome.error)
            scores = outcome.result[:, 0]
            results = [{"index": i, "relevance_score": float(scores[i]),
                        **({"document": {"text": texts[i]}} if body.return_documents else {})}
                       for i in ranked(scores, body.top_n)]
            return json_response({"id": str(uuid.uuid4()), "results": results, "model": model.name,
                                  "usage": {"total_tokens": outcome.num_tokens}})

        fast[path] = (Body, rerank)
    return fast
